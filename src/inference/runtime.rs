//! ONNX Runtime: loading the shared library once, and building sessions with
//! execution providers in the configured order, reporting which one runs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::ep::{self, ExecutionProviderDispatch};
use ort::session::builder::SessionBuilder;
use ort::session::Session;

use crate::config::{ModelConfig, ProviderConfig, RuntimeConfig};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    Library(String),
    #[error("model `{path}`: {why}")]
    Model { path: PathBuf, why: String },
}

static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();

/// The ONNX Runtime library path: the config, else `ORT_DYLIB_PATH`.
pub fn library_path(cfg: &RuntimeConfig) -> Result<PathBuf, RuntimeError> {
    if let Some(p) = &cfg.onnxruntime {
        return Ok(p.clone());
    }
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => Err(RuntimeError::Library(
            "no ONNX Runtime library configured — set `runtime.onnxruntime` in the config or ORT_DYLIB_PATH \
             (scripts/setup.sh puts one in .cache/onnxruntime; `source scripts/env.sh` sets the variable)"
                .into(),
        )),
    }
}

/// Load ONNX Runtime once per process. The file is checked first because
/// `load-dynamic` has hung on a missing library in the past, and because
/// "cannot open" deserves a better message than a loader error.
pub fn environment(lib: &Path) -> Result<&'static Environment, RuntimeError> {
    let env = ENV.get_or_init(|| {
        if let Err(e) = std::fs::File::open(lib) {
            return Err(format!(
                "ONNX Runtime library `{}` cannot be opened: {e} — run scripts/setup.sh, or point ORT_DYLIB_PATH / runtime.onnxruntime at libonnxruntime.so",
                lib.display()
            ));
        }
        let builder = ort::init_from(lib).map_err(|e| {
            format!("ONNX Runtime library `{}` does not load: {e} — it must be a libonnxruntime.so for this CPU architecture, version 1.22 or later", lib.display())
        })?;
        builder
            .with_name("linesight")
            .build()
            .map_err(|e| format!("ONNX Runtime environment cannot start: {e}"))
    });
    env.as_ref().map_err(|e| RuntimeError::Library(e.clone()))
}

/// A model file's content and its SHA-256 (lower-case hex), refused when the config pins
/// (`models.<m>.sha256`) another hash. Every adapter reads its file through here.
pub fn read_model(cfg: &ModelConfig) -> Result<(Vec<u8>, String), RuntimeError> {
    use sha2::Digest;
    let fail = |why: String| RuntimeError::Model { path: cfg.path.clone(), why };
    let bytes =
        std::fs::read(&cfg.path).map_err(|e| fail(format!("cannot read: {e} (check the path and permissions)")))?;
    let sha256 = super::classifier::hex(&sha2::Sha256::digest(&bytes));
    check_pin(cfg.sha256.as_deref(), &sha256).map_err(fail)?;
    Ok((bytes, sha256))
}

/// The file's hash against the config's pin, if any (hex in either case).
fn check_pin(pin: Option<&str>, actual: &str) -> Result<(), String> {
    match pin {
        Some(want) if !want.eq_ignore_ascii_case(actual) => Err(format!(
            "its sha256 is {actual}, the config pins {} (models.<name>.sha256): this is not the file that was pinned; copy the right one, or pin this one",
            want.to_ascii_lowercase()
        )),
        _ => Ok(()),
    }
}

/// What happened to each configured execution provider.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProviderReport {
    pub name: &'static str,
    pub registered: bool,
    /// Why it did not register.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A session and the providers behind it.
pub struct BuiltSession {
    pub session: Session,
    /// The provider that runs the model: the first one that registered.
    pub provider: &'static str,
    pub reports: Vec<ProviderReport>,
}

pub fn provider_name(p: &ProviderConfig) -> &'static str {
    match p {
        ProviderConfig::Tensorrt(_) => "tensorrt",
        ProviderConfig::Cuda(_) => "cuda",
        ProviderConfig::Cpu(_) => "cpu",
    }
}

/// The TensorRT version installed, from the library's file name
/// (`libnvinfer.so.10.3.0` gives `10.3.0`), or `none`.
fn tensorrt_version() -> String {
    let dirs = ["/usr/lib/aarch64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/local/cuda/lib64", "/usr/lib"];
    let mut best: Option<String> = None;
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(d) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(v) = name.strip_prefix("libnvinfer.so.") {
                if best.as_ref().map_or(true, |b| v.len() > b.len()) {
                    best = Some(v.to_string());
                }
            }
        }
    }
    best.unwrap_or_else(|| "none".into())
}

