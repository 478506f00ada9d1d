//! A fault that repeats is logged when it starts, at a bounded rate while it lasts, and when it
//! ends: a PLC unreachable for an hour must not flood the journal with a line per retry.

use std::time::{Duration, Instant};

/// While failing, at most one line per this long after the first.
pub const REPEAT_EVERY: Duration = Duration::from_secs(60);

/// The state of one repeating fault.
#[derive(Debug, Default)]
pub struct Throttle {
    since: Option<Instant>,
    last_logged: Option<Instant>,
    /// Failures since the last line logged.
    quiet: u64,
    /// Failures since the fault started.
    total: u64,
    /// Why it fails: a different reason is a new fault, logged at once.
    reason: String,
}

/// What to log for a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// The fault starts.
    First,
    /// It still lasts: `repeats` failures since the last line, `total` since it started.
    Still { repeats: u64, total: u64, for_s: u64 },
}

impl Throttle {
    /// A failure at `now` for `reason`: what to log, or `None` to stay quiet.
    pub fn failed(&mut self, now: Instant, reason: &str) -> Option<Report> {
        if reason != self.reason {
            // Another cause is another fault: say so now, whatever was said a moment ago.
            self.reason = reason.to_string();
            self.since = None;
            self.total = 0;
        }
        self.total += 1;
        let Some(since) = self.since else {
            self.since = Some(now);
            self.last_logged = Some(now);
            self.quiet = 0;
            return Some(Report::First);
        };
        if self.last_logged.is_some_and(|t| now.duration_since(t) < REPEAT_EVERY) {
            self.quiet += 1;
            return None;
        }
        let repeats = std::mem::take(&mut self.quiet) + 1;
        self.last_logged = Some(now);
        Some(Report::Still { repeats, total: self.total, for_s: now.duration_since(since).as_secs() })
    }

    /// It works again: how long it failed and how many failures, if it was failing.
    pub fn recovered(&mut self, now: Instant) -> Option<(Duration, u64)> {
        let since = self.since.take()?;
        let total = std::mem::take(&mut self.total);
        self.quiet = 0;
        self.last_logged = None;
        Some((now.duration_since(since), total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_of_failures_every_second_is_sixty_one_lines() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        let logged = (0..3600).filter(|s| t.failed(t0 + Duration::from_secs(*s), "refused").is_some()).count();
        assert_eq!(logged, 60, "the first, then one a minute");
        assert_eq!(
            t.failed(t0 + Duration::from_secs(3600), "refused"),
            Some(Report::Still { repeats: 60, total: 3601, for_s: 3600 })
        );
        assert_eq!(t.recovered(t0 + Duration::from_secs(3601)), Some((Duration::from_secs(3601), 3601)));
        assert_eq!(t.recovered(t0 + Duration::from_secs(3602)), None, "nothing to report twice");
        assert_eq!(
            t.failed(t0 + Duration::from_secs(4000), "refused"),
            Some(Report::First),
            "a new fault starts afresh"
        );
        assert_eq!(t.failed(t0 + Duration::from_secs(4001), "refused"), None);
        assert_eq!(
            t.failed(t0 + Duration::from_secs(4002), "timed out"),
            Some(Report::First),
            "another cause is logged at once"
        );
    }
}
