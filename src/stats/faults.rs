//! The node's active faults and the recent reject share: written by the
//! supervisor and the controllers, read by telemetry and the stack light.

use std::collections::VecDeque;
use std::sync::Mutex;

/// The current faults, shared with telemetry.
#[derive(Debug, Default)]
pub struct Faults {
    pub active: Mutex<Vec<String>>,
}

impl Faults {
    pub fn list(&self) -> Vec<String> {
        self.active.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The share of rejected parts over the most recent parts.
#[derive(Debug)]
pub struct RejectWindow {
    parts: Mutex<VecDeque<bool>>,
    capacity: usize,
}

impl RejectWindow {
    pub fn new(capacity: usize) -> Self {
        RejectWindow { parts: Mutex::new(VecDeque::with_capacity(capacity)), capacity: capacity.max(1) }
    }

    pub fn record(&self, rejected: bool) {
        let mut p = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() == self.capacity {
            p.pop_front();
        }
        p.push_back(rejected);
    }

    /// Rejected share, or None before any part.
    pub fn share(&self) -> Option<f64> {
        let p = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        (!p.is_empty()).then(|| p.iter().filter(|r| **r).count() as f64 / p.len() as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_share_over_the_window() {
        let w = RejectWindow::new(4);
        assert_eq!(w.share(), None);
        for r in [true, false, false, false, false] {
            w.record(r);
        }
        assert_eq!(w.share(), Some(0.0), "the old reject left the window");
        w.record(true);
        assert_eq!(w.share(), Some(0.25));
    }
}
