//! linesight's YOLO detections agree with Ultralytics' own predictor
//! (`YOLO(model.onnx).predict`, recorded by tools/yolo_reference.py into
//! `models/surface-detector.reference.jsonl`) on the committed detector and
//! its held-out sample images, for the raw export and the `nms=True` one.
//!
//! Tolerance: the same detections (count, class), boxes within 1.5 px on
//! every side, scores within 0.01. Both run the same ONNX graph on the same
//! letterboxed tensor; the remaining differences are OpenCV builds (resize
//! and JPEG decoding) and float summation order.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use crate::common::*;
use serde_json::Value;

const BOX_PX: f64 = 1.5;
const SCORE: f64 = 0.01;

fn reference(model: &str) -> BTreeMap<String, Vec<Value>> {
    let path = repo().join(format!("models/{model}.reference.jsonl"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (remake it with tools/yolo_reference.py)", path.display()));
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| {
            let name = PathBuf::from(v["image"].as_str().unwrap()).file_name().unwrap().to_string_lossy().to_string();
            (name, v["detections"].as_array().unwrap().clone())
        })
        .collect()
}

fn ours(model: &str, images: &[PathBuf]) -> BTreeMap<String, Vec<Value>> {
    let out = Command::new(bin())
        .args(["--log-format", "text", "infer", "--json", "--model"])
        .arg(repo().join(format!("models/{model}.onnx")))
        .args(images)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| {
            assert_eq!(v["kind"], "yolo-detect", "{v}");
            let name = PathBuf::from(v["image"].as_str().unwrap()).file_name().unwrap().to_string_lossy().to_string();
            (name, v["detections"].as_array().unwrap().clone())
        })
        .collect()
}

fn samples() -> Vec<PathBuf> {
    let dir = repo().join("models/surface-detector-samples");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png" || e == "jpg"))
        .collect();
    v.sort();
    v
}

fn agree(model: &str) {
    require_ort();
    let images = samples();
    assert!(images.len() >= 5, "too few sample images");
    let want = reference(model);
    let got = ours(model, &images);
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "the same images");
    let mut boxes = 0;
    let (mut worst_box, mut worst_score) = (0.0_f64, 0.0_f64);
    for (image, w) in &want {
        let g = &got[image];
        assert_eq!(g.len(), w.len(), "{image}: {} detections, Ultralytics {}: {g:?} vs {w:?}", g.len(), w.len());
        // Both lists are ordered by score; match each reference box to the closest of its class.
        let mut used = vec![false; g.len()];
        for r in w {
            let rb: Vec<f64> = r["box"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            let best = g
                .iter()
                .enumerate()
                .filter(|(i, d)| !used[*i] && d["class"] == r["class"])
                .map(|(i, d)| {
                    let db: Vec<f64> = d["box"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
                    (i, rb.iter().zip(&db).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max))
                })
                .min_by(|a, b| a.1.total_cmp(&b.1));
            let (i, err) = best.unwrap_or_else(|| panic!("{image}: no `{}` detection: {g:?}", r["class"]));
            used[i] = true;
            assert!(err <= BOX_PX, "{image}: box off by {err:.2} px: {:?} vs {r}", g[i]);
            let ds = (g[i]["score"].as_f64().unwrap() - r["score"].as_f64().unwrap()).abs();
            assert!(ds <= SCORE, "{image}: score off by {ds:.4}: {:?} vs {r}", g[i]);
            worst_box = worst_box.max(err);
            worst_score = worst_score.max(ds);
            boxes += 1;
        }
    }
    assert!(boxes > 0, "the reference has no detections at all: nothing was compared");
    eprintln!("{model}: {boxes} boxes on {} images; worst box difference {worst_box:.4} px, worst score difference {worst_score:.5}", want.len());
}

/// The dynamic-batch export of the same weights, fed all samples in one call,
/// gives each image the detections the fixed export gives it alone: batching
/// across cameras changes nothing about a part's verdict.
#[test]
fn a_batch_of_frames_gets_the_detections_each_frame_gets_alone() {
    require_ort();
    let load = |m: &str| linesight::cli::infer::load(&repo().join(format!("models/{m}.onnx")), 1).unwrap();
    let (mut single, mut batched) = (load("surface-detector"), load("surface-detector-batch"));
    let frames: Vec<opencv::core::Mat> =
        samples().iter().map(|p| linesight::cli::infer::read_image(p).unwrap()).collect();
    let refs: Vec<&opencv::core::Mat> = frames.iter().collect();
    let (together, _) = batched.infer(&refs, 0.25, 0.7).unwrap();
    assert_eq!(together.len(), frames.len());
    let mut n = 0;
    for (f, got) in frames.iter().zip(together) {
        let (mut alone, _) = single.infer(&[f], 0.25, 0.7).unwrap();
        let (Some(linesight::part::ModelOutput::Detections(a)), linesight::part::ModelOutput::Detections(b)) =
            (alone.pop(), got)
        else {
            panic!("not detections")
        };
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.class_id, y.class_id);
            assert!((x.score - y.score).abs() < 1e-4, "{x:?} vs {y:?}");
            assert!(x.bbox.iter().zip(y.bbox).all(|(p, q)| (p - q).abs() < 0.01), "{x:?} vs {y:?}");
        }
        n += a.len();
    }
    assert!(n > 0, "nothing detected: nothing compared");
    eprintln!("batch of {}: {n} detections, the same as one frame at a time", frames.len());
}

#[test]
fn raw_export_agrees_with_the_ultralytics_predictor() {
    agree("surface-detector");
}

#[test]
fn nms_export_agrees_with_the_ultralytics_predictor() {
    agree("surface-detector-nms");
}

/// The daemon judges parts with the detector: each sample image is a part,
/// NG exactly when Ultralytics found something, and the result carries the
/// detections that counted.
#[test]
fn the_daemon_judges_parts_with_the_detector() {
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(linesight::sim::plc::SimPlc::start("127.0.0.1:0")).unwrap();
    let broker = Broker::start().unwrap();
    let sub = Subscriber::start(broker.port, "linesight/test-line/cell-1/#");
    let dir = tempfile::tempdir().unwrap();
    let samples = repo().join("models/surface-detector-samples");
    let yaml = node_yaml(&plc.addr.to_string(), broker.port, "", 5.0)
        .replace(
            &format!("file: {}", repo().join("samples/line.avi").display()),
            &format!("directory: {}", samples.display()),
        )
        .replace(
            &repo().join("models/surface-classifier.onnx").display().to_string(),
            &repo().join("models/surface-detector.onnx").display().to_string(),
        );
    let cfg = write_config(dir.path(), &yaml);
    let out = Command::new(bin()).args(["--log-format", "text", "run", "--config"]).arg(&cfg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want = reference("surface-detector");
    let mut results = sub.messages("/result");
    assert_eq!(results.len(), want.len(), "one result per image: {results:?}");
    // Parts are the images in name order, as the reference's keys are (an NG
    // part's result is published after its reject, so sort by part id).
    results.sort_by_key(|r| r["part_id"].as_u64().unwrap());
    for (r, (image, dets)) in results.iter().zip(&want) {
        let expected = if dets.is_empty() { "OK" } else { "NG" };
        assert_eq!(r["verdict"], expected, "{image}: {r}");
        assert_eq!(r["detections"].as_array().unwrap().len(), dets.len(), "{image}: {r}");
        assert_eq!(r["model"].as_str().unwrap().split('@').next(), Some("surface-detector"));
    }
    assert!(results.iter().any(|r| r["verdict"] == "NG") && results.iter().any(|r| r["verdict"] == "OK"));
}
