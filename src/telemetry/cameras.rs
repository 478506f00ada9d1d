//! Camera status for dashboards: `<base>/cameras/<camera>/status`, retained,
//! published within 100 ms of a change (and at start), so a frozen or lost
//! camera shows as such instead of a stale "online".

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rumqttc::QoS;
use serde_json::json;

use super::mqtt::Mqtt;
use crate::stats::CameraStats;

/// Publish one camera's status on every change until aborted.
pub async fn publish(camera: String, stats: Arc<CameraStats>, mqtt: Mqtt) {
    let topic = mqtt.topics.camera_status(&camera);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut shown = None;
    loop {
        tick.tick().await;
        let status = stats.status();
        if shown == Some(status) {
            continue;
        }
        let doc = json!({
            "camera": camera,
            "status": status.as_str(),
            "frames_in": stats.frames_in.load(Ordering::Relaxed),
            "reconnects": stats.reconnects.load(Ordering::Relaxed),
            "ts": crate::util::time::rfc3339(SystemTime::now()),
        });
        if mqtt.publish(topic.clone(), serde_json::to_vec(&doc).unwrap_or_default(), QoS::AtLeastOnce, true) {
            shown = Some(status);
        }
    }
}
