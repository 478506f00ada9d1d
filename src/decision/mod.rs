//! From model outputs to verdicts, and from verdicts to rejects. No I/O:
//! outputs are driven through [`crate::part::actuator::Actuator`], finished
//! parts leave as [`crate::part::PartResult`] values on a channel, so every
//! rule and every timing here is tested with a recording actuator and
//! tokio's paused clock.
//!
//! - [`rules`]: the pure mapping from model output to OK / NG / UNCERTAIN / ERROR.
//! - [`controller`]: one task's part tracker: every part gets exactly one
//!   verdict, and a part whose verdict does not come in time gets ERROR.
//! - [`reject`]: the timed reject-gate pulses.

pub mod controller;
pub mod reject;
pub mod rules;

use crate::part::Verdict;

/// The band below the NG threshold where a part is UNCERTAIN rather than OK.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Band {
    /// Scores from here up to (not including) the NG threshold are UNCERTAIN.
    /// At or above the threshold, no band exists.
    pub from: f32,
}

impl Band {
    /// The verdict for a score against the NG `threshold` and an optional band.
    /// Not-finite scores are ERROR: a model that emits NaN must not pass parts.
    pub fn verdict(band: Option<Band>, score: f32, threshold: f32) -> Verdict {
        if !score.is_finite() {
            Verdict::Error
        } else if score >= threshold {
            Verdict::Ng
        } else if band.is_some_and(|b| score >= b.from) {
            Verdict::Uncertain
        } else {
            Verdict::Ok
        }
    }
}
