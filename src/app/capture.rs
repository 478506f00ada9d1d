//! Evidence capture, wired: the node's [`Capture`] store, and each capturing task's
//! [`Keeper`], which turns a judged part's [`Shot`] into a [`Record`] with its sidecar (adding
//! what the controller does not know: the model's SHA-256 and kind, the config's hash, the OK
//! classes).

use std::sync::{Arc, RwLock};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::capture::{Capture, Reason, Record, TaskCapture};
use crate::config::Config;
use crate::part::view::{Keeper, Shot};
use crate::part::Verdict;
use crate::stats::CaptureStats;

/// Each capturing task's figures, by task.
pub type Figures = Vec<(String, Arc<CaptureStats>)>;

/// The store of every task with `capture`, started; None when no task captures.
pub fn start(config: &Config) -> Result<Option<(Capture, Figures)>, String> {
    let tasks: Vec<TaskCapture> = config
        .tasks
        .iter()
        .filter_map(|(name, t)| {
            let c = t.capture.clone()?;
            Some(TaskCapture { task: name.clone(), config: c, stats: Arc::new(CaptureStats::default()) })
        })
        .collect();
    if tasks.is_empty() {
        return Ok(None);
    }
    let stats = tasks.iter().map(|t| (t.task.clone(), t.stats.clone())).collect();
    Ok(Some((Capture::start(&config.runtime.state_dir, tasks)?, stats)))
}

/// The first 16 hex digits of the SHA-256 of the validated config (as JSON): which settings a
/// record was judged under. Comments and key order in the file do not change it.
pub fn config_hash(config: &Config) -> String {
    let text = serde_json::to_vec(config).unwrap_or_default();
    let digest = Sha256::digest(&text);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// One task's way into the store.
pub struct TaskKeeper {
    pub capture: Capture,
    pub task: String,
    /// The task's model as the stats report it (replaced by a reload that changes the model).
    pub model_doc: Arc<RwLock<Value>>,
    /// The classes that mean a good part (classifiers), for the sidecar's `ng_class`.
    pub ok_classes: Vec<String>,
    pub uncertain_from: Option<f64>,
    pub config_hash: Arc<str>,
}

impl Keeper for TaskKeeper {
    fn wants(&self, verdict: Verdict) -> bool {
        match verdict {
            Verdict::Ok => self.capture.wants_ok(&self.task),
            v => self.capture.keeps(&self.task, reason(v)),
        }
    }

    fn keep(&self, mut shot: Shot) {
        let Some(image) = shot.image.take() else { return };
        let sidecar = self.sidecar(&shot);
        let rec = Record {
            task: self.task.clone(),
            camera: shot.camera.to_string(),
            part_id: shot.part_id,
            at: shot.captured,
            reason: reason(shot.verdict),
            image,
            sidecar,
        };
        self.capture.offer(&self.task, rec);
    }
}

impl TaskKeeper {
    /// Everything known about a judged part, as its capture sidecar says it (docs/capture.md).
    /// Shadow mode builds a disagreement's sidecar from this and adds the candidate's judgement.
    pub fn sidecar(&self, shot: &Shot) -> Value {
        let model = self.model_doc.read().unwrap_or_else(|p| p.into_inner()).clone();
        json!({
            "part_id": shot.part_id,
            "at": crate::util::time::rfc3339(shot.captured),
            "task": &*shot.task,
            "camera": &*shot.camera,
            "verdict": shot.verdict.as_str(),
            "model": {
                "name": model.get("name"),
                "version": model.get("version"),
                "sha256": model.get("sha256"),
                "kind": model.get("kind"),
                "label": &*shot.model,
            },
            "ng_threshold": round6(shot.threshold),
            "uncertain_from": self.uncertain_from,
            "config_hash": &*self.config_hash,
            "ng_score": round6(shot.ng_score),
            "classes": &*shot.classes,
            "scores": shot.scores,
            "ng_class": ng_class(&shot.classes, &shot.scores, &self.ok_classes, &shot.detections),
            "detections": shot.detections,
            "error": shot.error,
            "image_scale": shot.image_scale,
        })
    }
}

/// A threshold or score as it was set or read (0.66, not 0.6600000262260437: an f32 widened).
fn round6(x: f32) -> f64 {
    (f64::from(x) * 1e6).round() / 1e6
}

fn reason(v: Verdict) -> Reason {
    match v {
        Verdict::Ok => Reason::OkSample,
        Verdict::Ng => Reason::Ng,
        Verdict::Uncertain => Reason::Uncertain,
        Verdict::Error => Reason::Error,
    }
}

/// The defect class a part would be filed under: a detector's best box's class, else a
/// classifier's most likely class that is not an OK class; None for anomaly models (export
/// says `defect`).
fn ng_class(
    classes: &[String],
    scores: &[f32],
    ok: &[String],
    detections: &[crate::part::Detection],
) -> Option<String> {
    if let Some(best) = detections.iter().max_by(|a, b| a.score.total_cmp(&b.score)) {
        return Some(best.class.clone());
    }
    classes
        .iter()
        .zip(scores)
        .filter(|(c, _)| !ok.contains(c))
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(c, _)| c.clone())
}

