//! Shadow inference: a candidate model judging the same frames as the production model, beside
//! it, without ever being in its way.
//!
//! The production worker offers each frame it has inferred to its model's [`Tap`]. When a
//! candidate is attached and its queue has room, the frame is copied into it; when the queue is
//! full the frame is skipped and counted: the production worker never waits for the shadow.
//! The candidate's session lives on a thread of its own at the idle scheduling class
//! (`SCHED_IDLE`); ONNX Runtime's intra-op threads, made on that thread, inherit it. So under
//! load the shadow gets the cycles production leaves, skips frames, and says how many.
//!
//! The shadow reports what the candidate said ([`ShadowOutput`]); judging it against the
//! task's rule and comparing with the production verdict is the app's (inference does not
//! judge).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use opencv::core::Mat;
use opencv::prelude::*;

use super::Loaded;
use crate::config::ModelConfig;
use crate::part::{ModelOutput, PartInfo};
use crate::stats::TapStats;

/// A frame handed to the shadow: a copy of what production inferred.
pub struct ShadowFrame {
    pub task: Arc<str>,
    pub part: PartInfo,
    pub image: Mat,
    /// Full-frame pixels per pixel of `image` (a camera decoding at a reduced size).
    pub scale: u32,
    /// The task's NG threshold the production model's output was filtered with.
    pub threshold: f32,
}

/// What the candidate said about one frame.
pub struct ShadowOutput {
    pub task: Arc<str>,
    pub part: PartInfo,
    pub output: Result<ModelOutput, String>,
    pub threshold: f32,
    pub inference_ms: f64,
    /// The frame, for the evidence capture of a disagreement.
    pub image: Mat,
    pub scale: u32,
}

/// Where a production worker offers its frames to a shadow, if one is attached. One per model.
#[derive(Default)]
pub struct Tap {
    sender: Mutex<Option<flume::Sender<ShadowFrame>>>,
    pub stats: Arc<TapStats>,
}

impl Tap {
    /// A tap counting into `stats` (the model's, so the stats message reports it).
    pub fn new(stats: Arc<TapStats>) -> Tap {
        Tap { sender: Mutex::new(None), stats }
    }

    /// Offer one inferred frame: copied when a shadow has room for it, else counted as skipped.
    /// Never blocks on the shadow.
    pub fn offer(&self, task: &Arc<str>, part: &PartInfo, image: &Mat, scale: u32, threshold: f32) {
        let guard = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = guard.as_ref() else { return };
        self.stats.offered.fetch_add(1, Ordering::Relaxed);
        // Checked before the copy: a frame the shadow cannot take is not copied at all.
        if tx.is_full() {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let copy = match image.try_clone() {
            Ok(m) => m,
            Err(_) => {
                self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let frame = ShadowFrame { task: task.clone(), part: part.clone(), image: copy, scale, threshold };
        if tx.try_send(frame).is_err() {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether a shadow is attached.
    pub fn attached(&self) -> bool {
        self.sender.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Attach a shadow's queue (replacing any other), with fresh figures.
    fn attach(&self, tx: flume::Sender<ShadowFrame>) {
        self.stats.offered.store(0, Ordering::Relaxed);
        self.stats.skipped.store(0, Ordering::Relaxed);
        *self.sender.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    }

    /// Detach the shadow: its thread finishes the frames it holds and ends.
    pub fn detach(&self) {
        *self.sender.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Start a candidate beside production: load it on a thread of its own at the idle scheduling
/// class, then infer every frame the tap gives it and send what it said to `out`. Returns once
/// the model is loaded and warmed (or could not be); frames flow only after that.
pub fn start(
    name: &str,
    cfg: &ModelConfig,
    env: &'static ort::environment::Environment,
    tap: &Arc<Tap>,
    queue: usize,
    conf: f32,
    out: flume::Sender<ShadowOutput>,
) -> Result<std::thread::JoinHandle<()>, String> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let (tx, rx) = flume::bounded::<ShadowFrame>(queue.max(1));
    let cfg = cfg.clone();
    let thread = std::thread::Builder::new()
        .name(format!("shadow-{name}"))
        .spawn(move || {
            idle_priority();
            // One intra-op thread: the shadow must not take a core production needs.
            let mut model = match super::load_model(env, &cfg, 1).map_err(|e| e.to_string()).and_then(warm) {
                Ok(m) => m,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            while let Ok(f) = rx.recv() {
                let t = Instant::now();
                let said = model.infer(&[&f.image], conf * 0.999, 0.7);
                let inference_ms = t.elapsed().as_secs_f64() * 1e3;
                let output = said.and_then(|(mut outs, _)| {
                    if outs.len() == 1 {
                        Ok(outs.remove(0).in_full_frame(f.scale))
                    } else {
                        Err("the candidate returned no result for the frame".into())
                    }
                });
                let o = ShadowOutput {
                    task: f.task,
                    part: f.part,
                    output,
                    threshold: f.threshold,
                    inference_ms,
                    image: f.image,
                    scale: f.scale,
                };
                if out.send(o).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| format!("cannot start the shadow's thread: {e}"))?;
    match ready_rx.recv() {
        Ok(Ok(())) => {
            tap.attach(tx);
            Ok(thread)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err("the shadow's thread ended while loading the candidate".into()),
    }
}

/// One run on a blank frame, so a candidate that cannot run is found before it is attached.
fn warm(mut loaded: Loaded) -> Result<Loaded, String> {
    use opencv::core::{Scalar, CV_8UC3};
    let (w, h) = loaded.input_size();
    let blank = Mat::new_rows_cols_with_default(h as i32, w as i32, CV_8UC3, Scalar::all(128.0))
        .map_err(|e| e.message.clone())?;
    loaded.infer(&[&blank], 0.25, 0.7).map_err(|e| format!("fails on a blank frame: {e}"))?;
    Ok(loaded)
}

/// The idle scheduling class: the shadow runs only on cycles nothing else wants.
fn idle_priority() {
    use thread_priority::unix::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy, ThreadSchedulePolicy,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), thread_priority::ThreadPriority::Min, idle) {
        tracing::warn!(error = ?e, "the shadow keeps the normal priority (SCHED_IDLE refused)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::{Scalar, CV_8UC3};

    fn part(id: u64) -> PartInfo {
        PartInfo::for_test("top", id)
    }

    #[test]
    fn a_full_shadow_queue_skips_and_counts_and_never_blocks() {
        let tap = Tap::default();
        let img = Mat::new_rows_cols_with_default(8, 8, CV_8UC3, Scalar::all(1.0)).unwrap();
        let task: Arc<str> = "t".into();
        tap.offer(&task, &part(1), &img, 1, 0.5); // nothing attached: not even counted
        assert_eq!(tap.stats.offered.load(Ordering::Relaxed), 0);
        let (tx, rx) = flume::bounded(2);
        tap.attach(tx);
        for id in 1..=5 {
            tap.offer(&task, &part(id), &img, 1, 0.5);
        }
        assert_eq!(tap.stats.offered.load(Ordering::Relaxed), 5);
        assert_eq!(tap.stats.skipped.load(Ordering::Relaxed), 3);
        let ids: Vec<u64> = rx.drain().map(|f| f.part.part_id).collect();
        assert_eq!(ids, vec![1, 2], "the oldest frames are kept, later ones skipped");
        tap.detach();
        assert!(!tap.attached());
        assert!(rx.recv().is_err(), "detaching ends the shadow's queue");
    }
}
