//! Inference: ONNX Runtime sessions and the worker thread that judges frames.
//!
//! One worker thread per task owns its session (`Session::run` takes `&mut`
//! and blocks). It takes frames from the camera queue until the queue is
//! closed and empty, so a shutdown finishes the parts already captured.

pub mod classifier;
pub mod detector;
pub mod pyliteral;
pub mod runtime;
pub mod yolo;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

use crate::camera::queue::FrameQueue;
use crate::camera::Frame;
use crate::decision::control::TaskControl;
use crate::decision::rules::{ClassifierRule, DetectionRule};
use crate::decision::{Judgement, PartEvent, Verdict};
use classifier::Classifier;
use detector::Detector;

/// A frame as 8-bit BGR: grey and BGRA frames converted, 3-channel frames borrowed.
pub fn to_bgr(frame: &opencv::core::Mat) -> Result<std::borrow::Cow<'_, opencv::core::Mat>, String> {
    use opencv::prelude::*;
    let bgr = match frame.channels() {
        3 => std::borrow::Cow::Borrowed(frame),
        1 | 4 => {
            let code =
                if frame.channels() == 1 { opencv::imgproc::COLOR_GRAY2BGR } else { opencv::imgproc::COLOR_BGRA2BGR };
            let mut m = opencv::core::Mat::default();
            opencv::imgproc::cvt_color_def(frame, &mut m, code).map_err(|e| e.message.clone())?;
            std::borrow::Cow::Owned(m)
        }
        n => return Err(format!("frame has {n} channels; expected 1, 3 or 4")),
    };
    if bgr.depth() != opencv::core::CV_8U {
        return Err("frame is not 8-bit; configure the camera for 8-bit output".into());
    }
    Ok(bgr)
}

/// A model of either kind.
pub enum Loaded {
    Classifier(Classifier),
    Detector(Detector),
}

/// Load a model as the kind the config names, or, without `kind`, as the
/// kind the file says it is: Ultralytics exports carry `task` and `names` in
/// their metadata, linesight classifiers their contract.
pub fn load_model(
    env: &ort::environment::Environment,
    cfg: &crate::config::ModelConfig,
    threads: usize,
) -> Result<Loaded, runtime::RuntimeError> {
    use crate::config::ModelKind;
    let kind = match cfg.kind {
        Some(k) => k,
        None => {
            let fail = |why: String| runtime::RuntimeError::Model { path: cfg.path.clone(), why };
            let bytes = std::fs::read(&cfg.path)
                .map_err(|e| fail(format!("cannot read: {e} (check the path and permissions)")))?;
            let cpu = [crate::config::ProviderConfig::Cpu(Default::default())];
            let probe = runtime::build_session(env, &cfg.path, &bytes, &cpu, 1)?;
            let ultralytics = detector::is_ultralytics(&probe.session);
            let contract = probe.session.metadata().ok().and_then(|m| m.custom("linesight")).is_some()
                || cfg.sidecar.as_ref().is_some_and(|p| p.is_file())
                || classifier::sidecar_for(&cfg.path).is_file();
            match (ultralytics, contract) {
                (true, _) => ModelKind::YoloDetect,
                (false, true) => ModelKind::Classifier,
                (false, false) => {
                    return Err(fail(format!(
                        "cannot tell what kind of model this is: no Ultralytics metadata (`task`, `names`) and no linesight contract (metadata key `linesight`, or a sidecar `{}`); set `kind` in the config",
                        classifier::sidecar_for(&cfg.path).display()
                    )))
                }
            }
        }
    };
    match kind {
        ModelKind::Classifier => Classifier::load(env, cfg, threads).map(Loaded::Classifier),
        ModelKind::YoloDetect => Detector::load(env, cfg, threads).map(Loaded::Detector),
    }
}

/// A loaded model with the rule that turns its output into a verdict.
pub enum Judge {
    Classifier { model: Classifier, rule: ClassifierRule },
    Detector { model: Detector, rule: DetectionRule, iou: f32 },
}

