//! linesight's YOLO segmentation and classification adapters agree with
//! Ultralytics' own predictor (`YOLO(model.onnx).predict`, recorded by
//! tools/yolo_reference_seg_cls.py into `<model>.reference.jsonl`) on
//! the committed exports and their held-out sample images. The YOLO classifier is a test fixture
//! (tests/models/: it did not learn, so it is not offered as a model), a genuine export all the same.
//!
//! Tolerances. Segmentation: the same detections (count, class), boxes within
//! 1.5 px, scores within 0.01, and each mask (at the image's own size) with an
//! IoU of at least 0.95 against Ultralytics' mask: both threshold the same
//! logits at 0, and pixels whose logit is within float noise of 0 may flip.
//! Classification: the same top class and every probability within 0.005.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::common::*;
use linesight::inference::{segment, Loaded};
use linesight::part::ModelOutput as Output;
use serde_json::Value;

const BOX_PX: f64 = 1.5;
const SCORE: f64 = 0.01;
const MASK_IOU: f64 = 0.95;
const PROB: f64 = 0.005;

fn reference(model: &str) -> BTreeMap<String, Value> {
    let path = repo().join(format!("{model}.reference.jsonl"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (remake it with tools/yolo_reference_seg_cls.py)", path.display()));
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| (PathBuf::from(v["image"].as_str().unwrap()).file_name().unwrap().to_string_lossy().to_string(), v))
        .collect()
}

fn load(model: &str) -> Loaded {
    require_ort();
    linesight::cli::infer::load(&repo().join(format!("{model}.onnx")), 1).unwrap()
}

fn image(model: &str, name: &str) -> opencv::core::Mat {
    linesight::cli::infer::read_image(&repo().join(format!("{model}-samples/{name}"))).unwrap()
}

#[test]
fn segmentation_boxes_and_masks_agree_with_the_ultralytics_predictor() {
    let mut model = load("models/surface-segmenter");
    let want = reference("models/surface-segmenter");
    assert!(want.len() >= 5, "too few sample images");
    let (mut n, mut worst_box, mut worst_score, mut worst_iou) = (0, 0.0_f64, 0.0_f64, 1.0_f64);
    for (name, w) in &want {
        let frame = image("models/surface-segmenter", name);
        let (mut out, _) = model.infer(&[&frame], 0.25, 0.7).unwrap();
        let Some(Output::Detections(got)) = out.pop() else { panic!("{name}: not detections") };
        let w = w["detections"].as_array().unwrap();
        assert_eq!(got.len(), w.len(), "{name}: {} detections, Ultralytics {}: {got:?} vs {w:?}", got.len(), w.len());
        let mut used = vec![false; got.len()];
        for r in w {
            let rb: Vec<f64> = r["box"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            let (i, err) = got
                .iter()
                .enumerate()
                .filter(|(i, d)| !used[*i] && d.class == r["class"].as_str().unwrap())
                .map(|(i, d)| (i, rb.iter().zip(d.bbox).map(|(a, b)| (a - f64::from(b)).abs()).fold(0.0, f64::max)))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap_or_else(|| panic!("{name}: no `{}` detection: {got:?}", r["class"]));
            used[i] = true;
            let d = &got[i];
            assert!(err <= BOX_PX, "{name}: box off by {err:.2} px: {d:?} vs {r}");
            let ds = (f64::from(d.score) - r["score"].as_f64().unwrap()).abs();
            assert!(ds <= SCORE, "{name}: score off by {ds:.4}");
            let runs: Vec<u64> = r["mask_rle"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
            let theirs = segment::unrle(&runs);
            let mine = d.mask.as_ref().expect("segmentation detections carry a mask");
            assert_eq!(theirs.len(), mine.len(), "{name}: mask sizes differ");
            let inter = mine.iter().zip(&theirs).filter(|(a, b)| **a && **b).count() as f64;
            let union = mine.iter().zip(&theirs).filter(|(a, b)| **a || **b).count() as f64;
            let iou = if union == 0.0 { 1.0 } else { inter / union };
            assert!(iou >= MASK_IOU, "{name}: mask IoU {iou:.4} (area {:?} vs {})", d.mask_area, r["mask_area"]);
            worst_box = worst_box.max(err);
            worst_score = worst_score.max(ds);
            worst_iou = worst_iou.min(iou);
            n += 1;
        }
    }
    assert!(n > 0, "the reference has no detections: nothing was compared");
    eprintln!("segmenter: {n} masks on {} images; worst box {worst_box:.4} px, worst score {worst_score:.5}, worst mask IoU {worst_iou:.5}", want.len());
}

#[test]
fn classification_probabilities_agree_with_the_ultralytics_predictor() {
    let mut model = load("tests/models/surface-yolo-cls");
    let want = reference("tests/models/surface-yolo-cls");
    assert!(want.len() >= 5, "too few sample images");
    let mut worst = 0.0_f64;
    for (name, w) in &want {
        let frame = image("tests/models/surface-yolo-cls", name);
        let (mut out, _) = model.infer(&[&frame], 0.0, 0.0).unwrap();
        let Some(Output::Probs(p)) = out.pop() else { panic!("{name}: not probabilities") };
        let names: Vec<&str> = w["names"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
        let top = p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| names[i]).unwrap();
        assert_eq!(top, w["top1"].as_str().unwrap(), "{name}: {p:?} vs {w}");
        for (a, b) in p.iter().zip(w["probs"].as_array().unwrap()) {
            let d = (f64::from(*a) - b.as_f64().unwrap()).abs();
            assert!(d <= PROB, "{name}: probability off by {d:.5}: {p:?} vs {w}");
            worst = worst.max(d);
        }
    }
    eprintln!("yolo-cls: {} images; worst probability difference {worst:.6}", want.len());
}
