//! The `models` section, and `runtime`: the ONNX Runtime library and thread budget that run them.

use std::time::Duration;

use super::super::diagnostic::Collector;
use super::super::types::*;
use super::join;

/// Every model.
pub(super) fn check(config: &Config, c: &mut Collector) {
    for (name, model) in &config.models {
        model_entry(name, model, c);
    }
}

/// One model: its files, its batching, its execution providers.
fn model_entry(name: &str, model: &ModelConfig, c: &mut Collector) {
    let path = ["models", name];
    let at = |k: &'static str| join(&path, &[k]);
    if !model.path.is_file() {
        c.at(
            &at("path"),
            format!("model file `{}` does not exist", model.path.display()),
            "check the path (relative paths start at the config file's folder)",
        );
    }
    if let Some(sidecar) = &model.sidecar {
        if !sidecar.is_file() {
            c.at(
                &at("sidecar"),
                format!("sidecar `{}` does not exist", sidecar.display()),
                "point it at the JSON file the training script wrote, or remove the key",
            );
        }
    }
    if let Some(pin) = &model.sha256 {
        if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
            c.at(
                &at("sha256"),
                format!("sha256 `{pin}` is not a SHA-256 (64 hex digits)"),
                "pin the file with the output of `sha256sum <model>.onnx` (its first word), or remove the key",
            );
        }
    }
    if model.providers.is_empty() {
        c.at(&at("providers"), "no execution provider listed", "list at least `- cpu: {}`");
    }
    if !(1..=64).contains(&model.batch) {
        c.at(
            &at("batch"),
            format!("batch {} is out of range", model.batch),
            "use 1 to 64 frames per inference call (about the number of cameras sharing the model)",
        );
    }
    if model.batch_wait.get() > Duration::from_millis(50) {
        c.at(
            &at("batch_wait"),
            format!("batch_wait {} would hold every part that long", model.batch_wait),
            "keep it at a few milliseconds (at most 50ms): a late verdict is a useless verdict",
        );
    }
    providers(&path, &model.providers, c);
}

/// Each provider listed once, and a CPU thread count in range.
fn providers(path: &[&str], providers: &[ProviderConfig], c: &mut Collector) {
    let mut kinds = Vec::new();
    for (i, p) in providers.iter().enumerate() {
        let idx = i.to_string();
        let kind = std::mem::discriminant(p);
        if kinds.contains(&kind) {
            c.at(
                &join(path, &["providers", idx.as_str()]),
                "this execution provider is listed twice",
                "list each provider once, in priority order",
            );
        }
        kinds.push(kind);
        if let ProviderConfig::Cpu(CpuProvider { threads: Some(t) }) = p {
            if *t == 0 || *t > 256 {
                c.at(
                    &join(path, &["providers", idx.as_str(), "cpu", "threads"]),
                    format!("{t} threads is out of range"),
                    "use 1 to 256",
                );
            }
        }
    }
}

/// The `runtime` section: the thread budget and the ONNX Runtime library.
pub(super) fn runtime(config: &Config, c: &mut Collector) {
    if let Some(threads) = config.runtime.threads {
        if threads == 0 || threads > 256 {
            c.at(&["runtime", "threads"], format!("thread budget {threads} is out of range"), "use 1 to 256");
        }
    }
    if let Some(lib) = &config.runtime.onnxruntime {
        if !lib.is_file() {
            c.at(
                &["runtime", "onnxruntime"],
                format!("ONNX Runtime library `{}` does not exist", lib.display()),
                "point it at libonnxruntime.so (scripts/setup.sh fetches one into .cache/onnxruntime)",
            );
        }
    }
}
