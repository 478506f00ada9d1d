//! What a model said about one frame, in the model's own terms: class
//! probabilities, boxes, an anomaly score. Inference makes these; decision's
//! rules turn them into verdicts, so judging never waits on a model and a
//! model never needs to know a task's rules.

use serde::Serialize;

use super::PartInfo;

/// One detection in image pixels.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Detection {
    pub class: String,
    pub class_id: usize,
    pub score: f32,
    /// `[x1, y1, x2, y2]`.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Segmentation models: the pixels of its mask, at the frame's size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_area: Option<u64>,
    /// Segmentation models: the mask itself, frame-sized, row-major.
    #[serde(skip)]
    pub mask: Option<std::sync::Arc<Vec<bool>>>,
}

/// What an anomaly model said about one frame.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AnomalyResult {
    pub score: f32,
    /// The model's own label (score above its threshold), when it has that output.
    pub label: Option<bool>,
    /// The anomaly map's largest value, and its size `[h, w]`.
    pub map_max: Option<f32>,
    pub map_shape: Option<[usize; 2]>,
    /// Pixels of the model's own mask, at the map's size.
    pub mask_area: Option<usize>,
    /// The anomaly map itself, for the operator page's heat map (not reported: it is h x w floats).
    #[serde(skip)]
    pub map: Option<HeatMap>,
}

/// An anomaly model's map of one frame: where it found the part unlike the good ones. Shared,
/// not copied, from the worker to the page's drawer.
#[derive(Debug, Clone, PartialEq)]
pub struct HeatMap {
    pub height: usize,
    pub width: usize,
    /// Row-major, `height * width` values on the model's scale (its threshold is where NG starts).
    pub values: std::sync::Arc<[f32]>,
}

/// What a model said about one frame.
#[derive(Debug, Clone)]
pub enum ModelOutput {
    /// Class probabilities, in the model's class order.
    Probs(Vec<f32>),
    /// Boxes in frame pixels, best first.
    Detections(Vec<Detection>),
    /// An anomaly score (NG from the threshold on) and what comes with it.
    Anomaly(AnomalyResult),
}

impl ModelOutput {
    /// Boxes and mask areas of a frame decoded at 1/`scale` of the camera's resolution, in the
    /// full frame's pixels: rules (`roi`, `min_area`) and reports do not depend on the decoding.
    /// Masks stay at the decoded size (the page draws them over the decoded frame).
    pub fn in_full_frame(mut self, scale: u32) -> Self {
        if let ModelOutput::Detections(dets) = &mut self {
            detections_in_full_frame(dets, scale);
        }
        self
    }
}

/// [`ModelOutput::in_full_frame`] for detections alone.
pub fn detections_in_full_frame(dets: &mut [Detection], scale: u32) {
    if scale > 1 {
        let s = scale as f32;
        for d in dets {
            d.bbox = d.bbox.map(|v| v * s);
            d.mask_area = d.mask_area.map(|a| a * u64::from(scale) * u64::from(scale));
        }
    }
}

/// One frame's trip through a model, handed from the inference worker to its
/// task's controller, which judges it.
#[derive(Debug)]
pub struct Inspection {
    pub part: PartInfo,
    /// What the model said, or why nothing could be said (the part gets ERROR with this reason).
    pub output: Result<ModelOutput, String>,
    /// The task's NG threshold when the frame was inferred (a command may change it meanwhile:
    /// the frame is judged against the threshold its detections were filtered with).
    pub threshold: f32,
    pub preprocess_ms: f64,
    pub inference_ms: f64,
    /// The frame, lent to the operator page's view when one is configured (see [`super::view`]).
    pub image: Option<super::view::Lent>,
}

impl Inspection {
    /// A frame that could not be inspected, and why.
    pub fn failed(part: PartInfo, why: String) -> Self {
        Inspection { part, output: Err(why), threshold: f32::NAN, preprocess_ms: 0.0, inference_ms: 0.0, image: None }
    }

    /// The same, with its frame lent to the view (None: no view, or too many on their way).
    pub fn with_image(mut self, image: Option<super::view::Lent>) -> Self {
        self.image = image;
        self
    }
}

/// The lowest score a task needs its model to report. Detectors drop boxes
/// below it before NMS, so it follows the task's threshold (which commands
/// may change) and its uncertain band.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScoreFloor {
    /// Every score counts (classifiers, anomaly models).
    All,
    /// From the threshold, or from the uncertain band's start if that is lower.
    Threshold { band_from: Option<f32> },
}

impl ScoreFloor {
    /// The floor for the task's current `threshold`.
    pub fn at(self, threshold: f32) -> f32 {
        match self {
            ScoreFloor::All => 0.0,
            ScoreFloor::Threshold { band_from } => band_from.map_or(threshold, |b| b.min(threshold)),
        }
    }
}
