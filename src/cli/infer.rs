//! `linesight infer`: run a model on image files and say what it sees.
//!
//! The model's kind is read from the file: an Ultralytics export carries
//! `task` and `names` in its metadata; a linesight classifier carries its
//! contract (metadata key `linesight`, or the `<model>.json` sidecar).
//! Anything else is refused with what was looked for. An image that cannot
//! be read is reported and skipped; the exit status says whether any was.

use std::path::{Path, PathBuf};

use opencv::core::{Mat, Point, Rect, Scalar};
use opencv::imgcodecs;
use opencv::imgproc;
use opencv::prelude::*;
use serde_json::{json, Value};

use crate::config::{CpuProvider, ModelConfig, ProviderConfig, RuntimeConfig};
use crate::inference::runtime;
use crate::part::Detection;

#[derive(clap::Args, Debug)]
pub struct InferArgs {
    /// The ONNX model: an Ultralytics YOLO detection export, or a linesight classifier.
    #[arg(long)]
    pub model: PathBuf,
    /// One JSON document per image instead of text.
    #[arg(long)]
    pub json: bool,
    /// Detections below this confidence are dropped (Ultralytics' default).
    #[arg(long, default_value_t = 0.25)]
    pub conf: f32,
    /// Overlap above which the weaker of two boxes of one class is dropped (Ultralytics' default).
    #[arg(long, default_value_t = 0.7)]
    pub iou: f32,
    /// Write an annotated copy of each image into this folder.
    #[arg(long)]
    pub annotate: Option<PathBuf>,
    /// Inference threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Decode JPEG images at `1/2`, `1/4` or `1/8` per side, as a camera with that `decode` does
    /// (libjpeg's DCT scaling); boxes are reported in the full image's pixels, as the daemon
    /// reports them. `full` (the default) decodes them whole.
    #[arg(long, default_value = "full", value_parser = parse_decode)]
    pub decode: u32,
    /// The images.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

pub use crate::inference::Loaded as Model;

/// Load `path` as whatever kind it is (on the CPU).
pub fn load(path: &Path, threads: usize) -> Result<Model, String> {
    let lib = runtime::library_path(&RuntimeConfig::default()).map_err(|e| e.to_string())?;
    let env = runtime::environment(&lib).map_err(|e| e.to_string())?;
    let cfg = ModelConfig {
        batch: 1,
        ok_classes: Vec::new(),
        batch_wait: crate::config::Dur::from_millis(2),
        path: path.to_path_buf(),
        kind: None,
        sidecar: None,
        sha256: None,
        providers: vec![ProviderConfig::Cpu(CpuProvider { threads: Some(threads) })],
    };
    crate::inference::load_model(env, &cfg, threads).map_err(|e| e.to_string())
}

pub fn main(args: InferArgs) -> Result<bool, String> {
    let mut model = load(&args.model, args.threads)?;
    if let Some(dir) = &args.annotate {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: cannot create: {e}", dir.display()))?;
    }
    let mut all_read = true;
    for image in &args.images {
        let doc = match infer_one(&mut model, image, &args) {
            Ok(doc) => doc,
            Err(e) => {
                all_read = false;
                json!({"image": image.display().to_string(), "error": e})
            }
        };
        if args.json {
            println!("{doc}");
        } else {
            print_text(&doc);
        }
    }
    Ok(all_read)
}

fn infer_one(model: &mut Model, image: &Path, args: &InferArgs) -> Result<Value, String> {
    let frame = if args.decode > 1 { read_reduced(image, args.decode)? } else { read_image(image)? };
    let name = image.display().to_string();
    match model {
        Model::Detector(d) => {
            let (mut dets, timing) = d.detect(&frame, args.conf, args.iou)?;
            if let Some(dir) = &args.annotate {
                annotate(&frame, &dets, &dir.join(file_name(image)))?;
            }
            // In the full image's pixels, as the daemon reports a reduced frame's boxes.
            crate::part::output::detections_in_full_frame(&mut dets, args.decode);
            Ok(json!({
                "image": name,
                "kind": format!("yolo-{}", d.meta.task),
                "verdict": if dets.is_empty() { "OK" } else { "NG" },
                "detections": dets,
                "provider": d.provider,
                "inference_ms": round3(timing.inference_ms),
            }))
        }
        Model::Anomaly(a) => {
            let (mut out, timing) = a.score_many(&[&frame])?;
            let r = out.pop().ok_or("the model returned nothing")?;
            let verdict = crate::decision::Band::verdict(None, r.score, a.contract.threshold);
            Ok(json!({
                "image": name,
                "kind": "anomaly",
                "verdict": verdict,
                "anomaly_score": r.score,
                "threshold": a.contract.threshold,
                "pred_label": r.label,
                "anomaly_map_max": r.map_max,
                "anomaly_map_shape": r.map_shape,
                "pred_mask_area": r.mask_area,
                "provider": a.provider,
                "inference_ms": round3(timing.inference_ms),
            }))
        }
        m @ (Model::Classifier(_) | Model::YoloClassify(_)) => {
            let (classes, ok, own) = m.class_contract(&[]).unwrap_or_else(|| Err("not a classifier".into()))?;
            let (mut out, timing) = m.infer(&[&frame], 0.0, 0.0)?;
            let Some(crate::part::ModelOutput::Probs(probs)) = out.pop() else {
                return Err("the classifier returned no probabilities".into());
            };
            let rule = crate::decision::rules::ClassifierRule { ok, ng_threshold: own.unwrap_or(0.5), band: None };
            let (verdict, ng) = rule.judge(&probs);
            let scores: serde_json::Map<String, Value> =
                classes.iter().zip(&probs).map(|(k, p)| (k.clone(), json!(round3(f64::from(*p))))).collect();
            let top = probs.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| classes[i].clone());
            Ok(json!({
                "image": name,
                "kind": if matches!(m, Model::Classifier(_)) { "classifier" } else { "yolo-classify" },
                "verdict": verdict,
                "ng_score": round3(f64::from(ng)),
                "class": top,
                "scores": scores,
                "probs": probs,
                "provider": m.provider(),
                "inference_ms": round3(timing.inference_ms),
            }))
        }
    }
}

