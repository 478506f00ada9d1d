//! `linesight capture export`: a capture store turned into the layouts training and labelling
//! tools read: ImageFolder (`good/`, `<defect class>/`), YOLO (`images/`, `labels/` with the
//! model's detections as pre-labels, `data.yaml`), anomalib's folder layout (`good/`, `defect/`)
//! and a Label Studio import file with the model's boxes as `predictions`.
//!
//! A record's label is its review mark when it has one (false-reject and good: good; missed-defect
//! and defect: a defect), else its verdict: OK is good; NG and UNCERTAIN are a defect of the
//! sidecar's `ng_class` (the top NG class of a classifier, the top box's class of a detector;
//! `defect` for anomaly models). An ERROR part was never judged: it is left out unless a review
//! mark says what it is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::Mark;
use crate::util::time::parse_rfc3339_ms;

/// The layouts `capture export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    ImageFolder,
    Yolo,
    Anomalib,
    LabelStudio,
}

impl Format {
    pub fn parse(text: &str) -> Result<Format, String> {
        match text {
            "imagefolder" => Ok(Format::ImageFolder),
            "yolo" => Ok(Format::Yolo),
            "anomalib" => Ok(Format::Anomalib),
            "label-studio" => Ok(Format::LabelStudio),
            other => Err(format!("unknown export format `{other}`; use imagefolder, yolo, anomalib or label-studio")),
        }
    }
}

/// Which records to export. Empty or None: all.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub task: Option<String>,
    /// Captured at or after, ms since 1970.
    pub since_ms: Option<i64>,
    /// Captured before, ms since 1970.
    pub until_ms: Option<i64>,
    /// Verdicts (`OK`, `NG`, `UNCERTAIN`, `ERROR`), upper case.
    pub verdicts: Vec<String>,
    /// The judging model's version.
    pub model_version: Option<String>,
    /// Only records with a review mark.
    pub marked_only: bool,
}

/// One record found in the store.
#[derive(Debug, Clone)]
pub struct Found {
    pub task: String,
    pub image: PathBuf,
    pub sidecar: Value,
}

/// What a record is, for training.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Label {
    Good,
    /// A defect, and its class.
    Defect(String),
    /// An ERROR part without a review: nobody knows.
    Unknown,
}

impl Label {
    pub fn name(&self) -> &str {
        match self {
            Label::Good => "good",
            Label::Defect(c) => c,
            Label::Unknown => "unknown",
        }
    }
}

/// The label of a record (see the module's doc).
pub fn label(sidecar: &Value) -> Label {
    let class =
        || sidecar.get("ng_class").and_then(Value::as_str).filter(|c| !c.is_empty()).unwrap_or("defect").to_string();
    let mark = sidecar.pointer("/review/mark").and_then(Value::as_str).and_then(|m| Mark::parse(m).ok());
    if let Some(m) = mark {
        return if m.is_defect() { Label::Defect(class()) } else { Label::Good };
    }
    match sidecar.get("verdict").and_then(Value::as_str) {
        Some("OK") => Label::Good,
        Some("NG") | Some("UNCERTAIN") => Label::Defect(class()),
        _ => Label::Unknown,
    }
}

/// Every record under `dir` (`<dir>/<task>/<date>/*.json`) that passes `filter`, oldest first.
pub fn find(dir: &Path, filter: &Filter) -> Result<Vec<Found>, String> {
    let tasks = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read the capture folder {}: {e}; give the folder `capture.dir` names (default <runtime.state_dir>/capture)", dir.display()))?;
    let mut out = Vec::new();
    for task in tasks {
        let task = task.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        let Some(name) = task.file_name().and_then(|n| n.to_str()).map(str::to_string) else { continue };
        if !task.is_dir() || filter.task.as_ref().is_some_and(|t| *t != name) {
            continue;
        }
        let index =
            super::store::Index::scan_readonly(&task).map_err(|e| format!("cannot read {}: {e}", task.display()))?;
        for (image, side) in index {
            let text = std::fs::read(&side).map_err(|e| format!("cannot read {}: {e}", side.display()))?;
            let doc: Value = serde_json::from_slice(&text)
                .map_err(|e| format!("{} is not a JSON sidecar: {e}; delete it with its image", side.display()))?;
            if passes(&doc, filter) {
                out.push(Found { task: name.clone(), image, sidecar: doc });
            }
        }
    }
    Ok(out)
}

