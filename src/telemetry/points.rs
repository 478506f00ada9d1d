//! Point values to MQTT: on change (beyond the point's deadband), on a
//! change of quality, and at least every `publish_every`.

use std::time::Duration;

use rumqttc::QoS;
use tokio::time::{sleep_until, Instant};

use super::mqtt::Mqtt;
use crate::part::sample::{self, Point, Quality, Value};

/// Publish one point until its poller stops.
pub async fn publish(point: Point, mqtt: Mqtt) {
    let mut rx = point.rx.clone();
    let poll = point.config.poll.get();
    let every = point.config.publish_every.get();
    let mut last_value: Option<Value> = None;
    let mut last_quality = Quality::Unknown;
    let mut next_periodic = Instant::now() + every;
    loop {
        let due = {
            let s = rx.borrow_and_update();
            let q = s.quality_at(Instant::now(), poll);
            let moved = match &s.value {
                Some(v) => sample::changed(last_value.as_ref(), v, point.config.deadband),
                None => false,
            };
            let due = moved || q != last_quality || Instant::now() >= next_periodic;
            if due {
                if moved {
                    last_value = s.value.clone();
                }
                last_quality = q;
            }
            due
        };
        if due {
            next_periodic = Instant::now() + every;
            let payload = serde_json::to_vec(&point.to_json()).unwrap_or_default();
            mqtt.publish(mqtt.topics.point(&point.name), payload, QoS::AtMostOnce, false);
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            // Also wakes to notice a stale point, which produces no change.
            _ = sleep_until(next_periodic.min(Instant::now() + poll * 4 + Duration::from_millis(1))) => {}
        }
    }
}