/// `full`, `1/2`, `1/4`, `1/8` as the reduction per side.
pub fn parse_decode(s: &str) -> Result<u32, String> {
    match s {
        "full" => Ok(1),
        "1/2" => Ok(2),
        "1/4" => Ok(4),
        "1/8" => Ok(8),
        _ => Err(format!("`{s}`: use full, 1/2, 1/4 or 1/8")),
    }
}

/// An image decoded at 1/`k` per side (libjpeg scales JPEG in its IDCT; OpenCV resizes others).
pub fn read_reduced(path: &Path, k: u32) -> Result<Mat, String> {
    if !path.is_file() {
        return Err(format!("{}: no such file", path.display()));
    }
    let m = imgcodecs::imread(path, crate::camera::source::reduced_flag(k)).map_err(|e| e.message)?;
    if m.empty() {
        return Err(format!("{}: not an image OpenCV can decode at 1/{k}", path.display()));
    }
    Ok(m)
}

pub fn read_image(path: &Path) -> Result<Mat, String> {
    if !path.is_file() {
        return Err(format!("{}: no such file", path.display()));
    }
    let m = imgcodecs::imread(path, imgcodecs::IMREAD_COLOR).map_err(|e| e.message)?;
    if m.empty() {
        return Err(format!(
            "{}: not an image OpenCV can decode (corrupt, truncated, or another format)",
            path.display()
        ));
    }
    Ok(m)
}

fn file_name(p: &Path) -> PathBuf {
    PathBuf::from(p.file_name().unwrap_or_default())
}

fn annotate(frame: &Mat, dets: &[Detection], out: &Path) -> Result<(), String> {
    let mut img = frame.clone();
    for d in dets {
        let [x1, y1, x2, y2] = d.bbox;
        let rect = Rect::new(x1 as i32, y1 as i32, (x2 - x1).max(1.0) as i32, (y2 - y1).max(1.0) as i32);
        let colour = Scalar::new(0.0, 0.0, 255.0, 0.0);
        imgproc::rectangle(&mut img, rect, colour, 2, imgproc::LINE_8, 0).map_err(|e| e.message)?;
        let label = format!("{} {:.2}", d.class, d.score);
        let at = Point::new(x1 as i32, (y1 as i32 - 4).max(10));
        imgproc::put_text(&mut img, &label, at, imgproc::FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, imgproc::LINE_AA, false)
            .map_err(|e| e.message)?;
    }
    let ok = imgcodecs::imwrite(out, &img, &opencv::core::Vector::new()).map_err(|e| e.message)?;
    if !ok {
        return Err(format!("{}: cannot write the annotated image", out.display()));
    }
    Ok(())
}

fn print_text(doc: &Value) {
    let image = doc["image"].as_str().unwrap_or("?");
    if let Some(e) = doc.get("error") {
        println!("{image}: ERROR {}", e.as_str().unwrap_or(""));
        return;
    }
    println!("{image}: {} ({})", doc["verdict"].as_str().unwrap_or("?"), doc["kind"].as_str().unwrap_or("?"));
    if let Some(dets) = doc["detections"].as_array() {
        for d in dets {
            println!("  {} {:.3} {}", d["class"].as_str().unwrap_or("?"), d["score"].as_f64().unwrap_or(0.0), d["box"]);
        }
    }
    if let Some(s) = doc.get("scores") {
        println!("  ng_score {} scores {s}", doc["ng_score"]);
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
