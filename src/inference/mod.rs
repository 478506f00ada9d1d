//! Inference: ONNX Runtime sessions, the model adapters, and the worker
//! thread that runs frames through them. It reports what the model said
//! ([`ModelOutput`]); judging is decision's.
//!
//! One worker thread per model owns its session (`Session::run` takes `&mut`
//! and blocks) and serves every task that uses the model, batching frames
//! from their cameras (see [`Worker`]). It takes frames until every queue is
//! closed and empty, so a shutdown finishes the parts already captured.
//!
//! A reload replaces a model between two parts ([`ModelSwap`]): each frame is inferred by the
//! model of its part's config generation, so parts announced before the swap are inferred by the
//! old model and parts announced after by the new one, never one part by half of each.

pub mod anomaly;
pub mod classifier;
pub mod detector;
pub mod pyliteral;
pub mod runtime;
pub mod segment;
pub mod shadow;
pub mod yolo;
pub mod yolo_classify;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::part::announce::Announcer;
use crate::part::control::{TaskControl, Versions};
use crate::part::output::ScoreFloor;
use crate::part::queue::{Closed, Doorbell, FrameQueue};
use crate::part::{Frame, Inspection, ModelOutput, PartEvent};
use crate::stats::{Busy, ModelStats};
use classifier::{Classifier, Timing};
use detector::Detector;
use opencv::core::Mat;

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

/// A batch of `n` frames fits a model whose batch dimension is `max` (`None`: dynamic).
pub(crate) fn check_batch(n: usize, max: Option<usize>) -> Result<(), String> {
    if n == 0 || max.is_some_and(|b| n > b) {
        return Err(format!("batch of {n} frames; this model takes 1 to {}", max.unwrap_or(usize::MAX)));
    }
    Ok(())
}

/// A model of either kind.
// One per model for the whole run, never moved in a hot path: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Loaded {
    Classifier(Classifier),
    Detector(Detector),
    Anomaly(anomaly::Anomaly),
    YoloClassify(yolo_classify::YoloClassifier),
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
            let (bytes, _) = runtime::read_model(cfg)?;
            let cpu = [crate::config::ProviderConfig::Cpu(Default::default())];
            let probe = runtime::build_session(env, &cfg.path, &bytes, &cpu, 1)?;
            let ultralytics = detector::is_ultralytics(&probe.session);
            let task = probe.session.metadata().ok().and_then(|m| m.custom("task")).unwrap_or_default();
            let contract = probe.session.metadata().ok().and_then(|m| m.custom("linesight")).is_some()
                || cfg.sidecar.as_ref().is_some_and(|p| p.is_file())
                || classifier::sidecar_for(&cfg.path).is_file();
            match (ultralytics, contract) {
                (true, _) if task == "segment" => ModelKind::YoloSegment,
                (true, _) if task == "classify" => ModelKind::YoloClassify,
                (true, _) => ModelKind::YoloDetect,
                (false, true) if anomaly::sidecar_says_anomaly(cfg) => ModelKind::Anomaly,
                (false, true) => ModelKind::Classifier,
                (false, false) => {
                    return Err(fail(format!(
                        "cannot tell what kind of model this is: no Ultralytics metadata (`task`, `names`) and no linesight contract (metadata key `linesight`, or a sidecar `{}`, which anomalib models need); set `kind` in the config",
                        classifier::sidecar_for(&cfg.path).display()
                    )))
                }
            }
        }
    };
    match kind {
        ModelKind::Classifier => Classifier::load(env, cfg, threads).map(Loaded::Classifier),
        ModelKind::YoloDetect | ModelKind::YoloSegment => {
            let d = Detector::load(env, cfg, threads)?;
            let want = if kind == ModelKind::YoloSegment { "segment" } else { "detect" };
            if d.meta.task != want {
                return Err(runtime::RuntimeError::Model {
                    path: cfg.path.clone(),
                    why: format!("the config says kind `yolo-{want}`, its metadata says task `{}`", d.meta.task),
                });
            }
            Ok(Loaded::Detector(d))
        }
        ModelKind::YoloClassify => yolo_classify::YoloClassifier::load(env, cfg, threads).map(Loaded::YoloClassify),
        ModelKind::Anomaly => anomaly::Anomaly::load(env, cfg, threads).map(Loaded::Anomaly),
    }
}

