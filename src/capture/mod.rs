//! Evidence capture: the images of judged parts, each with a JSON sidecar saying everything known
//! about its judgement, kept on disk for review and training (`tasks.<task>.capture`).
//!
//! Every NG, UNCERTAIN and ERROR part with a frame is kept (each switchable), a sample of OK parts
//! (1 in N, or N an hour), and in shadow mode every disagreement. One writer thread per node
//! encodes and writes them, off the inspection path: [`Capture::offer`] never blocks (a full
//! queue drops the record and counts it), so a slow or full disk never delays a part.
//!
//! On disk: `<dir>/<task>/<YYYY-MM-DD>/<part_id>-<VERDICT>-<HHMMSSmmm>.png` (UTC) and the same
//! name with `.json`. Each is written to a `.tmp` file and renamed, the sidecar last: a sidecar
//! always has its image, a crash leaves at most a `.tmp` file or an image without sidecar, and
//! both are removed at the next start. The store is bounded per task by `max_bytes` and
//! `max_files`, oldest first, from an index built by one scan at start (never a rescan per write).
//!
//! A review mark ([`Capture::mark`]: false reject, missed defect, good, defect) is written into
//! the sidecar (`review: {mark, by, at}`), atomically; [`export`] carries it.

pub mod export;
mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use opencv::core::{Mat, Vector};
use opencv::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::{CaptureConfig, ImageFormat};
use crate::stats::CaptureStats;
use crate::util::throttle::{Report, Throttle};
use crate::util::time::rfc3339;
pub use store::{Entry, Index};

/// Why a part was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    Ng,
    Uncertain,
    Error,
    /// An OK part chosen by the task's OK sampling (`ok_every`, `ok_per_hour`).
    OkSample,
    /// Shadow mode: the candidate model's verdict differed from production's.
    Disagreement,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ng => "ng",
            Reason::Uncertain => "uncertain",
            Reason::Error => "error",
            Reason::OkSample => "ok-sample",
            Reason::Disagreement => "disagreement",
        }
    }
}

/// An operator's review of a kept part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mark {
    /// Rejected, but the part is good.
    FalseReject,
    /// Passed, but the part is defective.
    MissedDefect,
    /// The part is good (whatever the model said).
    Good,
    /// The part is defective (whatever the model said).
    Defect,
}

/// Every mark's name, for error messages.
pub const MARKS: &str = "false-reject, missed-defect, good, defect";

impl Mark {
    pub fn parse(text: &str) -> Result<Mark, String> {
        serde_json::from_value(Value::String(text.to_string()))
            .map_err(|_| format!("unknown mark `{text}`; use one of: {MARKS}"))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mark::FalseReject => "false-reject",
            Mark::MissedDefect => "missed-defect",
            Mark::Good => "good",
            Mark::Defect => "defect",
        }
    }

    /// Whether the part is defective, by this mark.
    pub fn is_defect(self) -> bool {
        matches!(self, Mark::MissedDefect | Mark::Defect)
    }
}

/// One part to keep.
pub struct Record {
    pub task: String,
    pub camera: String,
    pub part_id: u64,
    pub at: SystemTime,
    pub reason: Reason,
    /// BGR, the frame as it was judged (at the camera's reduced decoding, if any: the sidecar's
    /// `image_scale` says how many full-frame pixels one of its pixels is).
    pub image: Mat,
    /// Everything known about the part's judgement (see docs/capture.md). The writer adds
    /// `image`, `width`, `height`, `reason` and `review`.
    pub sidecar: Value,
}

/// One task's part of the store, shared by callers and the writer.
struct TaskStore {
    cfg: CaptureConfig,
    /// `<dir>/<task>`.
    dir: PathBuf,
    stats: Arc<CaptureStats>,
    index: Mutex<Index>,
    /// Records of this task in the writer's queue now.
    queued: AtomicUsize,
    sampler: Mutex<OkSampler>,
}

/// The OK sampling decision of one task.
#[derive(Debug, Default)]
struct OkSampler {
    seen: u64,
    next_at: Option<Instant>,
}

impl OkSampler {
    fn wants(&mut self, cfg: &CaptureConfig, now: Instant) -> bool {
        self.seen += 1;
        let by_count = cfg.ok_every.is_some_and(|n| n > 0 && self.seen % n == 0);
        let by_time = match cfg.ok_per_hour.filter(|n| *n > 0) {
            Some(n) if self.next_at.map_or(true, |t| now >= t) => {
                self.next_at = Some(now + Duration::from_secs(3600) / n.min(u32::MAX as u64) as u32);
                true
            }
            _ => false,
        };
        by_count || by_time
    }
}

enum Job {
    Write(Arc<TaskStore>, Box<Record>),
    Stop,
}

