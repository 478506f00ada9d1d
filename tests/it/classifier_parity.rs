//! The Rust preprocessing and ONNX Runtime session give the same P(NG) as the
//! training side's own pipeline (Python: cv2 decode and resize, onnxruntime),
//! frame by frame, on the committed model and sample video; and the still
//! images in samples/parts get their labelled verdicts.

use crate::common::*;
use linesight::config::{CpuProvider, ModelConfig, ProviderConfig, RuntimeConfig};
use linesight::decision::rules::ClassifierRule;
use linesight::inference::classifier::Classifier;
use linesight::inference::runtime;
use linesight::part::Verdict;
use opencv::core::Mat;
use opencv::prelude::*;
use opencv::{imgcodecs, videoio};

fn model() -> Classifier {
    require_ort();
    let lib = runtime::library_path(&RuntimeConfig::default()).unwrap();
    let env = runtime::environment(&lib).unwrap();
    let cfg = ModelConfig {
        batch: 1,
        ok_classes: Vec::new(),
        batch_wait: linesight::config::Dur::from_millis(2),
        path: repo().join("models/surface-classifier.onnx"),
        kind: None,
        sidecar: None,
        sha256: None,
        providers: vec![ProviderConfig::Cpu(CpuProvider { threads: Some(1) })],
    };
    Classifier::load(env, &cfg, 1).unwrap()
}

/// Decoders and resizers differ slightly between OpenCV builds (the Python
/// side used the PyPI wheel, this side Debian's OpenCV 4.6): P(NG) may move a
/// little, never across the verdict.
const TOLERANCE: f64 = 0.05;

#[test]
fn video_scores_match_the_python_pipeline() {
    let mut m = model();
    let rule = ClassifierRule { ok: m.ok_mask().to_vec(), ng_threshold: m.contract.ng_threshold.unwrap(), band: None };
    let expected: Vec<(bool, f64)> = std::fs::read_to_string(repo().join("samples/line.scores.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[2] == "1", f[3].parse().unwrap())
        })
        .collect();
    let mut cap =
        videoio::VideoCapture::from_file(&*repo().join("samples/line.avi").to_string_lossy(), videoio::CAP_ANY)
            .unwrap();
    let mut frame = Mat::default();
    let mut i = 0;
    let mut worst: f64 = 0.0;
    while cap.read(&mut frame).unwrap() && !frame.empty() {
        let (probs, _) = m.classify(&frame).unwrap();
        let (verdict, ng) = rule.judge(&probs);
        let (is_ng, p_ng) = expected[i];
        let diff = (f64::from(ng) - p_ng).abs();
        worst = worst.max(diff);
        assert!(diff < TOLERANCE, "frame {i}: P(NG) {ng} here, {p_ng} in Python");
        assert_eq!(verdict, if is_ng { Verdict::Ng } else { Verdict::Ok }, "frame {i}");
        i += 1;
    }
    assert_eq!(i, expected.len(), "every frame decoded");
    eprintln!("largest P(NG) difference to the Python pipeline: {worst:.5}");
}

#[test]
fn still_images_get_their_labelled_verdicts() {
    let mut m = model();
    let rule = ClassifierRule { ok: m.ok_mask().to_vec(), ng_threshold: m.contract.ng_threshold.unwrap(), band: None };
    let mut n = 0;
    for entry in std::fs::read_dir(repo().join("samples/parts")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let class = name.split_once('_').unwrap().1;
        let img = imgcodecs::imread(&*path.to_string_lossy(), imgcodecs::IMREAD_COLOR).unwrap();
        let (probs, _) = m.classify(&img).unwrap();
        let (verdict, _) = rule.judge(&probs);
        assert_eq!(verdict, if class == "good" { Verdict::Ok } else { Verdict::Ng }, "{}", path.display());
        n += 1;
    }
    assert!(n >= 10);
}
