//! Stopping in order: cameras and triggers stop announcing parts, workers
//! finish the frames already queued, controllers give every captured part
//! its verdict and wait for the rejects in flight, gates still running are
//! aborted, outputs go to their safe state (written and read back), the last
//! results reach telemetry, final stats and `offline` are published.
//!
//! One deadline for the whole stop, [`STOP_DEADLINE`], inside the unit's
//! `TimeoutStopSec=35s`: each step gets its own cap and never more than what
//! is left, so a stuck step cannot push the safe-state write past systemd's
//! SIGKILL.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::{timeout_at, Instant};

use rumqttc::QoS;
use serde_json::Value;

use super::Running;
use crate::service::notify;
use crate::telemetry::json::stats_doc;

/// The whole stop, from the signal to the last MQTT message; systemd's `TimeoutStopSec=35s`
/// leaves a margin.
pub const STOP_DEADLINE: Duration = Duration::from_secs(22);

/// Caps of the steps (each also bounded by what is left of the deadline).
const PARTS_GRACE: Duration = Duration::from_secs(10);
const GATES_GRACE: Duration = Duration::from_secs(2);
const SAFE_STATE_TIME: Duration = Duration::from_secs(4);
const RESULTS_TIME: Duration = Duration::from_secs(2);
const THREADS_TIME: Duration = Duration::from_secs(1);
/// Evidence capture's writer finishing its queue (at most `queue` records a task).
const CAPTURE_TIME: Duration = Duration::from_secs(3);

/// How the node stopped.
pub struct Stopped {
    /// The final stats document (also published).
    pub stats: Value,
    /// Every output was written to its safe state and read back holding it. When false the
    /// process should exit with a failure, so that systemd restarts it (and its start drives
    /// the outputs safe again) and the journal says why.
    pub outputs_safe: bool,
}

impl Running {
    /// Run until `shutdown` resolves or every source has ended, then stop in order.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Stopped {
        let controllers = std::mem::take(&mut self.controllers);
        let controller_aborts: Vec<_> = controllers.iter().map(|c| c.abort_handle()).collect();
        let all_done = futures_util::future::join_all(controllers);
        tokio::pin!(all_done);
        tokio::pin!(shutdown);
        let finished_alone = tokio::select! {
            _ = &mut shutdown => false,
            _ = &mut all_done => true,
        };
        let deadline = Instant::now() + STOP_DEADLINE;
        notify::notify("STOPPING=1\nSTATUS=stopping");
        self.stop.store(true, Ordering::Relaxed);
        for t in self.triggers.drain(..) {
            t.abort();
        }
        if !finished_alone {
            // Parts in flight finish: the controllers wait for their rejects.
            // The grace period bounds a stuck inference.
            if timeout_at(step(deadline, PARTS_GRACE), &mut all_done).await.is_err() {
                tracing::error!("parts still in flight after {} s; stopping anyway", PARTS_GRACE.as_secs());
                for c in &controller_aborts {
                    c.abort();
                }
            }
        }
        self.finish(deadline).await
    }

    async fn finish(mut self, deadline: Instant) -> Stopped {
        for h in self.background.drain(..) {
            h.abort();
        }
        // Gates end once their controllers (the only senders) are gone. One that has not ended
        // by now is aborted, and waited for, before the safe-state write: a gate left running
        // could switch its output on after it.
        let gates_until = step(deadline, GATES_GRACE);
        for g in self.gates.drain(..) {
            let abort = g.abort_handle();
            if timeout_at(gates_until, g).await.is_err() {
                tracing::warn!("a reject gate or result block had not finished; aborted before the safe-state write");
                abort.abort();
            }
        }
        tokio::task::yield_now().await; // let aborted tasks be dropped
        let failures = self.outputs.confirm_all_safe(step(deadline, SAFE_STATE_TIME)).await;
        let outputs_safe = failures.is_empty();
        if outputs_safe {
            tracing::info!("all outputs in their safe state (written and read back)");
        } else {
            for (name, why) in &failures {
                tracing::error!(output = %name, %why, "output NOT confirmed in its safe state at stop");
            }
        }
        // Every controller has ended: nothing more is offered to evidence capture. Its writer
        // writes what is queued (at most `queue` records a task) and stops.
        // A hung disk must not hold the stop: the records still queued are then lost.
        if let Some(capture) = self.capture.take() {
            let stopped = tokio::task::spawn_blocking(move || capture.stop());
            if timeout_at(step(deadline, CAPTURE_TIME), stopped).await.is_err() {
                tracing::warn!("evidence capture's writer did not finish its queue in time; stopping anyway");
            }
        }
        // Every controller has ended, so the results channel closes once the forwarder has
        // handed the last parts to telemetry: wait for that before MQTT stops.
        if let Some(results) = self.results.take() {
            if timeout_at(step(deadline, RESULTS_TIME), results).await.is_err() {
                tracing::warn!("results still being handed to telemetry; stopping anyway");
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
        if timeout_at(step(deadline, THREADS_TIME), joined).await.is_err() {
            tracing::warn!("a camera or inference thread did not finish in time; leaving it behind");
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
        if timeout_at(deadline, async { tokio::join!(json, sparkplug) }).await.is_err() {
            tracing::warn!("MQTT sessions had not stopped at the stop deadline; leaving them");
        }
        // A stop in order with every output confirmed safe: the next start needs no purge.
        if outputs_safe {
            if let Some(m) = &self.marker {
                m.clear();
            }
        }
        Stopped { stats: final_stats, outputs_safe }
    }
}

/// The end of a step: `cap` from now, but never past the stop's `deadline`.
fn step(deadline: Instant, cap: Duration) -> Instant {
    (Instant::now() + cap).min(deadline)
}
