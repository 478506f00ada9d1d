//! The pipeline's shared vocabulary: what a part is, what was seen of it and
//! what was decided. Every stage speaks these types, so no stage needs to
//! import another: the camera makes [`Frame`]s and [`PartEvent`]s, inference
//! answers with [`Inspection`]s, decision turns them into [`Judgement`]s and
//! [`PartResult`]s, telemetry reports them.
//!
//! - [`queue`]: the bounded frame queue between a camera and its worker.
//! - [`announce`]: the bounded way into a task's controller (part events), which waits, never drops.
//! - [`control`]: what commands may change in a running task.
//! - [`fit`]: how much of a frame's resolution a model uses (how far a camera may reduce its decoding).
//! - [`output`]: what a model said about one frame (class scores, boxes, anomaly scores).
//! - [`sample`]: the latest reading of a point, its quality, and the line's position.
//! - [`actuator`]: the output a reject gate drives, as a small trait.
//! - [`result`]: a finished part, as decision hands it to telemetry.
//! - [`view`]: judged frames kept for the operator page (latest per camera, last rejects).

pub mod actuator;
pub mod announce;
pub mod control;
pub mod fit;
pub mod output;
pub mod queue;
pub mod result;
pub mod sample;
pub mod view;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use opencv::core::Mat;
use serde::Serialize;

use crate::config::UncertainAction;
pub use output::{AnomalyResult, Detection, HeatMap, Inspection, ModelOutput};
pub use result::PartResult;

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

/// Where a part came from and when.
#[derive(Debug, Clone)]
pub struct PartInfo {
    pub camera: Arc<str>,
    /// Frame sequence number from the camera, starting at 1; one part per frame.
    pub part_id: u64,
    /// Monotonic capture time: all deadlines count from here. For a triggered part, the time of its
    /// trigger's edge (placed from the latched count, or half a poll before the reading that showed
    /// it), not the time linesight saw it.
    pub captured: Instant,
    /// The line's encoder position (unwrapped counts) at the trigger's edge, when the line has an
    /// encoder: the PLC's latched count, or the encoder at `captured`. Rejects by distance count
    /// from here; without it, from the encoder at `captured`.
    pub position: Option<i64>,
    /// Wall-clock capture time, for reports.
    pub captured_wall: SystemTime,
    /// The settings the part is judged and timed by, fixed when it was announced.
    pub stamp: control::Stamp,
}

#[cfg(test)]
impl PartInfo {
    /// A part of `camera` captured now (by tokio's clock, so a paused test clock holds), at the
    /// default stamp: the unit tests' part.
    pub fn for_test(camera: &str, id: u64) -> PartInfo {
        PartInfo {
            camera: camera.into(),
            part_id: id,
            captured: tokio::time::Instant::now().into_std(),
            position: None,
            captured_wall: SystemTime::now(),
            stamp: control::Stamp { generation: 0, threshold: 0.5 },
        }
    }
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
    pub detections: Vec<Detection>,
    /// Anomaly models: the map the score came from, for the operator page.
    pub heat: Option<HeatMap>,
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
            heat: None,
        }
    }
}

/// What the camera and the inference worker tell a task's controller.
#[derive(Debug)]
pub enum PartEvent {
    /// A frame standing for a part was queued: its verdict is due by the deadline.
    Captured(PartInfo),
    /// A frame went through its model (or could not): the controller judges it.
    Inspected(Inspection),
    /// A frame standing for a part could not be queued: no verdict will come.
    Unjudged(PartInfo, String),
}

/// One captured frame.
pub struct Frame {
    pub part: PartInfo,
    pub image: Mat,
    /// Pixels of the camera's full frame per pixel of `image` along each side: 1, or 2, 4, 8 when
    /// the camera decoded its JPEG frames reduced (see [`fit`]). Boxes are reported in full-frame
    /// pixels, whatever this is.
    pub scale: u32,
    /// False for free-running frames, which are samples rather than parts.
    pub is_part: bool,
}

/// Parts waiting for their frame, shared between a task's trigger (which
/// announces them) and its camera thread (which takes the oldest for the
/// first frame it grabs after the part's trigger).
pub type Waiting = Arc<Mutex<VecDeque<PartInfo>>>;
