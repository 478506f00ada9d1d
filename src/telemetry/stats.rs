//! Counters and latency windows, written by the pipeline and read by the
//! stats publisher. Counters are atomics; each latency window sits behind its
//! own short-held mutex.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use crate::decision::Verdict;

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

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub n: usize,
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

/// Nearest-rank percentiles of `v` (sorted in place).
pub fn percentiles(v: &mut [f64]) -> Percentiles {
    if v.is_empty() {
        return Percentiles::default();
    }
    v.sort_by(f64::total_cmp);
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Percentiles { p50: round3(rank(0.50)), p99: round3(rank(0.99)), max: round3(v[v.len() - 1]), n: v.len() }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
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
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = percentiles(&mut v);
        assert_eq!((p.p50, p.p99, p.max, p.n), (50.0, 99.0, 100.0, 100));
        assert_eq!(percentiles(&mut []).n, 0);
    }

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
