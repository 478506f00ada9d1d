//! Stopping in order: cameras and triggers stop announcing parts, workers
//! finish the frames already queued, controllers give every captured part
//! its verdict and wait for the rejects in flight, the last results reach
//! telemetry, outputs go to their safe state, final stats and `offline` are
//! published.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::QoS;
use serde_json::Value;

use super::Running;
use crate::service::notify;
use crate::telemetry::json::stats_doc;

impl Running {
    /// Run until `shutdown` resolves or every source has ended, then stop in order.
    /// Returns the final stats document.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Value {
        let controllers = std::mem::take(&mut self.controllers);
        let all_done = futures_util::future::join_all(controllers);
        tokio::pin!(all_done);
        tokio::pin!(shutdown);
        let finished_alone = tokio::select! {
            _ = &mut shutdown => false,
            _ = &mut all_done => true,
        };
        notify::notify("STOPPING=1\nSTATUS=stopping");
        self.stop.store(true, Ordering::Relaxed);
        for t in self.triggers.drain(..) {
            t.abort();
        }
        if !finished_alone {
            // Parts in flight finish: the controllers wait for their rejects.
            // The grace period bounds a stuck inference.
            if tokio::time::timeout(Duration::from_secs(10), &mut all_done).await.is_err() {
                tracing::error!("parts still in flight after 10 s; stopping anyway");
            }
        }
        self.finish().await
    }

    async fn finish(mut self) -> Value {
        for h in self.background.drain(..) {
            h.abort();
        }
        // Gates end once their controllers (the only senders) are gone.
        for g in self.gates.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), g).await;
        }
        let failures = self.outputs.all_to_safe_state().await;
        if failures.is_empty() {
            tracing::info!("all outputs in their safe state");
        }
        // Every controller has ended, so the results channel closes once the forwarder has
        // handed the last parts to telemetry: wait for that before MQTT stops.
        if let Some(results) = self.results.take() {
            if tokio::time::timeout(Duration::from_secs(5), results).await.is_err() {
                tracing::warn!("results still being handed to telemetry after 5 s; stopping anyway");
            }
        }
        let joins: Vec<_> = self.cameras.drain(..).chain(self.workers.drain(..)).collect();
        let joined = tokio::task::spawn_blocking(move || {
            for j in joins {
                let _ = j.join();
            }
        });
        // A camera stuck inside a driver or network read cannot be
        // interrupted; do not let it hold the stop (the process exit ends it).
        if tokio::time::timeout(Duration::from_secs(2), joined).await.is_err() {
            tracing::warn!("a camera or inference thread did not finish within 2 s; leaving it behind");
        }
        let final_stats = stats_doc(&self.stats, true);
        let (json_session, sparkplug_session) = (self.mqtt.take(), self.sparkplug.take());
        let json = async {
            if let Some((m, task)) = json_session {
                let payload = serde_json::to_vec(&final_stats).unwrap_or_default();
                m.publish(m.topics.stats(), payload, QoS::AtLeastOnce, false);
                m.stop().await;
                drop(m);
                let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
            }
        };
        let sparkplug = async {
            if let Some((sp, task)) = sparkplug_session {
                sp.stop().await;
                drop(sp);
                let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
            }
        };
        tokio::join!(json, sparkplug);
        final_stats
    }
}
