//! `linesight eval`: how good is a model on a labelled folder, in the terms
//! a plant decides with: how many defective parts it catches (NG recall) and
//! how many good parts it throws away (false-reject rate), at the model's own
//! threshold and at the threshold that reaches a target recall.
//!
//! Folders: a classifier reads `DIR/<class>/*.png|jpg` (class names as in
//! its contract); a detector reads YOLO label files where Ultralytics looks
//! for them (`…/images/…/x.png` → `…/labels/…/x.txt`), or `x.txt` next to
//! the image outside an `images` folder (an empty or missing file is a good part).
//!
//! Every kind of model also takes the plain layout a user has before any
//! labelling tool: `DIR/good/` and any other folders (`defect/`, `scratch/`,
//! `rejects-tuesday/`), each of them NG. A classifier falls back to it when a
//! folder is not one of its classes, a detector when `DIR` holds folders and
//! no images or `images/`; an anomaly model always reads it. The verdict is
//! then judged per image against its folder, and the report gives each
//! folder's share called NG.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use opencv::core::Mat;
use serde_json::{json, Value};

use crate::cli::infer::{self, Model};
use crate::inference::anomaly::Anomaly;
use crate::inference::detector::Detector;
use crate::part::Detection;
use crate::util::percentiles::percentiles;

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// The ONNX model (a linesight classifier, an Ultralytics YOLO detection export, or an anomalib export with its sidecar).
    #[arg(long)]
    pub model: PathBuf,
    /// The labelled folder.
    #[arg(long)]
    pub data: PathBuf,
    /// One JSON document instead of a report.
    #[arg(long)]
    pub json: bool,
    /// The NG recall the suggested threshold must reach.
    #[arg(long, default_value_t = 0.99)]
    pub target_recall: f64,
    /// Detectors: the confidence at which a detection counts (the operating point).
    #[arg(long, default_value_t = 0.25)]
    pub conf: f32,
    /// Detectors: NMS overlap.
    #[arg(long, default_value_t = 0.7)]
    pub iou: f32,
    /// Inference threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Decode JPEG images at `1/2`, `1/4` or `1/8` per side, as a camera with that `decode` does
    /// (libjpeg's DCT scaling), to measure what reduced decoding does to the model's figures;
    /// `full` (the default) decodes them whole. Labels are scaled with the image.
    #[arg(long, default_value = "full", value_parser = infer::parse_decode)]
    pub decode: u32,
}

/// One labelled image.
struct Sample {
    path: PathBuf,
    /// Classifier: the true class; detector: the labelled boxes (class, xyxy in pixels once read).
    truth: Truth,
}

enum Truth {
    Class(String),
    Boxes(PathBuf),
}

fn images_in(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: cannot list: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg" | "bmp" | "tif" | "tiff")
            })
        })
        .collect();
    v.sort();
    Ok(v)
}

fn classifier_samples(dir: &Path, classes: &[String]) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for class in classes {
        let d = dir.join(class);
        if d.is_dir() {
            out.extend(images_in(&d)?.into_iter().map(|path| Sample { path, truth: Truth::Class(class.clone()) }));
        }
    }
    if out.is_empty() {
        return Err(format!("{}: no images in class folders {classes:?}", dir.display()));
    }
    Ok(out)
}

/// The plain layout (anomalib's and MVTec's too): the folders named in `ok`
/// (`good/`) hold good parts, every other folder defective ones (named for
/// the defect, or just `defect`).
fn folder_samples(dir: &Path, ok: &[String]) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    let mut folders: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: cannot list: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    folders.sort();
    for d in folders {
        let name = d.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        out.extend(images_in(&d)?.into_iter().map(|path| Sample { path, truth: Truth::Class(name.clone()) }));
    }
    let good = out.iter().filter(|s| matches!(&s.truth, Truth::Class(f) if ok.contains(f))).count();
    if good == 0 || good == out.len() {
        return Err(format!(
            "{}: expected good parts in {} and defective ones in at least one other folder (e.g. `defect/` or `scratch/`); \
             found {good} good and {} defective images",
            dir.display(),
            ok.iter().map(|k| format!("`{k}/`")).collect::<Vec<_>>().join(" or "),
            out.len() - good
        ));
    }
    Ok(out)
}

