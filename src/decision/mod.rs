//! From scores to verdicts, and from verdicts to rejects.
//!
//! - [`rules`]: the pure mapping from model output to OK / NG / ERROR.
//! - [`controller`]: one task's part tracker: every part gets exactly one
//!   verdict, and a part whose verdict does not come in time gets ERROR.
//! - [`reject`]: the timed reject-gate pulses.
//! - [`control`]: what commands may change in a running task (enabled, threshold).

pub mod control;
pub mod controller;
pub mod reject;
pub mod rules;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::Serialize;

/// The verdict for one part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// Inspected and good.
    Ok,
    /// Inspected and defective: reject.
    Ng,
    /// Inspected, and the score fell in the task's uncertain band (between
    /// OK and NG): what happens to the part is the task's `uncertain.action`.
    Uncertain,
    /// Could not be judged (no fresh frame, no inference result, a broken
    /// output). Treated as NG by the reject gate: nothing passes uninspected.
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Ng => "NG",
            Verdict::Uncertain => "UNCERTAIN",
            Verdict::Error => "ERROR",
        }
    }

    /// Whether this part must be thrown out; an UNCERTAIN part as its task's action says.
    pub fn rejects(self, uncertain: UncertainAction) -> bool {
        match self {
            Verdict::Ok => false,
            Verdict::Ng | Verdict::Error => true,
            Verdict::Uncertain => uncertain == UncertainAction::Reject,
        }
    }
}

pub use crate::config::UncertainAction;

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

/// Where a part came from and when.
#[derive(Debug, Clone)]
pub struct PartInfo {
    pub camera: Arc<str>,
    /// Frame sequence number from the camera, starting at 1; one part per frame.
    pub part_id: u64,
    /// Monotonic capture time: all deadlines count from here.
    pub captured: Instant,
    /// Wall-clock capture time, for reports.
    pub captured_wall: SystemTime,
}

/// The inference worker's view of one frame.
#[derive(Debug, Clone)]
pub struct Judgement {
    pub part: PartInfo,
    pub verdict: Verdict,
    /// Probability per class, in the model's class order.
    pub scores: Vec<f32>,
    /// Probability that the part is defective (1 minus the OK classes).
    pub ng_score: f32,
    /// Index of the most likely class.
    pub top_class: usize,
    pub preprocess_ms: f64,
    pub inference_ms: f64,
    /// Why the verdict is ERROR, when it is.
    pub error: Option<String>,
    /// Detectors: the detections that count for the verdict (see [`rules::DetectionRule`]).
    pub detections: Vec<crate::inference::detector::Detection>,
}

impl Judgement {
    /// A part that could not be judged, and why.
    pub fn error(part: PartInfo, why: String) -> Self {
        Judgement {
            part,
            verdict: Verdict::Error,
            scores: Vec::new(),
            ng_score: f32::NAN,
            top_class: 0,
            preprocess_ms: 0.0,
            inference_ms: 0.0,
            error: Some(why),
            detections: Vec::new(),
        }
    }
}

/// What the camera and the inference worker tell a task's controller.
#[derive(Debug)]
pub enum PartEvent {
    /// A frame standing for a part was queued: its verdict is due by the deadline.
    Captured(PartInfo),
    /// A frame was judged.
    Judged(Judgement),
    /// A frame standing for a part could not be queued: no verdict will come.
    Unjudged(PartInfo, String),
}