struct Inner {
    tasks: BTreeMap<String, Arc<TaskStore>>,
    tx: flume::Sender<Job>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The node's evidence store and its writer. One per node; cheap to clone.
#[derive(Clone)]
pub struct Capture {
    inner: Arc<Inner>,
}

/// One task to capture for: its name, its `capture` section, and where its figures go.
pub struct TaskCapture {
    pub task: String,
    pub config: CaptureConfig,
    pub stats: Arc<CaptureStats>,
}

impl Capture {
    /// Open (scan, clean) each task's store and start the writer thread. `state_dir` gives the
    /// default folder. An error names the folder and says how to fix it.
    pub fn start(state_dir: &Path, tasks: Vec<TaskCapture>) -> Result<Capture, String> {
        let mut stores = BTreeMap::new();
        for t in tasks {
            let root = t.config.dir.clone().unwrap_or_else(|| state_dir.join("capture"));
            let dir = root.join(&t.task);
            crate::util::private_fs::create_dir_all(&dir).map_err(|e| {
                format!(
                    "task `{}`: cannot create the capture folder {}: {e}; make it writable by the service's user or set `tasks.{}.capture.dir`",
                    t.task,
                    dir.display(),
                    t.task
                )
            })?;
            let index = Index::scan(&dir)
                .map_err(|e| format!("task `{}`: cannot read the capture folder {}: {e}", t.task, dir.display()))?;
            t.stats.files.store(index.len() as u64, Ordering::Relaxed);
            t.stats.bytes.store(index.bytes(), Ordering::Relaxed);
            let store = TaskStore {
                cfg: t.config,
                dir,
                stats: t.stats,
                index: Mutex::new(index),
                queued: AtomicUsize::new(0),
                sampler: Mutex::new(OkSampler::default()),
            };
            // The bounds may have shrunk since the last run.
            trim(&store);
            stores.insert(t.task, Arc::new(store));
        }
        let (tx, rx) = flume::unbounded::<Job>();
        let thread = std::thread::Builder::new()
            .name("capture-writer".into())
            .spawn(move || writer(rx))
            .map_err(|e| format!("cannot start the capture writer thread: {e}"))?;
        Ok(Capture { inner: Arc::new(Inner { tasks: stores, tx, thread: Mutex::new(Some(thread)) }) })
    }

    /// Whether `task` captures at all.
    pub fn has(&self, task: &str) -> bool {
        self.inner.tasks.contains_key(task)
    }

    /// Whether `task` keeps parts for `reason` (OK parts: see [`Capture::wants_ok`]).
    pub fn keeps(&self, task: &str, reason: Reason) -> bool {
        let Some(t) = self.inner.tasks.get(task) else { return false };
        match reason {
            Reason::Ng => t.cfg.ng,
            Reason::Uncertain => t.cfg.uncertain,
            Reason::Error => t.cfg.error,
            Reason::OkSample => t.cfg.ok_every.is_some() || t.cfg.ok_per_hour.is_some(),
            Reason::Disagreement => true,
        }
    }