/// Whether a folder is laid out by the model's class names: every sub-folder is one of them.
fn laid_out_by_class(dir: &Path, classes: &[String]) -> Result<bool, String> {
    for e in std::fs::read_dir(dir).map_err(|e| format!("{}: cannot list: {e}", dir.display()))?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if e.path().is_dir() && !name.starts_with('.') && !classes.contains(&name) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A detector's folder is the plain layout when it holds sub-folders but no
/// `images/` and no images of its own (those are read with YOLO labels).
fn detector_plain_layout(dir: &Path) -> Result<bool, String> {
    if dir.join("images").is_dir() || !images_in(dir)?.is_empty() {
        return Ok(false);
    }
    Ok(std::fs::read_dir(dir)
        .map_err(|e| format!("{}: cannot list: {e}", dir.display()))?
        .flatten()
        .any(|e| e.path().is_dir()))
}

fn detector_samples(dir: &Path) -> Result<Vec<Sample>, String> {
    let images = if dir.join("images").is_dir() { dir.join("images") } else { dir.to_path_buf() };
    let out: Vec<Sample> =
        images_in(&images)?.into_iter().map(|path| Sample { truth: Truth::Boxes(label_path(&path)), path }).collect();
    if out.is_empty() {
        return Err(format!("{}: no images", images.display()));
    }
    Ok(out)
}

/// Ultralytics' rule: the last `/images/` of the path becomes `/labels/`, the
/// extension `.txt`; without an `images` folder the label sits beside the image.
fn label_path(image: &Path) -> PathBuf {
    let s = image.to_string_lossy();
    match s.rfind("/images/") {
        Some(i) => PathBuf::from(format!("{}/labels/{}", &s[..i], &s[i + "/images/".len()..])).with_extension("txt"),
        None => image.with_extension("txt"),
    }
}

/// YOLO label lines `class cx cy w h` (normalised) to pixel boxes.
fn read_labels(path: &Path, w: f32, h: f32, nc: usize) -> Result<Vec<(usize, [f32; 4])>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let f: Vec<f32> = l
                .split_whitespace()
                .map(|x| x.parse::<f32>())
                .collect::<Result<_, _>>()
                .map_err(|_| format!("{}:{}: expected `class cx cy w h` (numbers)", path.display(), i + 1))?;
            let polygon = f.len() >= 7 && f.len() % 2 == 1;
            if (f.len() != 5 && !polygon) || f[0] < 0.0 || f[0] as usize >= nc {
                return Err(format!(
                    "{}:{}: expected `class cx cy w h` (or a segment `class x1 y1 x2 y2 x3 y3 ...`) with class below {nc}",
                    path.display(),
                    i + 1
                ));
            }
            if polygon {
                // A segmentation label: its box is the polygon's extent, as Ultralytics takes it.
                let (xs, ys): (Vec<f32>, Vec<f32>) = f[1..].chunks(2).map(|p| (p[0] * w, p[1] * h)).unzip();
                let min = |v: &[f32]| v.iter().copied().fold(f32::INFINITY, f32::min);
                let max = |v: &[f32]| v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                return Ok((f[0] as usize, [min(&xs), min(&ys), max(&xs), max(&ys)]));
            }
            let (cx, cy, bw, bh) = (f[1] * w, f[2] * h, f[3] * w, f[4] * h);
            Ok((f[0] as usize, [cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0]))
        })
        .collect()
}