impl Loaded {
    pub fn provider(&self) -> &'static str {
        match self {
            Loaded::Classifier(m) => m.provider,
            Loaded::Detector(m) => m.provider,
            Loaded::Anomaly(m) => m.provider,
            Loaded::YoloClassify(m) => m.provider,
        }
    }

    /// The largest batch one call may hold; `None` when the model's batch dimension is dynamic.
    pub fn max_batch(&self) -> Option<usize> {
        match self {
            Loaded::Classifier(m) => m.max_batch(),
            Loaded::Detector(m) => m.max_batch(),
            Loaded::Anomaly(m) => m.max_batch(),
            Loaded::YoloClassify(m) => m.max_batch(),
        }
    }

    /// What the model does with a frame's pixels, so a camera with `decode: auto` knows how far
    /// it may reduce its decoding (`part::fit`); `None`: decode in full. Anomaly models get
    /// `None`: their scores are calibrated on the pixel statistics they were fitted on, and a
    /// reduced decode moved the committed PatchCore's operating point (held-out NG recall 0.74 ->
    /// 0.69 at 1/4, AUROC unchanged: docs/benchmarks.md); `decode: 1/4` still forces it.
    pub fn fit(&self) -> Option<crate::part::fit::Fit> {
        use crate::part::fit::Fit;
        let (width, height) = self.input_size();
        match self {
            Loaded::Classifier(_) => Some(Fit::Stretch { width, height }),
            Loaded::Anomaly(_) => None,
            Loaded::Detector(_) => Some(Fit::Letterbox { width, height }),
            Loaded::YoloClassify(_) => Some(Fit::ShortSide { side: width }),
        }
    }

    /// The model's input as (width, height).
    pub fn input_size(&self) -> (u32, u32) {
        match self {
            Loaded::Classifier(m) => (m.contract.input.width, m.contract.input.height),
            Loaded::Detector(m) => (m.meta.imgsz.1, m.meta.imgsz.0),
            Loaded::Anomaly(m) => (m.contract.input.width, m.contract.input.height),
            Loaded::YoloClassify(m) => (m.meta.imgsz.1, m.meta.imgsz.0),
        }
    }

    /// Classifier kinds: the class names, which of them mean a good part, and the
    /// model's own NG threshold. `ok_classes` (from the config) overrides; a YOLO
    /// classifier otherwise needs a class named `good` or `ok`. `None` for other kinds.
    pub fn class_contract(&self, ok_classes: &[String]) -> Option<Result<ClassContract, String>> {
        let (names, own_ok, threshold) = match self {
            Loaded::Classifier(c) => (c.contract.classes.clone(), Some(c.ok_mask().to_vec()), c.contract.ng_threshold),
            Loaded::YoloClassify(c) => (c.meta.names.clone(), None, None),
            _ => return None,
        };
        if let Some(unknown) = ok_classes.iter().find(|k| !names.contains(k)) {
            return Some(Err(format!(
                "ok_classes names `{unknown}`, which the model does not have (its classes: {names:?})"
            )));
        }
        let ok: Vec<bool> = if !ok_classes.is_empty() {
            names.iter().map(|n| ok_classes.contains(n)).collect()
        } else if let Some(own) = own_ok {
            own
        } else {
            names.iter().map(|n| n.eq_ignore_ascii_case("good") || n.eq_ignore_ascii_case("ok")).collect()
        };
        if !ok.contains(&true) {
            return Some(Err(format!(
                "no class of {names:?} means a good part; list them under the model's `ok_classes`"
            )));
        }
        Some(Ok((names, ok, threshold)))
    }

    /// Append one frame's input tensor to `out`.
    pub fn prepare(&mut self, frame: &Mat, out: &mut Vec<f32>) -> Result<(), String> {
        match self {
            Loaded::Classifier(m) => m.preprocess(frame, out),
            Loaded::Detector(m) => m.preprocess(frame, out).map(|_| ()),
            Loaded::Anomaly(m) => m.preprocess(frame, out),
            Loaded::YoloClassify(m) => m.preprocess(frame, out),
        }
    }

    /// Only `Session::run` on `n` prepared inputs: what the benchmark calls the limit.
    pub fn run_prepared(&mut self, n: usize, data: Vec<f32>) -> Result<(), String> {
        match self {
            Loaded::Classifier(m) => m.run_prepared(n, data).map(|_| ()),
            Loaded::Detector(m) => m.run_prepared(n, data),
            Loaded::Anomaly(m) => m.run_prepared(n, data).map(|_| ()),
            Loaded::YoloClassify(m) => m.run_prepared(n, data).map(|_| ()),
        }
    }

    /// One inference call on a batch of frames; detectors keep boxes from `conf` on.
    pub fn infer(&mut self, frames: &[&Mat], conf: f32, iou: f32) -> Result<(Vec<ModelOutput>, Timing), String> {
        match self {
            Loaded::Classifier(m) => {
                m.classify_many(frames).map(|(p, t)| (p.into_iter().map(ModelOutput::Probs).collect(), t))
            }
            Loaded::Detector(m) => {
                m.detect_many(frames, conf, iou).map(|(d, t)| (d.into_iter().map(ModelOutput::Detections).collect(), t))
            }
            Loaded::Anomaly(m) => {
                m.score_many(frames).map(|(a, t)| (a.into_iter().map(ModelOutput::Anomaly).collect(), t))
            }
            Loaded::YoloClassify(m) => {
                m.classify_many(frames).map(|(p, t)| (p.into_iter().map(ModelOutput::Probs).collect(), t))
            }
        }
    }
}