impl Judge {
    pub fn provider(&self) -> &'static str {
        match self {
            Judge::Classifier { model, .. } => model.provider,
            Judge::Detector { model, .. } => model.provider,
        }
    }
}

pub struct Worker {
    pub task: Arc<str>,
    pub judge: Judge,
    pub queue: Arc<FrameQueue<Frame>>,
    pub events: UnboundedSender<PartEvent>,
    /// A frame older than this when its turn comes is not worth inferring:
    /// its part has been given ERROR by the controller already.
    pub max_age: Duration,
    /// Incremented per judged frame; the systemd watchdog feeds only while it moves.
    pub progress: Arc<AtomicU64>,
    /// Frames judged by this worker alone (the fault supervisor watches it).
    pub task_progress: Arc<AtomicU64>,
    /// Enabled and threshold, as commands set them; read per frame.
    pub control: Arc<TaskControl>,
}

impl Worker {
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name(format!("infer-{}", self.task)).spawn(move || self.run())
    }

    fn run(mut self) {
        loop {
            let frame = match self.queue.pop(Duration::from_millis(200)) {
                Ok(Some(f)) => f,
                Ok(None) => continue,
                Err(_closed) => break,
            };
            let judgement = self.judge(frame);
            self.progress.fetch_add(1, Ordering::Relaxed);
            self.task_progress.fetch_add(1, Ordering::Relaxed);
            if self.events.send(PartEvent::Judged(judgement)).is_err() {
                break;
            }
        }
        tracing::debug!(task = %self.task, "inference worker finished");
    }

    fn judge(&mut self, frame: Frame) -> Judgement {
        let age = frame.part.captured.elapsed();
        let mut j = Judgement::error(frame.part, String::new());
        if age > self.max_age {
            j.error = Some(format!("frame was {} ms old when inference could start", age.as_millis()));
            return j;
        }
        if !self.control.enabled() {
            j.error = Some("task disabled by command: parts are not inspected, so they are rejected".into());
            return j;
        }
        let threshold = self.control.threshold();
        let result = match &mut self.judge {
            Judge::Classifier { model, rule } => {
                rule.ng_threshold = threshold;
                model.classify(&frame.image).map(|(probs, timing)| {
                    let (verdict, ng) = rule.judge(&probs);
                    j.verdict = verdict;
                    j.ng_score = ng;
                    j.top_class =
                        probs.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0);
                    if verdict == Verdict::Error {
                        j.error = Some(format!("the model returned unusable scores {probs:?}"));
                    } else {
                        j.error = None;
                    }
                    j.scores = probs;
                    timing
                })
            }
            Judge::Detector { model, rule, iou } => {
                // The task's threshold is every class's floor; per-class minimums above it stay.
                // With an uncertain band, detections from the band's lower edge are needed too.
                let conf = rule.band.map_or(threshold, |b| b.from.min(threshold));
                model.detect(&frame.image, conf * 0.999, *iou).map(|(dets, timing)| {
                    let raw: Vec<(usize, f32, [f32; 4])> = dets.iter().map(|d| (d.class_id, d.score, d.bbox)).collect();
                    let (verdict, ng, kept) = rule.judge(&raw, threshold);
                    j.verdict = verdict;
                    j.ng_score = ng;
                    j.error = None;
                    j.top_class = kept.first().map_or(0, |&i| dets[i].class_id);
                    j.detections = kept.into_iter().map(|i| dets[i].clone()).collect();
                    timing
                })
            }
        };
        match result {
            Ok(timing) => {
                j.preprocess_ms = timing.preprocess_ms;
                j.inference_ms = timing.inference_ms;
            }
            Err(e) => {
                tracing::error!(task = %self.task, part = j.part.part_id, error = %e, "inference failed; part gets ERROR");
                j.verdict = Verdict::Error;
                j.error = Some(e);
            }
        }
        j
    }
}