/// Area under the ROC curve of `scores` for positives vs negatives (ties count half).
pub fn auroc(pos: &[f64], neg: &[f64]) -> Option<f64> {
    if pos.is_empty() || neg.is_empty() {
        return None;
    }
    let mut wins = 0.0;
    for p in pos {
        for n in neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    Some(wins / (pos.len() * neg.len()) as f64)
}

/// The highest threshold whose recall (score >= threshold) reaches `target`, and the share of negatives at or above it.
pub fn threshold_for_recall(pos: &[f64], neg: &[f64], target: f64) -> Option<(f64, f64, f64)> {
    if pos.is_empty() {
        return None;
    }
    let mut p = pos.to_vec();
    p.sort_by(|a, b| b.total_cmp(a));
    let need = ((target * p.len() as f64).ceil() as usize).clamp(1, p.len());
    let t = p[need - 1];
    let recall = p.iter().filter(|s| **s >= t).count() as f64 / p.len() as f64;
    let frr = if neg.is_empty() { 0.0 } else { neg.iter().filter(|s| **s >= t).count() as f64 / neg.len() as f64 };
    Some((t, recall, frr))
}

struct Progress {
    on: bool,
    total: usize,
}

impl Progress {
    fn tick(&self, done: usize) {
        if self.on {
            let width = 30;
            let filled = done * width / self.total.max(1);
            eprint!("\r[{}{}] {done}/{}", "=".repeat(filled), " ".repeat(width - filled), self.total);
            let _ = std::io::stderr().flush();
            if done == self.total {
                eprintln!();
            }
        }
    }
}

fn prf(tp: usize, fp: usize, fn_: usize) -> Value {
    let p = if tp + fp > 0 { tp as f64 / (tp + fp) as f64 } else { 0.0 };
    let r = if tp + fn_ > 0 { tp as f64 / (tp + fn_) as f64 } else { 0.0 };
    let f1 = if p + r > 0.0 { 2.0 * p * r / (p + r) } else { 0.0 };
    json!({"tp": tp, "fp": fp, "fn": fn_, "precision": r4(p), "recall": r4(r), "f1": r4(f1)})
}

fn r4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// Image-level outcomes at the operating point, and every image's NG score
/// (for AUROC and the threshold for a target recall).
#[derive(Default)]
struct Tally {
    tp: usize,
    fp: usize,
    tn: usize,
    fn_: usize,
    pos: Vec<f64>,
    neg: Vec<f64>,
}

impl Tally {
    fn add(&mut self, is_ng: bool, said_ng: bool, score: f64) {
        match (is_ng, said_ng) {
            (true, true) => self.tp += 1,
            (true, false) => self.fn_ += 1,
            (false, true) => self.fp += 1,
            (false, false) => self.tn += 1,
        }
        if is_ng {
            self.pos.push(score)
        } else {
            self.neg.push(score)
        }
    }

    /// The `operating_point` member: `key` names what set it (threshold, conf).
    fn operating_point(&self, key: &str, value: f64) -> Value {
        let (tp, fp, tn, fn_) = (self.tp, self.fp, self.tn, self.fn_);
        json!({key: value, "tp": tp, "fn": fn_, "fp": fp, "tn": tn,
            "ng_recall": r4(tp as f64 / (tp + fn_).max(1) as f64),
            "false_reject_rate": r4(fp as f64 / (fp + tn).max(1) as f64)})
    }
}

/// What the scoring loops collect, whatever the kind of model.
struct Scoring {
    /// Image-level outcomes and NG scores, for AUROC and the threshold.
    tally: Tally,
    /// Inference time per image, ms.
    latency: Vec<f64>,
    /// Why each unreadable image could not be read (they are skipped, and listed in the report).
    unreadable: Vec<String>,
    /// A progress bar on stderr: only on a terminal, and never under `--json`.
    show_progress: bool,
    /// `--decode`: the reduction per side images are decoded at.
    decode: u32,
}

impl Scoring {
    fn new(args: &EvalArgs) -> Self {
        Scoring {
            tally: Tally::default(),
            latency: Vec::new(),
            unreadable: Vec::new(),
            show_progress: std::io::stderr().is_terminal() && !args.json,
            decode: args.decode,
        }
    }

    fn progress(&self, total: usize) -> Progress {
        Progress { on: self.show_progress, total }
    }

    /// The image of a sample, or `None` (noted as unreadable) when it cannot be decoded.
    fn read(&mut self, path: &Path) -> Option<Mat> {
        let read = if self.decode > 1 { infer::read_reduced(path, self.decode) } else { infer::read_image(path) };
        match read {
            Ok(frame) => Some(frame),
            Err(e) => {
                self.unreadable.push(e);
                None
            }
        }
    }
}

/// Load the model, score every labelled image of the folder with it, and
/// report in the plant's terms (see the module documentation).
pub fn main(args: EvalArgs) -> Result<Value, String> {
    let mut model = infer::load(&args.model, args.threads)?;
    let mut scoring = Scoring::new(&args);
    let report = match &mut model {
        Model::Anomaly(a) => eval_anomaly(a, &args, &mut scoring)?,
        m @ (Model::Classifier(_) | Model::YoloClassify(_)) => eval_classifier(m, &args, &mut scoring)?,
        Model::Detector(d) => eval_detector(d, &args, &mut scoring)?,
    };
    complete_report(report, scoring, &args)
}

/// What the plain layout reports: per folder, its images and how many were
/// called NG (in folder order).
#[derive(Default)]
struct Folders(BTreeMap<String, (usize, usize)>);

impl Folders {
    fn add(&mut self, folder: &str, said_ng: bool) {
        let f = self.0.entry(folder.to_string()).or_default();
        f.0 += 1;
        f.1 += usize::from(said_ng);
    }

    /// The `per_folder` member: a folder of good parts gives its
    /// false-reject rate, every other folder its NG recall.
    fn report(&self, ok: &[String]) -> serde_json::Map<String, Value> {
        self.0
            .iter()
            .map(|(k, (n, ng))| {
                let rate = *ng as f64 / (*n).max(1) as f64;
                let v = if ok.contains(k) {
                    json!({"images": n, "called_ng": ng, "false_reject_rate": r4(rate)})
                } else {
                    json!({"images": n, "called_ng": ng, "ng_recall": r4(rate)})
                };
                (k.clone(), v)
            })
            .collect()
    }
}

/// The members every plain-layout report has: the OK/NG confusion, per-folder shares, the layout.
fn plain_layout_members(report: &mut Value, tally: &Tally, folders: &Folders, ok: &[String]) {
    report["layout"] = json!("folders");
    report["ok_folders"] = json!(ok);
    report["confusion"] = json!({"rows_true_columns_predicted": [[tally.tn, tally.fp], [tally.fn_, tally.tp]], "labels": ["good", "defect"]});
    report["per_folder"] = Value::Object(folders.report(ok));
}

/// An anomaly model on `good/` and defect folders: NG when the score reaches
/// the model's own threshold; also the share called NG per folder.
fn eval_anomaly(a: &mut Anomaly, args: &EvalArgs, scoring: &mut Scoring) -> Result<Value, String> {
    let threshold = f64::from(a.contract.threshold);
    let ok = ["good".to_string()];
    let samples = folder_samples(&args.data, &ok)?;
    let bar = scoring.progress(samples.len());
    let mut folders = Folders::default();
    for (i, s) in samples.iter().enumerate() {
        bar.tick(i + 1);
        let Truth::Class(folder) = &s.truth else { continue };
        let Some(frame) = scoring.read(&s.path) else { continue };
        let (mut out, timing) = a.score_many(&[&frame])?;
        scoring.latency.push(timing.inference_ms);
        let score = f64::from(out.pop().map_or(f32::NAN, |r| r.score));
        let said_ng = score >= threshold;
        folders.add(folder, said_ng);
        scoring.tally.add(!ok.contains(folder), said_ng, score);
    }
    let tally = &scoring.tally;
    let mut report = json!({
        "kind": "anomaly",
        "classes": ["good", "defect"],
        "per_class": {"defect": prf(tally.tp, tally.fp, tally.fn_), "good": prf(tally.tn, tally.fn_, tally.fp)},
        "operating_point": tally.operating_point("threshold", threshold),
    });
    plain_layout_members(&mut report, tally, &folders, &ok);
    Ok(report)
}

/// A classifier (linesight's or Ultralytics') on class folders: the
/// confusion matrix of the top class, and NG when the probability of the
/// NG classes together reaches the model's threshold (0.5 without one).
/// On the plain layout (a folder that is not one of its classes), the folders
/// named as its OK classes are good parts and every other folder NG.
fn eval_classifier(m: &mut Model, args: &EvalArgs, scoring: &mut Scoring) -> Result<Value, String> {
    let (classes, ok_mask, own) = m.class_contract(&[]).unwrap_or_else(|| Err("not a classifier".into()))?;
    let threshold = own.unwrap_or(0.5);
    let kind = if matches!(m, Model::Classifier(_)) { "classifier" } else { "yolo-classify" };
    let ok: Vec<String> = classes.iter().zip(&ok_mask).filter(|(_, ok)| **ok).map(|(c, _)| c.clone()).collect();
    let by_class = laid_out_by_class(&args.data, &classes)?;
    let samples = if by_class { classifier_samples(&args.data, &classes)? } else { folder_samples(&args.data, &ok)? };
    let bar = scoring.progress(samples.len());
    let mut confusion = vec![vec![0usize; classes.len()]; classes.len()];
    let mut folders = Folders::default();
    for (i, s) in samples.iter().enumerate() {
        bar.tick(i + 1);
        let Truth::Class(truth) = &s.truth else { continue };
        let Some(frame) = scoring.read(&s.path) else { continue };
        let (mut out, timing) = m.infer(&[&frame], 0.0, 0.0)?;
        scoring.latency.push(timing.inference_ms);
        let Some(crate::part::ModelOutput::Probs(probs)) = out.pop() else {
            return Err("the classifier returned no probabilities".into());
        };
        let ng: f64 = 1.0 - probs.iter().zip(&ok_mask).filter(|(_, ok)| **ok).map(|(p, _)| f64::from(*p)).sum::<f64>();
        let said_ng = ng >= f64::from(threshold);
        if by_class {
            let t = classes.iter().position(|k| k == truth).unwrap_or(0);
            let p = probs.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0);
            confusion[t][p] += 1;
        }
        folders.add(truth, said_ng);
        scoring.tally.add(!ok.contains(truth), said_ng, ng);
    }
    let mut report = json!({
        "kind": kind,
        "classes": classes,
        "operating_point": scoring.tally.operating_point("ng_threshold", f64::from(threshold)),
    });
    if by_class {
        report["layout"] = json!("classes");
        report["confusion"] = json!({"rows_true_columns_predicted": confusion});
        report["per_class"] = Value::Object(per_class_of_confusion(&classes, &confusion));
    } else {
        plain_layout_members(&mut report, &scoring.tally, &folders, &ok);
    }
    Ok(report)
}

