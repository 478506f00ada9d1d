//! What remote commands may change in a running task: whether it inspects,
//! and its NG threshold. The command handler writes, the inference worker
//! reads per frame; one atomic each, so neither waits for the other.
//!
//! A disabled task does not pass parts: every part it sees gets ERROR ("task
//! disabled"), which the reject gate throws out. Disabling inspection is a
//! way to stop trusting a model, never a way to wave parts through.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

#[derive(Debug)]
pub struct TaskControl {
    enabled: AtomicBool,
    /// f32 bits.
    threshold: AtomicU32,
}

impl TaskControl {
    pub fn new(threshold: f32) -> Self {
        TaskControl { enabled: AtomicBool::new(true), threshold: AtomicU32::new(threshold.to_bits()) }
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    pub fn threshold(&self) -> f32 {
        f32::from_bits(self.threshold.load(Ordering::Relaxed))
    }

    /// A threshold is a probability: (0, 1]. Zero would reject every part
    /// silently; it is refused with the other nonsense.
    pub fn set_threshold(&self, t: f64) -> Result<(), String> {
        if !(t.is_finite() && t > 0.0 && t <= 1.0) {
            return Err(format!("threshold {t} is out of range: use a probability above 0 and at most 1"));
        }
        self.threshold.store((t as f32).to_bits(), Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_is_a_probability() {
        let c = TaskControl::new(0.5);
        assert!(c.set_threshold(0.7).is_ok());
        assert!((c.threshold() - 0.7).abs() < 1e-6);
        for bad in [0.0, -0.1, 1.5, f64::NAN, f64::INFINITY] {
            assert!(c.set_threshold(bad).is_err(), "{bad}");
        }
        assert!((c.threshold() - 0.7).abs() < 1e-6, "a refused value changes nothing");
    }
}
