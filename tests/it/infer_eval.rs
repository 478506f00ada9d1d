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

    assert_eq!(r["layout"], "classes");
}

/// The operating point's counts of an eval report: (tp, fn, fp, tn).
fn counts(r: &Value) -> [u64; 4] {
    let op = &r["operating_point"];
    ["tp", "fn", "fp", "tn"].map(|k| op[k].as_u64().unwrap_or_else(|| panic!("no {k} in {r}")))
}

fn eval_json(model: &std::path::Path, data: &std::path::Path) -> Value {
    let (code, out, err) =
        linesight(&["eval", "--json", "--model", &model.display().to_string(), "--data", &data.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(out.trim()).unwrap()
}

/// Copy `files` into `dir/<folder>/`.
fn put(dir: &std::path::Path, folder: &str, files: &[std::path::PathBuf]) {
    std::fs::create_dir_all(dir.join(folder)).unwrap();
    for f in files {
        std::fs::copy(f, dir.join(folder).join(f.file_name().unwrap())).unwrap();
    }
}

#[test]
fn eval_takes_a_plain_good_and_defect_folder_for_a_classifier() {
    require_ort();
    let model = repo().join("models/surface-classifier.onnx");
    let (good, ng): (Vec<_>, Vec<_>) = parts().into_iter().partition(|p| p.to_string_lossy().ends_with("_good.png"));
    // The same images laid out by class and as `good/` + `defect/`: the verdicts must be the same.
    let by_class = tempfile::tempdir().unwrap();
    for p in parts() {
        let class = p.file_stem().unwrap().to_string_lossy().split('_').nth(1).unwrap().to_string();
        put(by_class.path(), &class, std::slice::from_ref(&p));
    }
    let plain = tempfile::tempdir().unwrap();
    put(plain.path(), "good", &good);
    put(plain.path(), "defect", &ng[..5]);
    put(plain.path(), "returned-by-customer", &ng[5..]);
    let want = eval_json(&model, by_class.path());
    let r = eval_json(&model, plain.path());
    assert_eq!(r["layout"], "folders", "{r}");
    assert_eq!(r["images"]["ng"], 10);
    assert_eq!(r["images"]["ok"], 10);
    assert_eq!(counts(&r), counts(&want), "the same parts get the same verdicts in either layout\n{r}\n{want}");
    assert_eq!(r["auroc_ng_score"], want["auroc_ng_score"]);
    assert_eq!(r["for_target_recall"], want["for_target_recall"]);
    let folders = r["per_folder"].as_object().unwrap();
    assert_eq!(folders.keys().collect::<Vec<_>>(), ["defect", "good", "returned-by-customer"]);
    assert_eq!(folders["good"]["images"], 10);
    assert!(folders["good"]["false_reject_rate"].as_f64().unwrap() <= 0.1, "{r}");
    assert_eq!(folders["defect"]["images"], 5);
    assert!(folders["defect"]["ng_recall"].is_number(), "{r}");
    let called: u64 =
        ["defect", "returned-by-customer"].iter().map(|k| folders[*k]["called_ng"].as_u64().unwrap()).sum();
    assert_eq!(called, counts(&r)[0], "the NG folders' parts called NG are the true positives");

    // The text report names each folder with its figure.
    let (code, out, err) =
        linesight(&["eval", "--model", &model.display().to_string(), "--data", &plain.path().display().to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("returned-by-customer") && out.contains("NG recall") && out.contains("false-reject rate"),
        "{out}"
    );

    // Without a folder of good parts there is nothing to call a false reject: said, with the fix.
    let no_good = tempfile::tempdir().unwrap();
    put(no_good.path(), "defect", &ng);
    put(no_good.path(), "maybe", &good);
    let (code, _, err) =
        linesight(&["eval", "--model", &model.display().to_string(), "--data", &no_good.path().display().to_string()]);
    assert_eq!(code, 66, "{err}");
    assert!(err.contains("`good/`") && err.contains("0 good"), "{err}");
}

#[test]
fn eval_takes_a_plain_good_and_defect_folder_for_a_detector() {
    require_ort();
    let model = repo().join("models/surface-detector.onnx");
    let samples = repo().join("models/surface-detector-samples");
    let pngs: Vec<_> = ["00000", "00001", "00002", "00003", "00004", "00005", "00006", "00018"]
        .iter()
        .map(|n| samples.join(format!("test_{n}.png")))
        .collect();
    // With YOLO labels beside the images (test_00018's is empty: a good part) ...
    let labelled = tempfile::tempdir().unwrap();
    for p in &pngs {
        put(labelled.path(), ".", &[p.clone(), p.with_extension("txt")]);
    }
    let want = eval_json(&model, labelled.path());
    assert_eq!(want["layout"], "yolo-labels");
    assert_eq!((want["images"]["ng"].as_u64(), want["images"]["ok"].as_u64()), (Some(7), Some(1)), "{want}");
    // ... and the same images as `good/` + `defect/`, no labels: the same image-level verdicts.
    let plain = tempfile::tempdir().unwrap();
    put(plain.path(), "defect", &pngs[..7]);
    put(plain.path(), "good", &pngs[7..]);
    let r = eval_json(&model, plain.path());
    assert_eq!(r["layout"], "folders", "{r}");
    assert_eq!(r["kind"], "yolo-detect");
    assert_eq!(counts(&r), counts(&want), "{r}\n{want}");
    assert_eq!(r["per_folder"]["defect"]["images"], 7);
    assert_eq!(r["per_folder"]["defect"]["called_ng"], counts(&r)[0]);
    assert!(r.get("per_class_boxes_iou_0_5").is_none(), "no labels, no box figures: {r}");
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
