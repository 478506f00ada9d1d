//! A mark that a piece of work has started and not yet ended, and for how long: the
//! liveness watch (`stats::liveness`) asks every mark whether it has been busy too long.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::time::monotonic_ms;

/// The shared monotonic clock, plus one (0 means "idle").
fn now_ms() -> u64 {
    monotonic_ms() + 1
}

/// One piece of work that should end: an inference call, or a wait for room in a task's
/// controller queue.
#[derive(Debug, Default)]
pub struct Busy {
    since_ms: AtomicU64,
}

impl Busy {
    /// Work started.
    pub fn begin(&self) {
        self.since_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Work ended.
    pub fn end(&self) {
        self.since_ms.store(0, Ordering::Relaxed);
    }

    /// How long the current work has run; `None` when idle.
    pub fn busy_for(&self) -> Option<Duration> {
        match self.since_ms.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(now_ms().saturating_sub(since))),
        }
    }
}
