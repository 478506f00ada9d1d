//! The reject gate: pulses timed to each part's arrival at the gate.
//!
//! One task owns one gate output. Requests carry the time the part reaches
//! the gate (capture time plus the configured delay) and are kept in time
//! order, so many parts can be between camera and gate at once. Pulses that
//! overlap merge: the output stays on until the last one ends, instead of
//! switching off under a part that must be thrown out.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, Instant};

use crate::modbus::OutputHandle;

pub struct RejectRequest {
    pub part_id: u64,
    /// When the part reaches the gate.
    pub fire_at: Instant,
    pub pulse: Duration,
    pub reply: oneshot::Sender<RejectOutcome>,
}

#[derive(Debug, Clone)]
pub enum RejectOutcome {
    /// The device acknowledged the "on" write at `acked_at`; `late` is how far
    /// after the scheduled time the write was sent (zero when on time).
    Fired { acked_at: Instant, late: Duration },
    /// The "on" write failed: the part may have passed the gate.
    Failed(String),
}

/// A handle to send parts to the gate task.
#[derive(Clone)]
pub struct Gate {
    tx: mpsc::Sender<RejectRequest>,
}

impl Gate {
    /// Start the task that owns `output`. It ends when every `Gate` is dropped
    /// and every pending pulse has been written and switched off.
    pub fn start(output: OutputHandle) -> (Gate, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(1024);
        let task = tokio::spawn(run(output, rx));
        (Gate { tx }, task)
    }

    /// Schedule a pulse; the receiver yields the outcome once the "on" write is answered.
    pub async fn schedule(&self, part_id: u64, fire_at: Instant, pulse: Duration) -> oneshot::Receiver<RejectOutcome> {
        let (reply, rx) = oneshot::channel();
        let req = RejectRequest { part_id, fire_at, pulse, reply };
        if let Err(mpsc::error::SendError(req)) = self.tx.send(req).await {
            let _ = req.reply.send(RejectOutcome::Failed("reject gate task has stopped".into()));
        }
        rx
    }
}

const OFF_RETRY_MIN: Duration = Duration::from_millis(50);

async fn run(output: OutputHandle, mut rx: mpsc::Receiver<RejectRequest>) {
    // Keyed by (time, arrival order) so equal times keep their order.
    let mut pending: BTreeMap<(Instant, u64), RejectRequest> = BTreeMap::new();
    let mut order = 0u64;
    let mut off_at: Option<Instant> = None;
    let mut open = true;
    let mut off_retry = OFF_RETRY_MIN;
    loop {
        let next_fire = pending.keys().next().map(|k| k.0);
        let next = match (next_fire, off_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if !open && next.is_none() {
            break;
        }
        tokio::select! {
            biased;
            req = rx.recv(), if open => match req {
                Some(req) => {
                    order += 1;
                    pending.insert((req.fire_at, order), req);
                }
                None => open = false,
            },
            _ = sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                let now = Instant::now();
                // Fire everything due, then decide about "off".
                while let Some(entry) = pending.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    let req = entry.remove();
                    let late = Instant::now().saturating_duration_since(req.fire_at);
                    let outcome = match output.set(true).await {
                        Ok(()) => RejectOutcome::Fired { acked_at: Instant::now(), late },
                        Err(e) => {
                            tracing::error!(output = %output.name, part = req.part_id, error = %e, "reject could not be written: the part may have passed the gate");
                            RejectOutcome::Failed(e.to_string())
                        }
                    };
                    let end = req.fire_at.max(now) + req.pulse;
                    off_at = Some(off_at.map_or(end, |o| o.max(end)));
                    let _ = req.reply.send(outcome);
                }
                if let Some(t) = off_at {
                    if t <= Instant::now() {
                        off_at = None;
                        match output.set(false).await {
                            Ok(()) => off_retry = OFF_RETRY_MIN,
                            // Once no more parts can come, the safe-state write at
                            // stop takes over; until then keep trying, with backoff
                            // (the link itself also backs off).
                            Err(e) if open => {
                                if off_retry == OFF_RETRY_MIN {
                                    tracing::error!(output = %output.name, error = %e, "reject gate could not be switched off; retrying");
                                }
                                off_at = Some(Instant::now() + off_retry);
                                off_retry = (off_retry * 2).min(Duration::from_secs(1));
                            }
                            Err(_) => {}
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Config};
    use crate::modbus::outputs::testing::Recorder;
    use crate::modbus::Outputs;

    fn config() -> Config {
        let yaml = r#"
node: { group_id: g, node_id: n }
modbus:
  devices: { plc: { tcp: "127.0.0.1:502" } }
  outputs: { gate: { device: plc, area: coil, address: 10, safe_state: off } }
cameras: {}
models: {}
tasks: {}
"#;
        // Only the Modbus part matters here; build the struct without file checks.
        let root = config::yaml::parse(yaml).unwrap();
        config::yaml::from_node(&root).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn pulses_fire_at_their_time_and_overlaps_merge() {
        let rec = Recorder::default();
        let rec2 = rec.clone();
        let outputs = Outputs::start_with(&config(), move |_, _| rec2.clone());
        let (gate, task) = Gate::start(outputs.get("gate").unwrap().clone());
        let t0 = Instant::now();
        let a = gate.schedule(1, t0 + Duration::from_millis(300), Duration::from_millis(80)).await;
        // Scheduled out of order: the gate must still fire part 2 first.
        let b = gate.schedule(2, t0 + Duration::from_millis(200), Duration::from_millis(80)).await;
        let c = gate.schedule(3, t0 + Duration::from_millis(340), Duration::from_millis(80)).await;
        for rx in [b, a, c] {
            match rx.await.unwrap() {
                RejectOutcome::Fired { late, .. } => assert_eq!(late, Duration::ZERO),
                RejectOutcome::Failed(e) => panic!("{e}"),
            }
        }
        drop(gate);
        task.await.unwrap();
        let w: Vec<(u64, bool)> =
            rec.writes.lock().unwrap().iter().map(|(t, _, on)| ((*t - t0).as_millis() as u64, *on)).collect();
        // on at 200, off at 280; on at 300 and 340 merge, off at 420.
        assert_eq!(w, vec![(200, true), (280, false), (300, true), (340, true), (420, false)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_write_is_reported_not_hidden() {
        let rec = Recorder::default();
        rec.fail.store(true, std::sync::atomic::Ordering::Relaxed);
        let rec2 = rec.clone();
        let outputs = Outputs::start_with(&config(), move |_, _| rec2.clone());
        let (gate, _task) = Gate::start(outputs.get("gate").unwrap().clone());
        let rx = gate.schedule(9, Instant::now() + Duration::from_millis(10), Duration::from_millis(5)).await;
        assert!(matches!(rx.await.unwrap(), RejectOutcome::Failed(_)));
    }
}