/// The GPU's name: the NVIDIA driver's report on a PC, the board on a Jetson, or `unknown`.
fn gpu_name(device: u32) -> String {
    let from_driver = std::fs::read_dir("/proc/driver/nvidia/gpus").ok().and_then(|rd| {
        let mut gpus: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        gpus.sort();
        let info = std::fs::read_to_string(gpus.get(device as usize)?.join("information")).ok()?;
        info.lines().find_map(|l| l.strip_prefix("Model:").map(|m| m.trim().to_string()))
    });
    from_driver
        .or_else(|| {
            std::fs::read_to_string("/proc/device-tree/model").ok().map(|m| m.trim_end_matches('\0').trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The engine cache folder for one model: built engines are only valid for
/// the model, the TensorRT version, the GPU and the precision they were built
/// for, so each combination gets its own folder and a change of any of them
/// builds afresh instead of loading an engine that does not fit.
pub fn engine_cache_dir(root: &Path, model_sha256: &str, fp16: bool, device: u32) -> PathBuf {
    let key = format!(
        "{}-trt{}-{}-{}",
        &model_sha256[..model_sha256.len().min(16)],
        tensorrt_version(),
        gpu_name(device),
        if fp16 { "fp16" } else { "fp32" }
    );
    let key: String =
        key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect();
    root.join(key)
}

fn dispatch(p: &ProviderConfig, model_sha256: &str) -> ExecutionProviderDispatch {
    match p {
        ProviderConfig::Tensorrt(t) => {
            let mut trt = ep::TensorRT::default().with_device_id(t.device as i32).with_fp16(t.fp16);
            if let Some(root) = &t.engine_cache {
                let dir = engine_cache_dir(root, model_sha256, t.fp16, t.device);
                tracing::info!(dir = %dir.display(), "TensorRT engine cache (a first start builds the engine: minutes, not READY until done)");
                let dir = dir.to_string_lossy().to_string();
                trt = trt
                    .with_engine_cache(true)
                    .with_engine_cache_path(&dir)
                    .with_timing_cache(true)
                    .with_timing_cache_path(&dir);
            }
            trt.build().error_on_failure()
        }
        ProviderConfig::Cuda(c) => ep::CUDA::default().with_device_id(c.device as i32).build().error_on_failure(),
        ProviderConfig::Cpu(_) => ep::CPU::default().build().error_on_failure(),
    }
}

/// Build a session: register each provider in order, keep every one that
/// registers (ONNX Runtime places each node on the first that supports it),
/// and report the others with the reason. CPU is the last resort even when
/// not listed, and that fallback is reported, never silent.
/// `model` names the file in messages; `bytes` is its content (read once by the caller).
pub fn build_session(
    env: &Environment,
    model: &Path,
    bytes: &[u8],
    providers: &[ProviderConfig],
    threads: usize,
) -> Result<BuiltSession, RuntimeError> {
    let fail = |why: String| RuntimeError::Model { path: model.to_path_buf(), why };
    let model_sha256: String = {
        use sha2::Digest;
        sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
    };
    let cpu_threads = providers
        .iter()
        .find_map(|p| match p {
            ProviderConfig::Cpu(c) => c.threads,
            _ => None,
        })
        .unwrap_or(threads)
        .max(1);
    let mut builder: SessionBuilder = Session::builder(env)
        .map_err(|e| fail(e.to_string()))?
        .with_intra_threads(cpu_threads)
        .map_err(|e| fail(e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| fail(e.to_string()))?;
    let mut reports = Vec::new();
    let mut provider = None;
    for p in providers {
        let name = provider_name(p);
        match dispatch(p, &model_sha256).register(&mut builder) {
            Ok(()) => {
                tracing::info!(model = %model.display(), provider = name, "execution provider registered");
                provider.get_or_insert(name);
                reports.push(ProviderReport { name, registered: true, error: None });
            }
            Err(e) => {
                tracing::warn!(model = %model.display(), provider = name, error = %e, "execution provider cannot register; trying the next one");
                reports.push(ProviderReport { name, registered: false, error: Some(e.to_string()) });
            }
        }
    }
    let provider = match provider {
        Some(p) => p,
        None => {
            tracing::warn!(model = %model.display(), "no configured execution provider registered; running on the CPU");
            "cpu"
        }
    };
    let session = builder.commit_from_memory(bytes).map_err(|e| {
        fail(format!("ONNX Runtime refuses it: {e} (is it a complete ONNX file? re-export it or copy it again)"))
    })?;
    Ok(BuiltSession { session, provider, reports })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_is_compared_in_either_case_and_a_mismatch_names_both_hashes() {
        let actual = "ab".repeat(32);
        assert!(check_pin(None, &actual).is_ok());
        assert!(check_pin(Some(&"AB".repeat(32)), &actual).is_ok());
        let e = check_pin(Some(&"CD".repeat(32)), &actual).unwrap_err();
        assert!(e.contains(&actual) && e.contains(&"cd".repeat(32)), "{e}");
    }

    #[test]
    fn the_engine_cache_is_keyed_by_model_tensorrt_gpu_and_precision() {
        let a = engine_cache_dir(Path::new("/cache"), "0123456789abcdef0123", true, 0);
        let b = engine_cache_dir(Path::new("/cache"), "0123456789abcdef0123", false, 0);
        let c = engine_cache_dir(Path::new("/cache"), "fedcba9876543210aaaa", true, 0);
        assert!(a.starts_with("/cache") && a != b && a != c);
        let name = a.file_name().unwrap().to_string_lossy().to_string();
        assert!(name.starts_with("0123456789abcdef-trt") && name.ends_with("-fp16"), "{name}");
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)), "{name}");
    }
}
