//! `linesight model keygen|pack|sign|verify` as a user runs them: the real binary packs the
//! committed classifier with labelled sample parts as golden images, verifies it, and refuses a
//! tampered copy with the reason; exit codes 0 (accepted), 1 (refused), 78 (bad arguments).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

fn linesight(args: &[&str]) -> (i32, String, String) {
    linesight_in(&repo(), args)
}

/// The binary run in folder `cwd`.
fn linesight_in(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).current_dir(cwd).args(["--log-format", "text"]).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// samples/parts/NNN_<label>.png as golden images: `good` must be OK, every defect NG.
fn golden_args() -> Vec<String> {
    let mut parts: Vec<PathBuf> =
        std::fs::read_dir(repo().join("samples/parts")).unwrap().map(|e| e.unwrap().path()).collect();
    parts.sort();
    parts
        .iter()
        .take(6)
        .flat_map(|p| {
            let ok = p.file_stem().unwrap().to_string_lossy().ends_with("_good");
            ["--golden".to_string(), format!("{}={}", s(p), if ok { "OK" } else { "NG" })]
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn pack_the_committed_classifier_verify_it_and_refuse_a_tampered_copy() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("plant.key");
    let (code, out, err) = linesight(&["model", "keygen", "--out", &s(&key)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("key id:"), "{out}");
    let public = dir.path().join("plant.key.pub");
    assert!(public.is_file());
    // Never overwritten.
    let (code, _, err) = linesight(&["model", "keygen", "--out", &s(&key)]);
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");

    // Pack: the kind comes from the sidecar beside the model.
    let model = repo().join("models/surface-classifier.onnx");
    let mut args: Vec<String> =
        ["model", "pack", "--model", &s(&model), "--name", "surface-classifier", "--version", "7"]
            .iter()
            .map(|a| a.to_string())
            .collect();
    args.extend(["--key".into(), s(&key), "--out".into(), s(dir.path()), "--valid-days".into(), "30".into()]);
    args.extend(golden_args());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = linesight(&refs);
    assert_eq!(code, 0, "{out}{err}");
    let package = dir.path().join("surface-classifier-7.lsmodel");
    assert!(out.contains("packed surface-classifier version 7 (classifier)"), "{out}");
    assert!(out.contains("6 golden images (4 OK, 2 NG)"), "{out}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(package.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["sidecar"], "model.onnx.json");
    assert_eq!(manifest["golden"][0]["verdict"], "NG"); // 000_chip.png
    assert_eq!(manifest["files"][0]["bytes"], std::fs::metadata(&model).unwrap().len());

    // Verify: accepted, each check printed.
    let (code, out, err) = linesight(&[
        "model",
        "verify",
        "--package",
        &s(&package),
        "--key",
        &s(&public),
        "--kind",
        "classifier",
        "--installed-version",
        "6",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    for check in ["ok       signature: signed by `plant.key.pub`", "ok       version: 7", "ok       files: 8 files"] {
        assert!(out.contains(check), "`{check}` missing from:\n{out}");
    }
    assert!(out.contains("accepted: surface-classifier version 7"), "{out}");
    // Not newer than what the node installed.
    let (code, out, _) =
        linesight(&["model", "verify", "--package", &s(&package), "--key", &s(&public), "--installed-version", "7"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("REFUSED  not_newer") && out.contains("--version 8"), "{out}");

    // A tampered copy: one byte of the model changed.
    let tampered = dir.path().join("tampered.lsmodel");
    copy_dir(&package, &tampered);
    let onnx = tampered.join("model.onnx");
    let mut bytes = std::fs::read(&onnx).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&onnx, bytes).unwrap();
    let (code, out, _) = linesight(&["model", "verify", "--package", &s(&tampered), "--key", &s(&public)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("ok       signature"), "the signature still holds: {out}");
    assert!(out.contains("REFUSED  hash_mismatch: model.onnx does not match its SHA-256"), "{out}");

    // An edited manifest: refused until it is signed again.
    let edited = dir.path().join("edited.lsmodel");
    copy_dir(&package, &edited);
    let text = std::fs::read_to_string(edited.join("manifest.json")).unwrap();
    std::fs::write(edited.join("manifest.json"), text.replace("\"version\": 7", "\"version\": 8")).unwrap();
    let (code, out, _) = linesight(&["model", "verify", "--package", &s(&edited), "--key", &s(&public)]);
    assert_eq!(code, 1);
    assert!(out.contains("REFUSED  bad_signature"), "{out}");
    let (code, out, err) = linesight(&["model", "sign", "--package", &s(&edited), "--key", &s(&key)]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = linesight(&["model", "verify", "--package", &s(&edited), "--key", &s(&public)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("accepted: surface-classifier version 8"), "{out}");

    // Without --out the package is made in the current folder, under its usual name.
    let golden = format!("{}=OK", s(&repo().join("samples/parts/001_good.png")));
    let (code, out, err) = linesight_in(
        dir.path(),
        &[
            "model",
            "pack",
            "--model",
            &s(&model),
            "--name",
            "surface-classifier",
            "--version",
            "9",
            "--key",
            "plant.key",
        ]
        .iter()
        .copied()
        .chain(["--golden", &golden])
        .collect::<Vec<_>>(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(dir.path().join("surface-classifier-9.lsmodel/manifest.sig").is_file());
    assert!(out.contains("expires: never"), "{out}");

    // Another key: refused as unknown; a key file that is not a key: exit 78.
    let other = dir.path().join("other.key");
    assert_eq!(linesight(&["model", "keygen", "--out", &s(&other)]).0, 0);
    let (code, out, _) =
        linesight(&["model", "verify", "--package", &s(&package), "--key", &s(&dir.path().join("other.key.pub"))]);
    assert_eq!(code, 1);
    assert!(out.contains("REFUSED  unknown_key") && out.contains("rollout.trusted_keys"), "{out}");
    let (code, _, err) = linesight(&["model", "verify", "--package", &s(&package), "--key", &s(&model)]);
    assert_eq!(code, 78);
    assert!(err.contains("surface-classifier.onnx"), "{err}");
    // So is a usage error (no --key); help is not an error.
    let (code, _, err) = linesight(&["model", "verify", "--package", &s(&package)]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("--key"), "{err}");
    let (code, out, _) = linesight(&["model", "verify", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--installed-version"), "{out}");
}

#[test]
fn pack_refuses_what_a_node_could_not_check() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    assert_eq!(linesight(&["model", "keygen", "--out", &s(&key)]).0, 0);
    let model = repo().join("models/surface-anomaly.onnx");
    let out = s(dir.path());
    let base =
        ["model", "pack", "--model", &s(&model), "--name", "m", "--version", "1", "--key", &s(&key), "--out", &out];
    // No golden images.
    let (code, _, err) = linesight(&base);
    assert_eq!(code, 1);
    assert!(err.contains("no golden images") && err.contains("samples/parts"), "{err}");
    // A kind that contradicts the sidecar.
    let good = repo().join("samples/parts/001_good.png");
    let golden = format!("{}=OK", s(&good));
    let (code, _, err) = linesight(&[&base[..], &["--kind", "classifier", "--golden", &golden]].concat());
    assert_eq!(code, 1);
    assert!(err.contains("--kind classifier but the sidecar"), "{err}");
    // A golden image that is not an image.
    let not_image = format!("{}=OK", s(&model));
    let (code, _, err) = linesight(&[&base[..], &["--golden", &not_image]].concat());
    assert_eq!(code, 1);
    assert!(err.contains("is not a readable PNG or JPEG"), "{err}");
    assert!(!dir.path().join("m-1.lsmodel").exists());
}

#[test]
fn verify_with_a_node_config_decides_as_that_node() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("plant.key");
    assert_eq!(linesight(&["model", "keygen", "--out", &s(&key)]).0, 0);
    let yaml = format!(
        "{}rollout:\n  trusted_keys:\n    - name: plant\n      file: plant.key.pub\n",
        node_yaml("127.0.0.1:1502", 1883, "", 10.0)
    );
    let config = write_config(dir.path(), &yaml);
    let model = repo().join("models/surface-classifier.onnx");
    let golden = format!("{}=NG", s(&repo().join("samples/parts/000_chip.png")));
    let pack = |version: &str, name: &str| {
        let out = dir.path().join(format!("{name}-{version}.lsmodel"));
        let (model, key, to) = (s(&model), s(&key), s(&out));
        let args = ["model", "pack", "--model", &model, "--name", name, "--version", version];
        let args = [&args[..], &["--key", &key, "--golden", &golden, "--out", &to]].concat();
        let (code, o, e) = linesight(&args);
        assert_eq!(code, 0, "{o}{e}");
        out
    };
    let v2 = pack("2", "surface");
    let verify = |package: &Path| linesight(&["model", "verify", "--package", &s(package), "--config", &s(&config)]);
    let (code, out, err) = verify(&v2);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("1 trusted key(s), model `surface` of kind classifier, highest installed version none"),
        "{out}"
    );
    assert!(out.contains("signed by `plant`"), "the config's name for the key: {out}");

    // The node stages version 2 (as its install does); the same package is then not newer.
    let trusted =
        linesight::rollout::keys::trusted(&linesight::config::load_file(&config).unwrap().config().rollout).unwrap();
    let verified =
        linesight::rollout::verify::check(&v2, "surface", &trusted, &linesight::rollout::verify::Expect::here())
            .unwrap();
    let slots = linesight::rollout::slots::Slots::open(&dir.path().join("state"), "surface").unwrap();
    slots.stage(&verified).unwrap();
    let (code, out, _) = verify(&v2);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("highest installed version 2") && out.contains("REFUSED  not_newer"), "{out}");
    assert_eq!(verify(&pack("3", "surface")).0, 0);

    // A package for a model entry the node does not have is refused as asked wrongly.
    let other = pack("1", "other");
    let (code, _, err) = verify(&other);
    assert_eq!(code, 78);
    assert!(err.contains("has no model `other` (it has: surface)"), "{err}");
}