/// Precision, recall and F1 of each class, read off the confusion matrix
/// (rows: true class, columns: predicted).
fn per_class_of_confusion(classes: &[String], confusion: &[Vec<usize>]) -> serde_json::Map<String, Value> {
    classes
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let tp = confusion[k][k];
            let fp = (0..classes.len()).filter(|&t| t != k).map(|t| confusion[t][k]).sum();
            let fn_ = (0..classes.len()).filter(|&p| p != k).map(|p| confusion[k][p]).sum();
            (name.clone(), prf(tp, fp, fn_))
        })
        .collect()
}

/// A detector on YOLO-labelled images: boxes matched per class at IoU 0.5,
/// and an image is NG when it has a detection above `--conf`. On the plain
/// layout (`good/` + defect folders, no labels) only the image-level verdict
/// is judged, against the folder.
fn eval_detector(d: &mut Detector, args: &EvalArgs, scoring: &mut Scoring) -> Result<Value, String> {
    let names = d.meta.names.clone();
    let nc = names.len();
    let plain = detector_plain_layout(&args.data)?;
    let ok = ["good".to_string()];
    let samples = if plain { folder_samples(&args.data, &ok)? } else { detector_samples(&args.data)? };
    let bar = scoring.progress(samples.len());
    // Per class: (true positives, false positives, false negatives), in boxes.
    let mut counts = vec![(0usize, 0usize, 0usize); nc];
    let mut folders = Folders::default();
    for (i, s) in samples.iter().enumerate() {
        bar.tick(i + 1);
        let Some(frame) = scoring.read(&s.path) else { continue };
        // Low confidence, so that the image score covers the whole range; the operating point filters.
        let (all, timing) = d.detect(&frame, 0.001, args.iou)?;
        scoring.latency.push(timing.inference_ms);
        let score = all.first().map_or(0.0, |x| f64::from(x.score));
        let dets: Vec<&Detection> = all.iter().filter(|x| x.score > args.conf).collect();
        let is_ng = match &s.truth {
            Truth::Boxes(label) => {
                use opencv::prelude::MatTraitConst;
                let truth = read_labels(label, frame.cols() as f32, frame.rows() as f32, nc)?;
                count_box_matches(&truth, &dets, &mut counts);
                !truth.is_empty()
            }
            Truth::Class(folder) => {
                folders.add(folder, !dets.is_empty());
                !ok.contains(folder)
            }
        };
        scoring.tally.add(is_ng, !dets.is_empty(), score);
    }
    let mut report = json!({
        "kind": format!("yolo-{}", d.meta.task),
        "classes": names,
        "operating_point": scoring.tally.operating_point("conf", f64::from(args.conf)),
    });
    if plain {
        plain_layout_members(&mut report, &scoring.tally, &folders, &ok);
    } else {
        report["layout"] = json!("yolo-labels");
        report["per_class_boxes_iou_0_5"] = Value::Object(
            names.iter().zip(&counts).map(|(n, (tp, fp, fn_))| (n.clone(), prf(*tp, *fp, *fn_))).collect(),
        );
    }
    Ok(report)
}