/// A classifier's class names, which of them mean a good part, and its own NG threshold.
pub type ClassContract = (Vec<String>, Vec<bool>, Option<f32>);

/// One task served by an inference worker.
pub struct Member {
    pub task: Arc<str>,
    /// The lowest score the task's rule needs reported, per config generation.
    pub floor: Arc<Versions<ScoreFloor>>,
    /// The task's camera queue (rings the worker's doorbell).
    pub queue: Arc<FrameQueue<Frame>>,
    pub events: Announcer,
    /// A frame older than this when its turn comes is not worth inferring:
    /// its part has been given ERROR by the controller already.
    pub max_age: Duration,
    /// Frames judged for this task alone (the fault supervisor watches it).
    pub task_progress: Arc<AtomicU64>,
    /// Whether the task inspects, as commands set it; read per frame.
    pub control: Arc<TaskControl>,
    /// The operator page's view, when one is configured: inferred frames are lent to it.
    pub views: Option<Arc<crate::part::view::Views>>,
}

/// A model replacing the worker's, for parts from `generation` on (a reload). Loaded and warmed
/// before it is sent, so the swap itself costs nothing.
pub struct ModelSwap {
    pub generation: u64,
    pub loaded: Result<Loaded, String>,
}

/// A frame ready for inference: its member, the frame, the threshold its part was stamped with.
type Ready = (usize, Frame, f32);

/// A model the worker may still need: parts announced from `from` on use it.
struct Version {
    from: u64,
    /// When it was replaced by a newer one; it is dropped once no frame can still need it.
    replaced: Option<Instant>,
    loaded: Result<Loaded, String>,
}

/// The thread that owns one model's session and serves every task using
/// that model. Frames from the tasks' cameras are gathered into one batch
/// (up to `batch` frames, waiting at most `batch_wait` after the first one
/// for more) and judged in one inference call.
///
/// Fairness: each gathering pass takes at most one frame per camera, and the
/// camera that goes first moves on by one after every batch, so a busy camera
/// cannot keep a quiet one out of the batch. What a camera cannot get into a
/// batch waits in its own bounded queue, where it is counted when dropped.
pub struct Worker {
    /// The model's name in the config, for logs.
    pub model: Arc<str>,
    /// The model, or why it could not be loaded: then every frame is judged ERROR with that reason.
    pub loaded: Result<Loaded, String>,
    /// Models replacing it (a reload), taken between batches.
    pub swaps: std::sync::mpsc::Receiver<ModelSwap>,
    pub members: Vec<Member>,
    pub batch: usize,
    pub batch_wait: Duration,
    pub bell: Arc<Doorbell>,
    pub iou: f32,
    pub stats: Arc<ModelStats>,
    /// Marked while an inference call runs: one that does not return is a hang (the
    /// watchdog and the heartbeat stop), unlike an idle worker.
    pub busy: Arc<Busy>,
    /// Where a candidate model in shadow mode takes copies of the inferred frames.
    pub shadow: Arc<shadow::Tap>,
}