fn passes(doc: &Value, f: &Filter) -> bool {
    let at = doc.get("at").and_then(Value::as_str).and_then(parse_rfc3339_ms);
    if f.since_ms.is_some_and(|s| at.map_or(true, |a| a < s)) || f.until_ms.is_some_and(|u| at.map_or(true, |a| a >= u))
    {
        return false;
    }
    let verdict = doc.get("verdict").and_then(Value::as_str).unwrap_or("");
    if !f.verdicts.is_empty() && !f.verdicts.iter().any(|v| v.eq_ignore_ascii_case(verdict)) {
        return false;
    }
    if let Some(v) = &f.model_version {
        if doc.pointer("/model/version").and_then(Value::as_str) != Some(v.as_str()) {
            return false;
        }
    }
    !(f.marked_only && doc.get("review").map_or(true, Value::is_null))
}

/// Export every record under `dir` passing `filter` to `out` as `format`: the count per label
/// (`unknown`: ERROR parts left out).
pub fn export(dir: &Path, format: Format, filter: &Filter, out: &Path) -> Result<BTreeMap<String, u64>, String> {
    let found = find(dir, filter)?;
    let mkdir = |p: &Path| std::fs::create_dir_all(p).map_err(|e| format!("cannot create {}: {e}", p.display()));
    mkdir(out)?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut names: Vec<String> = Vec::new();
    let mut studio = Vec::new();
    let mut labels_to_write = Vec::new();
    for r in &found {
        let label = label(&r.sidecar);
        *counts.entry(label.name().to_string()).or_default() += 1;
        if label == Label::Unknown {
            continue;
        }
        let file = unique_name(r);
        let folder = match (format, &label) {
            (Format::ImageFolder, l) => out.join(l.name()),
            (Format::Anomalib, Label::Good) => out.join("good"),
            (Format::Anomalib, _) => out.join("defect"),
            (Format::Yolo | Format::LabelStudio, _) => out.join("images"),
        };
        mkdir(&folder)?;
        let to = folder.join(&file);
        std::fs::copy(&r.image, &to)
            .map_err(|e| format!("cannot copy {} to {}: {e}", r.image.display(), to.display()))?;
        match format {
            Format::Yolo => {
                let boxes = boxes(&r.sidecar, &label);
                if names.is_empty() && !boxes.is_empty() {
                    // The model's own class order, so that a pre-label's id is the model's class id.
                    let classes = r.sidecar.get("classes").and_then(Value::as_array);
                    names = classes
                        .map_or_else(Vec::new, |a| a.iter().filter_map(Value::as_str).map(str::to_string).collect());
                }
                let mut lines = String::new();
                for b in &boxes {
                    let id = class_id(&mut names, &b.class);
                    lines.push_str(&format!("{id} {:.6} {:.6} {:.6} {:.6}\n", b.cx, b.cy, b.w, b.h));
                }
                labels_to_write.push((Path::new(&file).with_extension("txt"), lines));
            }
            Format::LabelStudio => studio.push(studio_task(r, &file, &label)),
            _ => {}
        }
    }
    match format {
        Format::Yolo => {
            let labels = out.join("labels");
            mkdir(&labels)?;
            for (name, text) in labels_to_write {
                let p = labels.join(name);
                std::fs::write(&p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
            }
            let mut yaml = format!(
                "# Written by linesight capture export from {}\npath: .\ntrain: images\nval: images\nnames:\n",
                dir.display()
            );
            for (i, n) in names.iter().enumerate() {
                yaml.push_str(&format!("  {i}: {}\n", serde_json::to_string(n).unwrap_or_default()));
            }
            let p = out.join("data.yaml");
            std::fs::write(&p, yaml).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        }
        Format::LabelStudio => {
            let p = out.join("label-studio.json");
            let text = serde_json::to_vec_pretty(&studio).map_err(|e| e.to_string())?;
            std::fs::write(&p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
            let p = out.join("label-config.xml");
            std::fs::write(&p, LABEL_CONFIG).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        }
        _ => {}
    }
    Ok(counts)
}

/// A Label Studio labelling interface matching the import file: boxes and a good/defect choice.
const LABEL_CONFIG: &str = r#"<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image"/>
  <Choices name="verdict" toName="image" choice="single">
    <Choice value="good"/>
    <Choice value="defect"/>
  </Choices>
</View>
"#;

/// `<task>-<date>-<stem>.<ext>`: unique across tasks and days (part ids restart with the node).
fn unique_name(r: &Found) -> String {
    let file = r.image.file_name().and_then(|n| n.to_str()).unwrap_or("image");
    let day = r.image.parent().and_then(|d| d.file_name()).and_then(|n| n.to_str()).unwrap_or("");
    format!("{}-{day}-{file}", r.task)
}

fn class_id(names: &mut Vec<String>, class: &str) -> usize {
    names.iter().position(|n| n == class).unwrap_or_else(|| {
        names.push(class.to_string());
        names.len() - 1
    })
}

/// A box, normalised to the image (0..1), centre and size.
#[derive(Debug, Clone, PartialEq)]
pub struct NormBox {
    pub class: String,
    pub cx: f64,
    pub cy: f64,
    pub w: f64,
    pub h: f64,
    pub score: f64,
}

/// The model's boxes of a record, normalised to its full frame (detections are in full-frame
/// pixels: the stored image's size times `image_scale`). A record labelled good has none.
pub fn boxes(sidecar: &Value, label: &Label) -> Vec<NormBox> {
    if *label == Label::Good {
        return Vec::new();
    }
    let scale = sidecar.get("image_scale").and_then(Value::as_f64).unwrap_or(1.0).max(1.0);
    let fw = sidecar.get("width").and_then(Value::as_f64).unwrap_or(0.0) * scale;
    let fh = sidecar.get("height").and_then(Value::as_f64).unwrap_or(0.0) * scale;
    if fw <= 0.0 || fh <= 0.0 {
        return Vec::new();
    }
    let dets = sidecar.get("detections").and_then(Value::as_array).cloned().unwrap_or_default();
    dets.iter()
        .filter_map(|d| {
            let b: Vec<f64> = d.get("box")?.as_array()?.iter().filter_map(Value::as_f64).collect();
            let [x1, y1, x2, y2] = <[f64; 4]>::try_from(b).ok()?;
            let clamp = |v: f64| v.clamp(0.0, 1.0);
            let (x1, x2) = (clamp(x1 / fw), clamp(x2 / fw));
            let (y1, y2) = (clamp(y1 / fh), clamp(y2 / fh));
            (x2 > x1 && y2 > y1).then(|| NormBox {
                class: d.get("class").and_then(Value::as_str).unwrap_or("defect").to_string(),
                cx: (x1 + x2) / 2.0,
                cy: (y1 + y2) / 2.0,
                w: x2 - x1,
                h: y2 - y1,
                score: d.get("score").and_then(Value::as_f64).unwrap_or(0.0),
            })
        })
        .collect()
}

/// One Label Studio task: the image, the model's boxes and verdict as `predictions`, and the
/// operator's review mark (when there is one) as the verdict choice already made.
fn studio_task(r: &Found, file: &str, label: &Label) -> Value {
    let sc = &r.sidecar;
    let mut result: Vec<Value> = boxes(sc, label)
        .iter()
        .enumerate()
        .map(|(i, b)| {
            json!({
                "id": format!("b{i}"),
                "from_name": "label", "to_name": "image", "type": "rectanglelabels",
                "score": b.score,
                "value": {
                    "x": (b.cx - b.w / 2.0) * 100.0, "y": (b.cy - b.h / 2.0) * 100.0,
                    "width": b.w * 100.0, "height": b.h * 100.0, "rotation": 0,
                    "rectanglelabels": [b.class],
                },
            })
        })
        .collect();
    let choice = if *label == Label::Good { "good" } else { "defect" };
    result.push(json!({
        "id": "verdict", "from_name": "verdict", "to_name": "image", "type": "choices",
        "value": { "choices": [choice] },
    }));
    json!({
        "data": {
            "image": format!("images/{file}"),
            "task": r.task, "part_id": sc.get("part_id"), "verdict": sc.get("verdict"),
            "review": sc.get("review"), "at": sc.get("at"),
        },
        "predictions": [{
            "model_version": sc.pointer("/model/version").cloned().unwrap_or(Value::Null),
            "score": sc.get("ng_score").cloned().unwrap_or(Value::Null),
            "result": result,
        }],
    })
}