/// A shadow-mode disagreement as a capture record (reason `disagreement`): the frame both models
/// judged, production's judgement as for any captured part, and the candidate's beside it under
/// `candidate`. For `Matcher`'s `on_disagreement`:
/// `capture.offer(&d.task, disagreement_record(d, &hash))` when `capture.has(&d.task)`.
pub fn disagreement_record(d: super::shadow::Disagreement, config_hash: &str) -> Record {
    let p = &d.production;
    let j = &p.judgement;
    let (name, version) = p.model.split_once('@').unwrap_or((&p.model, ""));
    let c = &d.candidate;
    let sidecar = json!({
        "part_id": j.part.part_id,
        "at": crate::util::time::rfc3339(j.part.captured_wall),
        "task": &*d.task,
        "camera": &*j.part.camera,
        "verdict": j.verdict.as_str(),
        "model": { "name": name, "version": version, "label": &*p.model },
        "ng_threshold": round6(j.part.stamp.threshold),
        "config_hash": config_hash,
        "ng_score": round6(j.ng_score),
        "classes": &*p.classes,
        "scores": j.scores,
        // The task's OK classes are not known here: a detector's best box's class, else export's `defect`.
        "ng_class": ng_class(&[], &[], &[], &j.detections),
        "detections": j.detections,
        "error": j.error,
        "image_scale": d.scale,
        "candidate": {
            "label": &*d.candidate_label,
            "verdict": c.verdict.as_str(),
            "ng_score": round6(c.ng_score),
            "scores": c.scores,
            "detections": c.detections,
            "error": c.error,
        },
    });
    Record {
        task: d.task.to_string(),
        camera: j.part.camera.to_string(),
        part_id: j.part.part_id,
        at: j.part.captured_wall,
        reason: Reason::Disagreement,
        image: d.image,
        sidecar,
    }
}

/// The capture store as the operator page's gallery reads it.
pub struct StoreView(pub Capture);

impl crate::part::view::Stored for StoreView {
    fn tasks(&self) -> Vec<String> {
        self.0.tasks()
    }

    fn head(&self) -> Option<String> {
        self.0.newest_reject_key()
    }

    fn newest(&self, n: usize) -> Vec<crate::part::view::StoredShot> {
        self.0.newest_rejects(n).into_iter().map(|(key, _, doc)| stored_shot(key, &doc, None)).collect()
    }

    fn get(&self, key: &str) -> Option<crate::part::view::StoredShot> {
        let (image, doc) = self.0.record(key)?;
        let path = image.to_str()?;
        let mat = opencv::imgcodecs::imread(path, opencv::imgcodecs::IMREAD_COLOR).ok()?;
        Some(stored_shot(key.to_string(), &doc, Some(mat)))
    }
}

