//! The node's active faults and the recent reject share: written by the
//! supervisor and the controllers, read by telemetry and the stack light.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

/// Past and present alarms kept for the operator page, oldest dropped first.
pub const HISTORY: usize = 200;

/// One alarm from its start to its end, and who acknowledged it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmRecord {
    pub id: u64,
    /// The alarm's text, as the MQTT `alarms` topic shows it.
    pub text: String,
    pub started: SystemTime,
    /// None while it lasts.
    pub ended: Option<SystemTime>,
    /// When and by whom (the page's source and the name the operator gave).
    pub acknowledged: Option<(SystemTime, String)>,
}

/// The current faults, shared with telemetry, and their history. The supervisor is the one
/// writer ([`Faults::set`]); the page acknowledges.
#[derive(Debug, Default)]
pub struct Faults {
    active: Mutex<Vec<String>>,
    history: Mutex<(u64, VecDeque<AlarmRecord>)>,
}

impl Faults {
    pub fn list(&self) -> Vec<String> {
        self.active.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The faults now: each new one starts a record, each gone one ends its record.
    pub fn set(&self, now: SystemTime, faults: Vec<String>) {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        for gone in active.iter().filter(|f| !faults.contains(f)) {
            if let Some(r) = h.1.iter_mut().rev().find(|r| &r.text == gone && r.ended.is_none()) {
                r.ended = Some(now);
            }
        }
        for new in faults.iter().filter(|f| !active.contains(f)) {
            h.0 += 1;
            let id = h.0;
            if h.1.len() == HISTORY {
                h.1.pop_front();
            }
            h.1.push_back(AlarmRecord { id, text: new.clone(), started: now, ended: None, acknowledged: None });
        }
        *active = faults;
    }

    /// Every kept alarm, newest first.
    pub fn history(&self) -> Vec<AlarmRecord> {
        self.history.lock().unwrap_or_else(|e| e.into_inner()).1.iter().rev().cloned().collect()
    }

    /// Acknowledge alarm `id` (once).
    pub fn acknowledge(&self, id: u64, by: &str, now: SystemTime) -> Result<(), String> {
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let r = h.1.iter_mut().find(|r| r.id == id).ok_or_else(|| format!("no alarm {id} in the history"))?;
        if let Some((_, who)) = &r.acknowledged {
            return Err(format!("alarm {id} was already acknowledged by {who}"));
        }
        r.acknowledged = Some((now, by.to_string()));
        Ok(())
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

#[cfg(test)]
mod history_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn alarms_are_kept_from_start_to_end_and_acknowledged_once() {
        let f = Faults::default();
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        f.set(t(1), vec!["camera `top` offline".into()]);
        f.set(t(2), vec!["camera `top` offline".into(), "Modbus device `plc` unreachable".into()]);
        f.set(t(3), vec!["Modbus device `plc` unreachable".into()]);
        f.set(t(4), vec!["camera `top` offline".into(), "Modbus device `plc` unreachable".into()]);
        let h = f.history();
        let summary: Vec<(u64, &str, Option<SystemTime>)> = h.iter().map(|r| (r.id, &r.text[..6], r.ended)).collect();
        assert_eq!(summary, vec![(3, "camera", None), (2, "Modbus", None), (1, "camera", Some(t(3)))]);
        assert_eq!(f.list().len(), 2);
        f.acknowledge(1, "http 127.0.0.1:5000 (ana)", t(5)).unwrap();
        assert!(f.acknowledge(1, "someone", t(6)).unwrap_err().contains("already acknowledged by http 127.0.0.1:5000"));
        assert!(f.acknowledge(9, "x", t(6)).unwrap_err().contains("no alarm 9"));
    }
}