impl Worker {
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name(format!("infer-{}", self.model)).spawn(move || self.run())
    }

    fn run(self) {
        let Worker { model, loaded, members, batch, batch_wait, bell, iou, stats, busy, swaps, shadow } = self;
        let versions = vec![Version { from: 0, replaced: None, loaded }];
        let oldest_frame = members.iter().map(|m| m.max_age).max().unwrap_or_default();
        let mut w = Running {
            model,
            versions,
            members,
            batch,
            batch_wait,
            bell,
            iou,
            stats,
            busy,
            swaps,
            oldest_frame,
            shadow,
        };
        w.run();
    }
}

/// The worker's state while it runs.
struct Running {
    model: Arc<str>,
    /// Oldest first; the newest is the one new parts use.
    versions: Vec<Version>,
    members: Vec<Member>,
    batch: usize,
    batch_wait: Duration,
    bell: Arc<Doorbell>,
    iou: f32,
    stats: Arc<ModelStats>,
    busy: Arc<Busy>,
    swaps: std::sync::mpsc::Receiver<ModelSwap>,
    /// No frame older than this is inferred (the members' longest `max_age`).
    oldest_frame: Duration,
    shadow: Arc<shadow::Tap>,
}

impl Running {
    fn run(&mut self) {
        let mut first = 0;
        let mut done = vec![false; self.members.len()];
        let batch = self.batch.max(1);
        loop {
            let seen = self.bell.count();
            let mut frames = Vec::with_capacity(batch);
            gather(&self.members, &mut frames, batch, first, &mut done);
            if frames.is_empty() {
                if done.iter().all(|d| *d) {
                    break;
                }
                self.bell.wait(seen, Duration::from_millis(200));
                continue;
            }
            // A partial batch waits a little for the other cameras.
            let until = Instant::now() + self.batch_wait;
            while frames.len() < batch && !done.iter().all(|d| *d) {
                let seen = self.bell.count();
                let before = frames.len();
                gather(&self.members, &mut frames, batch, first, &mut done);
                let now = Instant::now();
                if frames.len() == before {
                    if now >= until {
                        break;
                    }
                    self.bell.wait(seen, until - now);
                }
            }
            first = (first + 1) % self.members.len().max(1);
            // After the frames are taken: a swap is sent before the generation it belongs to
            // is stamped on any part, so a frame of the new generation finds its model here.
            self.take_swaps();
            self.judge(frames);
        }
        tracing::debug!(model = %self.model, "inference worker finished");
    }

    /// New models from a reload; old ones are dropped once no frame can still need them.
    fn take_swaps(&mut self) {
        while let Ok(swap) = self.swaps.try_recv() {
            let now = Instant::now();
            if let Some(last) = self.versions.last_mut() {
                last.replaced = Some(now);
            }
            tracing::info!(model = %self.model, generation = swap.generation, "model replaced: parts announced from now on are inferred by the new one");
            self.versions.push(Version { from: swap.generation, replaced: None, loaded: swap.loaded });
        }
        let oldest = self.oldest_frame;
        self.versions.retain(|v| v.replaced.map_or(true, |at| at.elapsed() <= oldest));
    }

    /// The model for parts of `generation`: the newest one from at or before it.
    fn version_for(&self, generation: u64) -> Option<usize> {
        self.versions.iter().rposition(|v| v.from <= generation)
    }

