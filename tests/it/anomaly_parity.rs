//! linesight's anomalib adapter agrees with anomalib's own inferencer
//! (`anomalib.deploy.OpenVINOInferencer` on the same exported ONNX, recorded
//! by tools/train_anomaly.py into `models/surface-anomaly.reference.jsonl`) on
//! the committed PatchCore model and its held-out sample images.
//!
//! Tolerance: the anomaly score and the anomaly map's maximum within 0.005
//! (two runtimes, OpenVINO and ONNX Runtime, summing nearest-neighbour
//! distances in their own order), the same NG label (unless the score lies
//! within that tolerance of the threshold), and the mask area within 1 % of
//! the image. The committed sample images are at the training size, so no
//! resize is involved (anomalib's inferencers do not resize; linesight does).

use std::path::PathBuf;

use crate::common::*;
use linesight::inference::Loaded;
use linesight::part::ModelOutput as Output;
use serde_json::Value;

const SCORE: f64 = 0.005;

#[test]
fn anomaly_scores_agree_with_anomalibs_inferencer() {
    require_ort();
    let mut model: Loaded = linesight::cli::infer::load(&repo().join("models/surface-anomaly.onnx"), 1).unwrap();
    let Loaded::Anomaly(a) = &model else { panic!("the committed anomaly model did not load as one") };
    let threshold = f64::from(a.contract.threshold);
    let text = std::fs::read_to_string(repo().join("models/surface-anomaly.reference.jsonl")).unwrap();
    let refs: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(refs.len() >= 5, "too few sample images");
    let (mut worst_score, mut worst_map, mut ng) = (0.0_f64, 0.0_f64, 0);
    for r in &refs {
        let name = PathBuf::from(r["image"].as_str().unwrap());
        let frame = linesight::cli::infer::read_image(&repo().join(&name)).unwrap();
        let (mut out, _) = model.infer(&[&frame], 0.0, 0.0).unwrap();
        let Some(Output::Anomaly(got)) = out.pop() else { panic!("{name:?}: not an anomaly result") };
        let want = r["pred_score"].as_f64().unwrap();
        let d = (f64::from(got.score) - want).abs();
        assert!(d <= SCORE, "{name:?}: score {} vs anomalib {want}", got.score);
        if (want - threshold).abs() > SCORE {
            assert_eq!(
                f64::from(got.score) > threshold,
                r["pred_label"].as_bool().unwrap(),
                "{name:?}: {got:?} vs {r}"
            );
        }
        if let (Some(m), Some(w)) = (got.map_max, r["anomaly_map_max"].as_f64()) {
            worst_map = worst_map.max((f64::from(m) - w).abs());
            assert!((f64::from(m) - w).abs() <= SCORE, "{name:?}: map max {m} vs {w}");
        }
        if let (Some(area), Some(w), Some(shape)) = (got.mask_area, r["pred_mask_area"].as_u64(), got.map_shape) {
            let pixels = (shape[0] * shape[1]) as f64;
            assert!((area as f64 - w as f64).abs() <= 0.01 * pixels, "{name:?}: mask area {area} vs {w}");
        }
        worst_score = worst_score.max(d);
        ng += usize::from(want > threshold);
    }
    assert!(ng > 0 && ng < refs.len(), "the samples hold good and defective parts ({ng} of {} NG)", refs.len());
    eprintln!(
        "anomaly: {} images ({ng} NG); worst score difference {worst_score:.6}, worst map-max difference {worst_map:.6}",
        refs.len()
    );
}
