//! The node's periodic duties: the stats message, the systemd watchdog, and
//! handing every finished part to telemetry and in-process observers.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::QoS;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::part::PartResult;
use crate::service::notify;
use crate::stats::{Liveness, NodeStats, TaskStats};
use crate::telemetry::json::stats_doc;
use crate::telemetry::mqtt::Mqtt;
use crate::telemetry::Telemetry;

/// Hand every finished part to telemetry (JSON, Sparkplug, their disk queues) and to the
/// in-process observer, until every controller has ended. A dialect whose buffer is full
/// counts the part in its task's `telemetry_dropped`.
pub async fn forward_results(
    mut results: mpsc::Receiver<PartResult>,
    telemetry: Telemetry,
    observer: Option<mpsc::UnboundedSender<Value>>,
    tasks: BTreeMap<String, Arc<TaskStats>>,
    shadow: Arc<super::shadow::Matcher>,
) {
    while let Some(result) = results.recv().await {
        shadow.production(&result);
        let (doc, ok) = telemetry.result(&result);
        if !ok {
            if let Some(s) = tasks.get(&*result.task) {
                s.telemetry_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(obs) = &observer {
            let _ = obs.send(doc);
        }
    }
}

pub async fn publish_stats(mqtt: Mqtt, stats: Arc<NodeStats>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let payload = serde_json::to_vec(&stats_doc(&stats, false)).unwrap_or_default();
        if !mqtt.publish(mqtt.topics.stats(), payload, QoS::AtLeastOnce, false) {
            tracing::warn!("stats message dropped: MQTT buffer full");
        }
    }
}

/// WATCHDOG=1 while the node is alive by [`Liveness`]'s rule: an idle line (no trigger, line
/// stopped, camera down: faults, not hangs) keeps being fed, so systemd does not restart a
/// healthy node every few seconds; an inference call that does not return stops the feeding
/// and systemd restarts the service (whose start drives outputs safe). That this task runs at
/// all is the proof that the async runtime (controllers, gates, telemetry) is not stuck.
pub async fn feed_watchdog(liveness: Arc<Liveness>, interval: Duration) {
    let mut tick = tokio::time::interval(interval / 2);
    let mut starved = false;
    loop {
        tick.tick().await;
        match liveness.stuck() {
            None => {
                if starved {
                    tracing::info!("watchdog fed again: nothing is stuck any more");
                    starved = false;
                }
                notify::notify("WATCHDOG=1");
            }
            Some(why) => {
                if !starved {
                    tracing::error!(%why, "not feeding the systemd watchdog: the node is hung; systemd will restart it");
                    starved = true;
                }
            }
        }
    }
}
