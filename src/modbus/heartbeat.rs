//! The heartbeat: an incrementing counter written to one PLC register at a
//! fixed period.
//!
//! A counter, never a toggling bit: a bit that happens to be high when
//! linesight dies stays high, and the PLC cannot tell. The PLC should fault
//! the line when the counter has not changed for about three periods. The
//! counter runs 1..=65535 and wraps to 1, so 0 always means "never written
//! since the PLC started".

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{interval, MissedTickBehavior};

use super::RegisterHandle;
use crate::stats::Liveness;

/// The next counter value after `n`.
pub fn next(n: u16) -> u16 {
    if n == u16::MAX {
        1
    } else {
        n + 1
    }
}

/// Write the counter every `period` while the node is alive by `alive`'s rule (the same as the
/// systemd watchdog's: an idle line is alive, a hung inference is not), until the task is
/// aborted (at stop: the counter then stops, which is the PLC's signal).
pub async fn run(register: RegisterHandle, period: Duration, beats: Arc<AtomicU64>, alive: Arc<Liveness>) {
    let mut tick = interval(period);
    // After a stall, do not burst: the PLC only needs to see the value move.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut counter: u16 = 0;
    let mut failing = false;
    loop {
        tick.tick().await;
        if let Some(why) = alive.stuck() {
            // The PLC sees the counter stop, as systemd sees the watchdog stop.
            if !failing {
                tracing::error!(device = %register.device.name, %why, "heartbeat held: the node is hung");
                failing = true;
            }
            continue;
        }
        counter = next(counter);
        match register.write(0, vec![counter]).await {
            Ok(()) => {
                beats.fetch_add(1, Ordering::Relaxed);
                if failing {
                    tracing::info!(device = %register.device.name, "heartbeat written again");
                    failing = false;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::error!(device = %register.device.name, error = %e, "heartbeat could not be written; the PLC will see it stop");
                    failing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::outputs::testing::recorded;

    #[test]
    fn counter_wraps_past_zero() {
        assert_eq!(next(0), 1);
        assert_eq!(next(41), 42);
        assert_eq!(next(u16::MAX), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn counter_increments_every_period() {
        let (rec, outputs) = recorded(
            "  devices: { plc: { tcp: \"127.0.0.1:502\" } }\n  heartbeat: { device: plc, address: 100, period: 500ms }",
        );
        let beats = Arc::new(AtomicU64::new(0));
        let t0 = tokio::time::Instant::now();
        let alive = Arc::new(Liveness::default());
        let task =
            tokio::spawn(run(outputs.heartbeat().unwrap().clone(), Duration::from_millis(500), beats.clone(), alive));
        tokio::time::sleep(Duration::from_millis(1_600)).await;
        task.abort();
        let w: Vec<(u128, u16, u16)> =
            rec.writes.lock().unwrap().iter().map(|(t, a, v)| ((*t - t0).as_millis(), *a, v[0])).collect();
        assert_eq!(w, vec![(0, 100, 1), (500, 100, 2), (1000, 100, 3), (1500, 100, 4)]);
        assert_eq!(beats.load(Ordering::Relaxed), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_node_holds_the_counter() {
        let (rec, outputs) = recorded(
            "  devices: { plc: { tcp: \"127.0.0.1:502\" } }\n  heartbeat: { device: plc, address: 100, period: 500ms }",
        );
        let alive = Arc::new(Liveness::default());
        let worker = alive.watch("inference worker", Duration::ZERO);
        worker.begin();
        std::thread::sleep(Duration::from_millis(3)); // the liveness clock is the real one
        let task = tokio::spawn(run(
            outputs.heartbeat().unwrap().clone(),
            Duration::from_millis(500),
            Arc::new(AtomicU64::new(0)),
            alive,
        ));
        tokio::time::sleep(Duration::from_millis(1_600)).await;
        assert!(rec.writes.lock().unwrap().is_empty(), "no beat while the worker hangs");
        worker.end();
        tokio::time::sleep(Duration::from_millis(600)).await;
        task.abort();
        assert!(!rec.writes.lock().unwrap().is_empty(), "beats resume when it returns");
    }
}
