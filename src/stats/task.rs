//! One task's counters and latency windows, written by the pipeline and
//! read by the stats publisher. Counters are atomics; each latency window sits behind its
//! own short-held mutex.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::part::Verdict;
use crate::util::percentiles::{percentiles, Percentiles};

/// The last `WINDOW` samples of one latency, for p50/p99.
#[derive(Debug)]
pub struct Window {
    samples: Mutex<VecDeque<f64>>,
}

/// Percentiles are over the most recent samples: recent enough to show a
/// problem now, long enough (minutes at line rate) for a stable p99.
pub const WINDOW: usize = 4096;

impl Default for Window {
    fn default() -> Self {
        Window { samples: Mutex::new(VecDeque::with_capacity(WINDOW)) }
    }
}

impl Window {
    pub fn record(&self, ms: f64) {
        let mut s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if s.len() == WINDOW {
            s.pop_front();
        }
        s.push_back(ms);
    }

    pub fn percentiles(&self) -> Percentiles {
        let mut v: Vec<f64> = self.samples.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect();
        percentiles(&mut v)
    }
}

/// One task's figures.
#[derive(Debug, Default)]
pub struct TaskStats {
    pub processed: AtomicU64,
    pub ok: AtomicU64,
    pub ng: AtomicU64,
    pub error: AtomicU64,
    pub uncertain: AtomicU64,
    /// UNCERTAIN parts passed and marked for review (`uncertain.action: flag`).
    pub flagged: AtomicU64,
    /// Verdicts that came after their part had been given ERROR.
    pub late_verdicts: AtomicU64,
    pub rejects_fired: AtomicU64,
    /// Parts that reached the gate before their verdict (the fail-safe action was taken).
    pub deadline_misses: AtomicU64,
    /// Reject pulses the gate's confirmation sensor did not confirm in time (an alarm).
    pub confirm_missing: AtomicU64,
    /// Parts announced by the trigger.
    pub triggers: AtomicU64,
    /// Parts whose reject could not be written.
    pub rejects_failed: AtomicU64,
    /// Triggered parts dropped from the list waiting for a frame (full while the camera was
    /// away); each still got ERROR from its controller and was rejected.
    pub waiting_dropped: AtomicU64,
    /// Gate commands refused because the gate's queue was full (a stuck gate task).
    pub gate_overflows: AtomicU64,
    /// Times the gate was held in reject after an unclean stop (see `app`'s purge).
    pub purges: AtomicU64,
    /// Results that could not be handed to MQTT (buffer full).
    pub telemetry_dropped: AtomicU64,
    pub inference_ms: Window,
    pub capture_to_decision_ms: Window,
    pub capture_to_reject_ack_ms: Window,
}

impl TaskStats {
    pub fn count(&self, v: Verdict) {
        let c = match v {
            Verdict::Ok => &self.ok,
            Verdict::Ng => &self.ng,
            Verdict::Uncertain => &self.uncertain,
            Verdict::Error => &self.error,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_keeps_the_latest_samples() {
        let w = Window::default();
        for i in 0..(WINDOW + 10) {
            w.record(i as f64);
        }
        let p = w.percentiles();
        assert_eq!(p.n, WINDOW);
        assert_eq!(p.max, (WINDOW + 9) as f64);
    }
}