    /// Infer one batch and hand every frame's inspection to its task's controller, which judges it.
    /// Frames of different models (a reload while they waited) are inferred model by model.
    fn judge(&mut self, frames: Vec<(usize, Frame)>) {
        let mut by_version: Vec<(usize, Vec<Ready>)> = Vec::new();
        for (i, frame) in frames {
            let m = &self.members[i];
            let age = frame.part.captured.elapsed();
            let version = self.version_for(frame.part.stamp.generation);
            let why = if age > m.max_age {
                format!("frame was {} ms old when inference could start", age.as_millis())
            } else if !m.control.enabled() {
                "task disabled by command: parts are not inspected, so they are rejected".to_string()
            } else if let Some(v) = version {
                let threshold = frame.part.stamp.threshold;
                match by_version.iter_mut().find(|(k, _)| *k == v) {
                    Some((_, list)) => list.push((i, frame, threshold)),
                    None => by_version.push((v, vec![(i, frame, threshold)])),
                }
                continue;
            } else {
                "its model was replaced by reloads while the frame waited: it is not inferred by another".to_string()
            };
            self.send(i, Inspection::failed(frame.part, why));
        }
        for (v, ready) in by_version {
            self.judge_with(v, ready);
        }
    }

    fn judge_with(&mut self, v: usize, ready: Vec<Ready>) {
        let floor = |i: usize, f: &Frame| {
            self.members[i].floor.at(f.part.stamp.generation).map_or(0.0, |fl| fl.at(f.part.stamp.threshold))
        };
        let conf = ready.iter().map(|(i, f, _)| floor(*i, f)).fold(1.0_f32, f32::min);
        let images: Vec<&Mat> = ready.iter().map(|(_, f, _)| &f.image).collect();
        // Just below the threshold, so a score equal to it is kept (the rule's test is inclusive).
        self.busy.begin();
        let result = match &mut self.versions[v].loaded {
            Ok(model) => model.infer(&images, conf * 0.999, self.iou),
            Err(why) => Err(format!("{why}; the part cannot be inspected")),
        };
        self.busy.end();
        drop(images);
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.stats.frames.fetch_add(ready.len() as u64, Ordering::Relaxed);
        self.stats.largest_batch.fetch_max(ready.len() as u64, Ordering::Relaxed);
        let usable = self.versions[v].loaded.is_ok();
        match result {
            Ok((outputs, timing)) => {
                let n = ready.len() as f64;
                for ((i, frame, threshold), out) in ready.into_iter().zip(outputs) {
                    // After production's own inference, before the frame is lent away: the
                    // shadow never holds up this part, and gets only frames production judged.
                    self.shadow.offer(&self.members[i].task, &frame.part, &frame.image, frame.scale, threshold);
                    let image = self.lend(i, frame.image, frame.scale);
                    let inspection = Inspection {
                        part: frame.part,
                        output: Ok(out.in_full_frame(frame.scale)),
                        threshold,
                        preprocess_ms: timing.preprocess_ms / n,
                        inference_ms: timing.inference_ms,
                        image,
                    };
                    self.send(i, inspection);
                }
            }
            // One camera's bad frame (say, an image that cannot be preprocessed) must not cost
            // the other cameras' parts in the same batch their verdicts: infer each one alone.
            Err(_) if ready.len() > 1 && usable => {
                for (i, frame, threshold) in ready {
                    let inspection = self.infer_alone(v, i, frame, conf, threshold);
                    self.send(i, inspection);
                }
            }
            Err(e) => {
                // An unusable model was reported once at start and is an active fault: not per batch.
                if usable {
                    tracing::error!(model = %self.model, frames = ready.len(), error = %e, "inference failed; the batch's parts get ERROR");
                }
                for (i, frame, _) in ready {
                    let image = self.lend(i, frame.image, frame.scale);
                    self.send(i, Inspection::failed(frame.part, e.clone()).with_image(image));
                }
            }
        }
    }

    /// One frame in a batch of its own, after its batch failed.
    fn infer_alone(&mut self, v: usize, i: usize, frame: Frame, conf: f32, threshold: f32) -> Inspection {
        self.busy.begin();
        let one = self.versions[v]
            .loaded
            .as_mut()
            .map_err(|why| why.clone())
            .and_then(|m| m.infer(&[&frame.image], conf * 0.999, self.iou));
        self.busy.end();
        let image = self.lend(i, frame.image, frame.scale);
        match one {
            Ok((mut out, timing)) if out.len() == 1 => Inspection {
                part: frame.part,
                output: Ok(out.remove(0).in_full_frame(frame.scale)),
                threshold,
                preprocess_ms: timing.preprocess_ms,
                inference_ms: timing.inference_ms,
                image,
            },
            Ok(_) => {
                Inspection::failed(frame.part, "the model returned no result for the frame".into()).with_image(image)
            }
            Err(e) => {
                tracing::error!(model = %self.model, task = %self.members[i].task, part = frame.part.part_id, error = %e, "inference failed; part gets ERROR");
                Inspection::failed(frame.part, e).with_image(image)
            }
        }
    }

