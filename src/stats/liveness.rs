//! Liveness: whether every part of the node that should make progress does.
//!
//! The systemd watchdog and the PLC heartbeat both mean "this node is alive", and both follow
//! this one rule. An idle line is alive: no trigger, a stopped line, a camera that is down or a
//! frozen stream leave nothing to do, and they are faults reported on MQTT and the stack light,
//! not hangs. What is not alive is a piece of work that started and does not end: an inference
//! call that has not returned within its stall time. Those pieces mark themselves busy here
//! while they work; a watcher asks [`Liveness::stuck`].

use std::sync::Arc;
use std::time::Duration;

pub use crate::util::busy::Busy;

/// Every watched piece of the node, with how long each may stay busy.
#[derive(Debug, Default)]
pub struct Liveness {
    watched: std::sync::Mutex<Vec<(String, Arc<Busy>, Duration)>>,
}

impl Liveness {
    /// Watch `busy` under `name`; it is stuck once busy for longer than `stall`.
    pub fn watch(&self, name: impl Into<String>, stall: Duration) -> Arc<Busy> {
        let busy = Arc::new(Busy::default());
        self.watched.lock().unwrap_or_else(|e| e.into_inner()).push((name.into(), busy.clone(), stall));
        busy
    }

    /// Why the node is not alive, if it is not: the first stuck piece and for how long.
    pub fn stuck(&self) -> Option<String> {
        let watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        watched.iter().find_map(|(name, busy, stall)| {
            let d = busy.busy_for().filter(|d| d > stall)?;
            Some(format!("{name} has been busy for {:.1} s (stall time {:.1} s)", d.as_secs_f64(), stall.as_secs_f64()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_is_alive_and_long_work_is_stuck() {
        let l = Liveness::default();
        let worker = l.watch("inference worker `m`", Duration::from_millis(30));
        assert!(l.stuck().is_none(), "idle is alive");
        worker.begin();
        assert!(l.stuck().is_none(), "work within its stall time is alive");
        std::thread::sleep(Duration::from_millis(60));
        let why = l.stuck().expect("stuck");
        assert!(why.starts_with("inference worker `m` has been busy for"), "{why}");
        worker.end();
        assert!(l.stuck().is_none());
    }
}