/// Match one image's detections to its labelled boxes, greedily in the
/// detections' order (highest score first): each takes the unmatched box of
/// its class it overlaps most, if at IoU 0.5 or more. Adds to `counts` per
/// class: matched detections (tp), unmatched detections (fp), unmatched boxes (fn).
fn count_box_matches(truth: &[(usize, [f32; 4])], dets: &[&Detection], counts: &mut [(usize, usize, usize)]) {
    let mut matched = vec![false; truth.len()];
    for det in dets {
        let best = truth
            .iter()
            .enumerate()
            .filter(|(j, (c, _))| !matched[*j] && *c == det.class_id)
            .map(|(j, (_, b))| (j, crate::inference::yolo::iou_of(b, &det.bbox)))
            .filter(|(_, o)| *o >= 0.5)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((j, _)) => {
                matched[j] = true;
                counts[det.class_id].0 += 1;
            }
            None => counts[det.class_id].1 += 1,
        }
    }
    for (j, (c, _)) in truth.iter().enumerate() {
        if !matched[j] {
            counts[*c].2 += 1;
        }
    }
}

/// What every report has whatever the model: image counts, AUROC, the
/// threshold for the target recall, inference time, what was evaluated.
/// An error when no image at all could be read.
fn complete_report(mut report: Value, scoring: Scoring, args: &EvalArgs) -> Result<Value, String> {
    let Scoring { tally: Tally { pos, neg, .. }, mut latency, unreadable, .. } = scoring;
    if pos.is_empty() && neg.is_empty() {
        return Err(format!(
            "{}: no image could be read ({} tried; first: {})",
            args.data.display(),
            unreadable.len(),
            unreadable.first().map_or("-", String::as_str)
        ));
    }
    let lat = percentiles(&mut latency);
    report["images"] = json!({"ng": pos.len(), "ok": neg.len(), "unreadable": unreadable});
    report["auroc_ng_score"] = json!(auroc(&pos, &neg).map(r4));
    report["for_target_recall"] = match threshold_for_recall(&pos, &neg, args.target_recall) {
        Some((t, recall, frr)) => {
            json!({"target": args.target_recall, "threshold": r4(t), "ng_recall": r4(recall), "false_reject_rate": r4(frr)})
        }
        None => Value::Null,
    };
    report["inference_ms"] = json!({"p50": lat.p50, "p99": lat.p99, "n": lat.n});
    report["model"] = json!(args.model.display().to_string());
    report["data"] = json!(args.data.display().to_string());
    report["decode"] = json!(if args.decode > 1 { format!("1/{}", args.decode) } else { "full".to_string() });
    Ok(report)
}

