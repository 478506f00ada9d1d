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

/// Bucket bounds of the latency histograms, in seconds: from a fast CPU model's verdict to an
/// inference timeout.
pub const BUCKETS_S: [f64; 14] = [0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0];

/// A latency histogram for Prometheus (`_bucket`, `_sum`, `_count`): counts since start, so
/// p99 can be computed over any range and across nodes.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket of [`BUCKETS_S`], the samples at or below its bound and above the one before.
    buckets: [AtomicU64; BUCKETS_S.len()],
    count: AtomicU64,
    /// The sum in microseconds (an integer, so one atomic add).
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn record(&self, ms: f64) {
        let s = ms / 1e3;
        if let Some(i) = BUCKETS_S.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add((ms * 1e3).max(0.0) as u64, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket bound (the last is `+Inf`: every sample), the sum in
    /// seconds and the count.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let count = self.count.load(Ordering::Relaxed);
        let mut running = 0;
        let mut out: Vec<(f64, u64)> = BUCKETS_S
            .iter()
            .zip(&self.buckets)
            .map(|(b, c)| {
                running += c.load(Ordering::Relaxed);
                (*b, running)
            })
            .collect();
        // Read after the buckets: a sample recorded between the reads shows in +Inf only, so
        // the buckets never exceed the count.
        out.push((f64::INFINITY, count.max(running)));
        (out, self.sum_us.load(Ordering::Relaxed) as f64 / 1e6, count.max(running))
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
    /// Of those, parts announced from a new latched count before (or without) a photo-eye edge
    /// seen for them.
    pub triggers_from_latch: AtomicU64,
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
    /// A candidate model's agreement with this task's production model (shadow mode).
    pub shadow: super::ShadowStats,
    pub inference_ms: Window,
    pub capture_to_decision_ms: Window,
    /// The same, since start, for Prometheus.
    pub decision_seconds: Histogram,
    pub capture_to_reject_ack_ms: Window,
}

/// One task's evidence capture (`tasks.<task>.capture`): what its writer did. `bytes` and `files`
/// are what the store holds now; the others count since start.
#[derive(Debug, Default)]
pub struct CaptureStats {
    /// Records (image and sidecar) written.
    pub written: AtomicU64,
    /// Bytes of the task's records on disk now.
    pub bytes: AtomicU64,
    /// Records on disk now.
    pub files: AtomicU64,
    /// Records not written because the writer's queue was full.
    pub dropped: AtomicU64,
    /// Records deleted, oldest first, to stay inside `max_bytes` and `max_files`.
    pub deleted: AtomicU64,
    /// Records that could not be written (disk full, read-only, ...).
    pub errors: AtomicU64,
}

impl CaptureStats {
    /// The figures as the stats message shows them.
    pub fn doc(&self) -> serde_json::Value {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "written": get(&self.written),
            "bytes": get(&self.bytes),
            "files": get(&self.files),
            "dropped": get(&self.dropped),
            "deleted": get(&self.deleted),
            "errors": get(&self.errors),
        })
    }
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

#[cfg(test)]
mod histogram_tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inf_holds_everything() {
        let h = Histogram::default();
        for ms in [0.5, 1.0, 2.5, 40.0, 9_000.0] {
            h.record(ms);
        }
        let (buckets, sum, count) = h.snapshot();
        assert_eq!(count, 5);
        assert!((sum - 9.044).abs() < 1e-9, "{sum}");
        let at = |bound: f64| buckets.iter().find(|(b, _)| *b == bound).unwrap().1;
        assert_eq!(at(0.001), 2, "0.5 ms and 1 ms (a bound is inclusive)");
        assert_eq!(at(0.003), 3);
        assert_eq!(at(0.05), 4);
        assert_eq!(at(5.0), 4, "9 s is past the last bound");
        assert_eq!(at(f64::INFINITY), 5);
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1));
    }
}