    /// Hand a record to the writer. Never blocks: with `queue` records of the task already
    /// waiting, it is dropped and counted (`dropped`), and false is returned.
    pub fn offer(&self, task: &str, rec: Record) -> bool {
        let Some(t) = self.inner.tasks.get(task) else { return false };
        if t.queued.fetch_add(1, Ordering::AcqRel) >= t.cfg.queue {
            t.queued.fetch_sub(1, Ordering::AcqRel);
            t.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if self.inner.tx.send(Job::Write(t.clone(), Box::new(rec))).is_err() {
            // The writer is gone (the node is stopping).
            t.queued.fetch_sub(1, Ordering::AcqRel);
            t.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// The OK sampling decision for the next OK part of `task` (1 in `ok_every`, or the first
    /// after each `1 h / ok_per_hour`). Each call is one OK part: call it once per OK part, before
    /// keeping its frame, and keep the frame only when it says yes.
    pub fn wants_ok(&self, task: &str) -> bool {
        self.wants_ok_at(task, Instant::now())
    }

    fn wants_ok_at(&self, task: &str, now: Instant) -> bool {
        let Some(t) = self.inner.tasks.get(task) else { return false };
        t.sampler.lock().unwrap_or_else(|p| p.into_inner()).wants(&t.cfg, now)
    }

    /// Mark the newest kept record of `part_id` of `task` (part ids start again at 1 when the
    /// node restarts: the newest is the one the operator just saw). Rewrites its sidecar
    /// atomically (temp file, rename); `by` says who (a command's source, the page's user).
    pub fn mark(&self, task: &str, part_id: u64, mark: Mark, by: &str) -> Result<(), String> {
        let t = self.inner.tasks.get(task).ok_or_else(|| {
            let known: Vec<&str> = self.inner.tasks.keys().map(String::as_str).collect();
            if known.is_empty() {
                format!("task `{task}` has no evidence capture: no task has `capture` configured")
            } else {
                format!("task `{task}` has no evidence capture; tasks that capture: {}", known.join(", "))
            }
        })?;
        // Held while the sidecar is rewritten: the writer cannot delete the record meanwhile.
        let mut index = t.index.lock().unwrap_or_else(|p| p.into_inner());
        let entry = index.newest_of(part_id).cloned().ok_or_else(|| {
            format!(
                "no record of part {part_id} of task `{task}` in {} (not kept, still queued, or deleted as the oldest)",
                t.dir.display()
            )
        })?;
        let path = entry.sidecar();
        let text = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut doc: Value = serde_json::from_slice(&text)
            .map_err(|e| format!("{} is not a JSON sidecar: {e}; delete it with its image", path.display()))?;
        doc["review"] = json!({ "mark": mark, "by": by, "at": rfc3339(SystemTime::now()) });
        let bytes = serde_json::to_vec_pretty(&doc).map_err(|e| e.to_string())?;
        write_atomically(&path, &bytes)
            .map_err(|e| format!("cannot rewrite {}: {e}; is the capture folder writable?", path.display()))?;
        let new_size = bytes.len() as u64;
        let old_size = text.len() as u64;
        index.resize(&entry, new_size, old_size);
        t.stats.bytes.store(index.bytes(), Ordering::Relaxed);
        Ok(())
    }

    /// The tasks that capture.
    pub fn tasks(&self) -> Vec<String> {
        self.inner.tasks.keys().cloned().collect()
    }

    /// The newest `n` kept records whose verdict is not OK, of every capturing task, newest
    /// first: each record's key (`<task>/<date>/<name>`, see [`Capture::record`]), image path and
    /// sidecar (for the operator page's gallery).
    pub fn newest_rejects(&self, n: usize) -> Vec<(String, PathBuf, Value)> {
        let mut found: Vec<(String, String, Entry)> = Vec::new();
        for (name, t) in &self.inner.tasks {
            let index = t.index.lock().unwrap_or_else(|p| p.into_inner());
            found.extend(
                index
                    .newest(n, |e| e.verdict != "OK")
                    .map(|e| (e.sort_key(), format!("{name}/{}", e.place()), e.clone())),
            );
        }
        found.sort_by(|a, b| b.0.cmp(&a.0));
        found
            .into_iter()
            .take(n)
            .filter_map(|(_, key, e)| {
                let doc = serde_json::from_slice(&std::fs::read(e.sidecar()).ok()?).ok()?;
                Some((key, e.image(), doc))
            })
            .collect()
    }

    /// The key of the newest kept record that is not OK: it changes when the gallery does.
    pub fn newest_reject_key(&self) -> Option<String> {
        self.inner
            .tasks
            .iter()
            .filter_map(|(name, t)| {
                let index = t.index.lock().unwrap_or_else(|p| p.into_inner());
                let e = index.newest(1, |e| e.verdict != "OK").next()?;
                Some((e.sort_key(), format!("{name}/{}", e.place())))
            })
            .max()
            .map(|(_, key)| key)
    }

    /// A kept record by its key: its image path and sidecar. Only a record in the index is
    /// found (a key is never joined into a path: no `..` reaches outside the store).
    pub fn record(&self, key: &str) -> Option<(PathBuf, Value)> {
        let (task, place) = key.split_once('/')?;
        let t = self.inner.tasks.get(task)?;
        let e = t.index.lock().unwrap_or_else(|p| p.into_inner()).at_place(place)?.clone();
        let doc = serde_json::from_slice(&std::fs::read(e.sidecar()).ok()?).ok()?;
        Some((e.image(), doc))
    }

    /// Write what is queued, then stop the writer. Records offered afterwards are dropped.
    pub fn stop(&self) {
        let _ = self.inner.tx.send(Job::Stop);
        if let Some(h) = self.inner.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }
}

/// The writer thread: one record at a time, until [`Job::Stop`] or every sender is gone.
fn writer(rx: flume::Receiver<Job>) {
    let mut throttle = Throttle::default();
    while let Ok(job) = rx.recv() {
        let (t, rec) = match job {
            Job::Write(t, rec) => (t, rec),
            Job::Stop => break,
        };
        t.queued.fetch_sub(1, Ordering::AcqRel);
        let task = rec.task.clone();
        match write_record(&t, *rec) {
            Ok(()) => {
                if let Some((for_s, failures)) = throttle.recovered(Instant::now()) {
                    tracing::info!(task = %task, for_s = for_s.as_secs(), failures, "evidence capture writes again");
                }
            }
            Err(why) => {
                t.stats.errors.fetch_add(1, Ordering::Relaxed);
                // Throttled: a full disk fails every record, and must not flood the journal.
                match throttle.failed(Instant::now(), &why) {
                    Some(Report::First) => tracing::warn!(task = %task, "evidence capture: {why}"),
                    Some(Report::Still { repeats, total, for_s }) => {
                        tracing::warn!(task = %task, repeats, total, for_s, "evidence capture: {why} (still; logged once a minute)")
                    }
                    None => {}
                }
            }
        }
    }
}

/// Encode and write one record (image, then sidecar), index it, and trim the store.
fn write_record(t: &TaskStore, rec: Record) -> Result<(), String> {
    let stamp = rfc3339(rec.at);
    let date = &stamp[..10];
    let time: String = stamp[11..23].chars().filter(char::is_ascii_digit).collect();
    let verdict = rec
        .sidecar
        .get("verdict")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| reason_verdict(rec.reason).to_string());
    let ext = t.cfg.format.extension();
    let day = t.dir.join(date);
    crate::util::private_fs::create_dir_all(&day)
        .map_err(|e| format!("cannot create {}: {e}; check the disk and the folder's owner", day.display()))?;
    let stem = format!("{:06}-{verdict}-{time}", rec.part_id);
    let image_path = day.join(format!("{stem}.{ext}"));
    let sidecar_path = day.join(format!("{stem}.json"));
    let encoded = encode(&rec.image, t.cfg.format, t.cfg.jpeg_quality)
        .map_err(|e| format!("cannot encode part {}'s image as {ext}: {e}", rec.part_id))?;
    let mut doc = rec.sidecar;
    if !doc.is_object() {
        doc = json!({ "sidecar": doc });
    }
    doc["image"] = json!(image_path.file_name().map(|n| n.to_string_lossy().to_string()));
    doc["width"] = json!(rec.image.cols());
    doc["height"] = json!(rec.image.rows());
    doc["reason"] = json!(rec.reason);
    doc["review"] = Value::Null;
    let side = serde_json::to_vec_pretty(&doc).map_err(|e| e.to_string())?;
    let hint = "the disk may be full or read-only; free space or set `capture.max_bytes` lower";
    write_atomically(&image_path, &encoded)
        .map_err(|e| format!("cannot write {}: {e}; {hint}", image_path.display()))?;
    if let Err(e) = write_atomically(&sidecar_path, &side) {
        let _ = std::fs::remove_file(&image_path);
        return Err(format!("cannot write {}: {e}; {hint}", sidecar_path.display()));
    }
    let entry = Entry::new(
        day.join(&stem),
        ext,
        date.to_string(),
        time,
        rec.part_id,
        verdict,
        (encoded.len() + side.len()) as u64,
    );
    t.index.lock().unwrap_or_else(|p| p.into_inner()).push(entry);
    t.stats.written.fetch_add(1, Ordering::Relaxed);
    trim(t);
    Ok(())
}

/// Delete the oldest records until the task's store is inside `max_files` and `max_bytes`.
fn trim(t: &TaskStore) {
    let mut index = t.index.lock().unwrap_or_else(|p| p.into_inner());
    let deleted = index.trim(t.cfg.max_files, t.cfg.max_bytes.get());
    t.stats.deleted.fetch_add(deleted, Ordering::Relaxed);
    t.stats.files.store(index.len() as u64, Ordering::Relaxed);
    t.stats.bytes.store(index.bytes(), Ordering::Relaxed);
}

fn reason_verdict(r: Reason) -> &'static str {
    match r {
        Reason::Ng | Reason::Disagreement => "NG",
        Reason::Uncertain => "UNCERTAIN",
        Reason::Error => "ERROR",
        Reason::OkSample => "OK",
    }
}

fn encode(image: &Mat, format: ImageFormat, quality: u8) -> opencv::Result<Vec<u8>> {
    let mut out = Vector::<u8>::new();
    let params: Vector<i32> = match format {
        // Level 3: most of PNG's gain at a fraction of the time of level 9.
        ImageFormat::Png => Vector::from_slice(&[opencv::imgcodecs::IMWRITE_PNG_COMPRESSION, 3]),
        ImageFormat::Jpeg => Vector::from_slice(&[opencv::imgcodecs::IMWRITE_JPEG_QUALITY, i32::from(quality)]),
    };
    let ext = match format {
        ImageFormat::Png => ".png",
        ImageFormat::Jpeg => ".jpg",
    };
    if !opencv::imgcodecs::imencode(ext, image, &mut out, &params)? {
        return Err(opencv::Error::new(opencv::core::StsError, "the encoder refused the image".to_string()));
    }
    Ok(out.to_vec())
}

/// `bytes` into `path` through `<path>.tmp` and a rename: a reader (or a crash) never sees half
/// a file. Flushed before the rename, so a power cut does not leave an empty file under the name.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = crate::util::private_fs::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests;
