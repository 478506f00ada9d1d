//! `linesight infer` and `linesight eval` on the committed models and
//! sample parts: verdicts, the model kind read from the file, reports a
//! plant can decide with, and clear errors for bad images and bad models.

use std::process::Command;

use crate::common::*;
use serde_json::Value;

fn linesight(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).args(["--log-format", "text"]).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn parts() -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(repo().join("samples/parts")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

#[test]
fn infer_gives_each_part_its_verdict_and_skips_what_it_cannot_read() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let model = repo().join("models/surface-classifier.onnx");
    let mut args = vec!["infer".to_string(), "--json".into(), "--model".into(), model.display().to_string()];
    args.extend(parts().iter().map(|p| p.display().to_string()));
    args.push(broken.display().to_string());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = linesight(&refs);
    assert_eq!(code, 1, "an unreadable image makes the exit status 1\n{err}");
    let docs: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(docs.len(), parts().len() + 1);
    for d in &docs[..parts().len()] {
        let name = d["image"].as_str().unwrap();
        let good = name.ends_with("_good.png");
        assert_eq!(d["kind"], "classifier");
        assert_eq!(d["verdict"], if good { "OK" } else { "NG" }, "{d}");
        assert_eq!(d["provider"], "cpu");
    }
    let last = docs.last().unwrap();
    assert!(last["error"].as_str().unwrap().contains("broken.png"), "{last}");
}

#[test]
fn eval_reports_recall_false_rejects_and_the_threshold_for_a_target() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    for p in parts() {
        let class = p.file_stem().unwrap().to_string_lossy().split('_').nth(1).unwrap().to_string();
        std::fs::create_dir_all(dir.path().join(&class)).unwrap();
        std::fs::copy(&p, dir.path().join(&class).join(p.file_name().unwrap())).unwrap();
    }
    let model = repo().join("models/surface-classifier.onnx");
    let data = dir.path().display().to_string();
    let (code, out, err) = linesight(&["eval", "--json", "--model", &model.display().to_string(), "--data", &data]);
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["images"]["ng"], 10);
    assert_eq!(r["images"]["ok"], 10);
    let op = &r["operating_point"];
    assert_eq!(op["tp"].as_u64().unwrap() + op["fn"].as_u64().unwrap(), 10);
    assert!(op["ng_recall"].as_f64().unwrap() >= 0.9, "{r}");
    assert!(r["for_target_recall"]["ng_recall"].as_f64().unwrap() >= 0.99);
    assert!(r["auroc_ng_score"].as_f64().unwrap() > 0.9);
    let confusion = r["confusion"]["rows_true_columns_predicted"].as_array().unwrap();
    let total: u64 = confusion.iter().flat_map(|row| row.as_array().unwrap()).map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total, 20);
    assert!(r["inference_ms"]["p99"].as_f64().unwrap() >= r["inference_ms"]["p50"].as_f64().unwrap());

    // A folder that is not one of the model's classes is named.
    std::fs::create_dir_all(dir.path().join("dent")).unwrap();
    let (code, _, err) = linesight(&["eval", "--model", &model.display().to_string(), "--data", &data]);
    assert_eq!(code, 66);
    assert!(err.contains("folder `dent` is not one of the model's classes"), "{err}");
}

#[test]
fn models_that_cannot_be_used_are_refused_with_the_reason() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let part = parts()[0].display().to_string();
    // Truncated: ONNX Runtime cannot parse it.
    let model = std::fs::read(repo().join("models/surface-classifier.onnx")).unwrap();
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &model[..model.len() / 3]).unwrap();
    let (code, _, err) = linesight(&["infer", "--model", &truncated.display().to_string(), &part]);
    assert_eq!(code, 66);
    assert!(err.contains("truncated.onnx"), "{err}");
    // Not a model at all.
    let (code, _, err) = linesight(&["infer", "--model", &part, &part]);
    assert_eq!(code, 66);
    assert!(err.contains(&part), "{err}");
}
