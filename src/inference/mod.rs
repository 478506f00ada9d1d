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
use crate::decision::rules::ClassifierRule;
use crate::decision::{Judgement, PartEvent, Verdict};
use classifier::Classifier;

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

pub struct Worker {
    pub task: Arc<str>,
    pub model: Classifier,
    pub rule: ClassifierRule,
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
        self.rule.ng_threshold = self.control.threshold();
        match self.model.classify(&frame.image) {
            Ok((probs, timing)) => {
                let (verdict, ng) = self.rule.judge(&probs);
                j.error = None;
                j.verdict = verdict;
                j.ng_score = ng;
                j.top_class = probs.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0);
                if verdict == Verdict::Error {
                    j.error = Some(format!("the model returned unusable scores {probs:?}"));
                }
                j.scores = probs;
                j.preprocess_ms = timing.preprocess_ms;
                j.inference_ms = timing.inference_ms;
            }
            Err(e) => {
                tracing::error!(task = %self.task, part = j.part.part_id, error = %e, "inference failed; part gets ERROR");
                j.error = Some(e);
            }
        }
        j
    }
}