    /// Lend an inferred frame to the operator page's view (moved, not copied), if it has one.
    fn lend(&self, i: usize, image: opencv::core::Mat, scale: u32) -> Option<crate::part::view::Lent> {
        self.members[i].views.as_ref()?.lend(image, scale)
    }

    fn send(&self, i: usize, inspection: Inspection) {
        let m = &self.members[i];
        m.task_progress.fetch_add(1, Ordering::Relaxed);
        // A controller that is gone is shutting down; its queue is closed and drains.
        m.events.send_blocking(PartEvent::Inspected(inspection));
    }
}

/// Take frames from the members' queues into `out` until it holds `batch` or
/// a pass finds nothing: at most one frame per member per pass, starting at
/// member `first`. A member whose queue is closed and empty is marked done.
fn gather(members: &[Member], out: &mut Vec<(usize, Frame)>, batch: usize, first: usize, done: &mut [bool]) {
    gather_from(members.len(), |i| members[i].queue.try_pop(), out, batch, first, done)
}

fn gather_from<F>(
    n: usize,
    mut pop: impl FnMut(usize) -> Result<Option<F>, Closed>,
    out: &mut Vec<(usize, F)>,
    batch: usize,
    first: usize,
    done: &mut [bool],
) {
    while out.len() < batch {
        let mut took = false;
        for k in 0..n {
            let i = (first + k) % n;
            if done[i] || out.len() >= batch {
                continue;
            }
            match pop(i) {
                Ok(Some(f)) => {
                    out.push((i, f));
                    took = true;
                }
                Ok(None) => {}
                Err(Closed) => done[i] = true,
            }
        }
        if !took {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Queues as plain lists; `None` marks a closed queue once it is empty.
    fn run_gather(queues: &mut [VecDeque<u32>], closed: &[bool], batch: usize, first: usize) -> Vec<(usize, u32)> {
        let mut out = Vec::new();
        let mut done = vec![false; queues.len()];
        gather_from(
            queues.len(),
            |i| match queues[i].pop_front() {
                Some(f) => Ok(Some(f)),
                None if closed[i] => Err(Closed),
                None => Ok(None),
            },
            &mut out,
            batch,
            first,
            &mut done,
        );
        out
    }

    #[test]
    fn a_busy_camera_cannot_keep_a_quiet_one_out_of_the_batch() {
        let mut q = [VecDeque::from([1, 2, 3, 4, 5]), VecDeque::from([10]), VecDeque::new()];
        let got = run_gather(&mut q, &[false; 3], 4, 0);
        assert_eq!(got, vec![(0, 1), (1, 10), (0, 2), (0, 3)], "one per camera per pass, then the busy one fills up");
        // Batch smaller than the number of cameras: the rotating start serves each in turn.
        let mut q = [VecDeque::from([1, 2]), VecDeque::from([10, 11]), VecDeque::from([20, 21])];
        assert_eq!(run_gather(&mut q, &[false; 3], 2, 0), vec![(0, 1), (1, 10)]);
        assert_eq!(run_gather(&mut q, &[false; 3], 2, 1), vec![(1, 11), (2, 20)]);
        assert_eq!(run_gather(&mut q, &[false; 3], 2, 2), vec![(2, 21), (0, 2)]);
    }

    #[test]
    fn closed_queues_are_marked_done_and_empty_ones_end_the_pass() {
        let mut q = [VecDeque::new(), VecDeque::from([7])];
        let mut done = vec![false, false];
        let mut out = Vec::new();
        let mut pop = |i: usize| match q[i].pop_front() {
            Some(f) => Ok(Some(f)),
            None if i == 0 => Err(Closed),
            None => Ok(None),
        };
        gather_from(2, &mut pop, &mut out, 8, 0, &mut done);
        assert_eq!(out, vec![(1, 7)]);
        assert_eq!(done, vec![true, false]);
    }
}