/// A sidecar read back as the shot it was written from (the page draws it like a live one).
fn stored_shot(key: String, doc: &Value, image: Option<opencv::core::Mat>) -> crate::part::view::StoredShot {
    let text = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let num = |v: Option<&Value>| v.and_then(Value::as_f64).map_or(f32::NAN, |x| x as f32);
    let at = doc
        .get("at")
        .and_then(Value::as_str)
        .and_then(crate::util::time::parse_rfc3339_ms)
        .map_or(std::time::UNIX_EPOCH, |ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64));
    let verdict = match doc.get("verdict").and_then(Value::as_str) {
        Some("OK") => Verdict::Ok,
        Some("NG") => Verdict::Ng,
        Some("UNCERTAIN") => Verdict::Uncertain,
        _ => Verdict::Error,
    };
    let detections = doc
        .get("detections")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|d| {
                    let b: Vec<f32> =
                        d.get("box")?.as_array()?.iter().filter_map(Value::as_f64).map(|x| x as f32).collect();
                    Some(crate::part::Detection {
                        class: d.get("class")?.as_str()?.to_string(),
                        class_id: d.get("class_id").and_then(Value::as_u64).unwrap_or(0) as usize,
                        score: d.get("score").and_then(Value::as_f64).unwrap_or(0.0) as f32,
                        bbox: <[f32; 4]>::try_from(b).ok()?,
                        mask_area: d.get("mask_area").and_then(Value::as_u64),
                        mask: None,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let strings = |k: &str| -> Vec<String> {
        doc.get(k)
            .and_then(Value::as_array)
            .map_or_else(Vec::new, |a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
    };
    let shot = Shot {
        seq: 0,
        task: text("task").into(),
        camera: text("camera").into(),
        part_id: doc.get("part_id").and_then(Value::as_u64).unwrap_or(0),
        captured: at,
        verdict,
        model: doc.pointer("/model/label").and_then(Value::as_str).unwrap_or("").into(),
        classes: strings("classes").into(),
        scores: doc
            .get("scores")
            .and_then(Value::as_array)
            .map_or_else(Vec::new, |a| a.iter().map(|v| num(Some(v))).collect()),
        ng_score: num(doc.get("ng_score")),
        threshold: num(doc.get("ng_threshold")),
        detections,
        heat: None,
        error: doc.get("error").and_then(Value::as_str).map(str::to_string),
        image,
        image_scale: doc.get("image_scale").and_then(Value::as_u64).unwrap_or(1) as u32,
    };
    crate::part::view::StoredShot { key, shot, review: doc.get("review").cloned().unwrap_or(Value::Null) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ng_class_is_the_best_box_else_the_likeliest_defect_class() {
        let classes = vec!["good".to_string(), "scratch".to_string(), "chip".to_string()];
        let ok = vec!["good".to_string()];
        assert_eq!(
            ng_class(&classes, &[0.5, 0.2, 0.3], &ok, &[]).as_deref(),
            Some("chip"),
            "not `good`, though likelier"
        );
        let det = |class: &str, score| crate::part::Detection {
            class: class.into(),
            class_id: 0,
            score,
            bbox: [0.0; 4],
            mask_area: None,
            mask: None,
        };
        assert_eq!(ng_class(&[], &[], &[], &[det("dent", 0.4), det("burr", 0.8)]).as_deref(), Some("burr"));
        assert_eq!(ng_class(&[], &[], &[], &[]), None);
    }

    #[test]
    fn a_disagreement_is_kept_with_both_judgements() {
        use crate::part::control::Stamp;
        use crate::part::{Judgement, PartInfo, PartResult};
        let part = PartInfo {
            camera: "top".into(),
            part_id: 42,
            captured: std::time::Instant::now(),
            position: None,
            captured_wall: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_790_000_000),
            stamp: Stamp { generation: 0, threshold: 0.66 },
        };
        let judged = |verdict, ng: f32| Judgement {
            part: part.clone(),
            verdict,
            scores: vec![1.0 - ng, ng],
            ng_score: ng,
            top_class: 0,
            preprocess_ms: 0.0,
            inference_ms: 0.0,
            error: None,
            detections: Vec::new(),
            heat: None,
        };
        let d = crate::app::shadow::Disagreement {
            task: "inspect".into(),
            production: PartResult {
                task: "inspect".into(),
                judgement: judged(Verdict::Ok, 0.2),
                classes: vec!["good".to_string(), "scratch".to_string()].into(),
                model: "surface@3".into(),
                capture_to_decision_ms: 1.0,
                capture_to_reject_ack_ms: None,
                uncertain_action: None,
                flagged: false,
                reject: None,
            },
            candidate: judged(Verdict::Ng, 0.9),
            candidate_label: "surface@4".into(),
            image: opencv::core::Mat::default(),
            scale: 2,
        };
        let r = disagreement_record(d, "abc");
        assert_eq!((r.reason, r.part_id, r.task.as_str()), (Reason::Disagreement, 42, "inspect"));
        let s = &r.sidecar;
        assert_eq!((s["verdict"].as_str(), s["candidate"]["verdict"].as_str()), (Some("OK"), Some("NG")));
        assert_eq!((s["model"]["name"].as_str(), s["model"]["version"].as_str()), (Some("surface"), Some("3")));
        assert_eq!(s["candidate"]["label"], "surface@4");
        assert_eq!((s["ng_threshold"].as_f64(), s["image_scale"].as_u64()), (Some(0.66), Some(2)));
        assert_eq!(s["config_hash"], "abc");
    }
}