/// The report as text.
pub fn print_text(r: &Value) {
    println!("model {}  data {}  ({})", r["model"], r["data"], r["kind"]);
    println!(
        "images: {} NG, {} OK, {} unreadable",
        r["images"]["ng"],
        r["images"]["ok"],
        r["images"]["unreadable"].as_array().map_or(0, Vec::len)
    );
    let op = &r["operating_point"];
    println!(
        "at the model's operating point: NG recall {}  false-reject rate {}  (tp {} fn {} fp {} tn {})",
        op["ng_recall"], op["false_reject_rate"], op["tp"], op["fn"], op["fp"], op["tn"]
    );
    if let Some(t) = r["for_target_recall"].as_object() {
        println!(
            "for NG recall >= {}: threshold {} gives recall {} at a false-reject rate of {}",
            t["target"], t["threshold"], t["ng_recall"], t["false_reject_rate"]
        );
    }
    println!("AUROC of the NG score: {}", r["auroc_ng_score"]);
    let per = r.get("per_class").or_else(|| r.get("per_class_boxes_iou_0_5"));
    if let Some(per) = per.and_then(Value::as_object) {
        for (k, v) in per {
            println!("  {k:<12} precision {}  recall {}  f1 {}", v["precision"], v["recall"], v["f1"]);
        }
    }
    if let Some(per) = r["per_folder"].as_object() {
        println!("per folder (good parts in {}, every other folder NG):", r["ok_folders"]);
        for (k, v) in per {
            let (what, rate) = match v.get("ng_recall") {
                Some(x) => ("NG recall", x),
                None => ("false-reject rate", &v["false_reject_rate"]),
            };
            println!("  {k:<12} {} images, {} called NG: {what} {rate}", v["images"], v["called_ng"]);
        }
    }
    if let Some(c) = r.pointer("/confusion/rows_true_columns_predicted").and_then(Value::as_array) {
        let order = r.pointer("/confusion/labels").unwrap_or(&r["classes"]);
        println!("confusion (rows: true, columns: predicted, order {order}):");
        for row in c {
            println!("  {row}");
        }
    }
    println!(
        "inference ms p50 {} p99 {} (n {})",
        r["inference_ms"]["p50"], r["inference_ms"]["p99"], r["inference_ms"]["n"]
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_and_threshold() {
        assert_eq!(auroc(&[0.9, 0.8], &[0.1, 0.2]), Some(1.0));
        assert_eq!(auroc(&[0.5], &[0.5]), Some(0.5));
        assert_eq!(auroc(&[], &[0.5]), None);
        let pos: Vec<f64> = (1..=100).map(|i| f64::from(i) / 100.0).collect();
        let neg = [0.0, 0.005, 0.02, 0.5];
        let (t, recall, frr) = threshold_for_recall(&pos, &neg, 0.99).unwrap();
        assert_eq!(t, 0.02);
        assert!(recall >= 0.99);
        assert_eq!(frr, 0.5, "0.02 and 0.5 of four good parts are at or above it");
    }

    #[test]
    fn label_paths_follow_ultralytics() {
        assert_eq!(label_path(Path::new("/d/images/test/a.png")), PathBuf::from("/d/labels/test/a.txt"));
        assert_eq!(label_path(Path::new("/d/images/a.jpg")), PathBuf::from("/d/labels/a.txt"));
        assert_eq!(label_path(Path::new("/d/x/a.png")), PathBuf::from("/d/x/a.txt"));
    }

    #[test]
    fn segment_labels_count_as_the_box_around_the_polygon() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        std::fs::write(&p, "1 0.1 0.2 0.3 0.2 0.2 0.5\n").unwrap();
        let got = read_labels(&p, 100.0, 200.0, 3).unwrap();
        assert_eq!(got.len(), 1);
        let (c, b) = got[0];
        assert_eq!(c, 1);
        for (x, y) in b.iter().zip([10.0, 40.0, 30.0, 100.0]) {
            assert!((x - y).abs() < 1e-4, "{b:?}");
        }
    }

    #[test]
    fn yolo_labels_are_read_in_pixels_and_bad_lines_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        std::fs::write(&p, "1 0.5 0.5 0.2 0.4\n\n").unwrap();
        assert_eq!(read_labels(&p, 100.0, 50.0, 2).unwrap(), vec![(1, [40.0, 15.0, 60.0, 35.0])]);
        std::fs::write(&p, "0 0.5 0.5\n").unwrap();
        assert!(read_labels(&p, 100.0, 50.0, 2).unwrap_err().contains("a.txt:1"));
        std::fs::write(&p, "5 0.5 0.5 0.1 0.1\n").unwrap();
        assert!(read_labels(&p, 100.0, 50.0, 2).is_err());
        assert!(read_labels(&dir.path().join("none.txt"), 1.0, 1.0, 2).unwrap().is_empty());
    }
}
