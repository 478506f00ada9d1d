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

/// Where the Debian package installs ONNX Runtime (`scripts/package.sh`).
pub const INSTALLED_LIB_DIR: &str = "/usr/lib/linesight";

/// The ONNX Runtime library, found without any environment when it can be. In order:
/// 1. `runtime.onnxruntime` in the config;
/// 2. `ORT_DYLIB_PATH`;
/// 3. `/usr/lib/linesight/libonnxruntime.so*` (the Debian package);
/// 4. `.cache/onnxruntime/<version>/libonnxruntime.so*` in the checkout the executable lives in
///    (found by walking up from it; `scripts/setup.sh` puts the library there), then in the
///    checkout it was built from (when `CARGO_TARGET_DIR` sends the build elsewhere).
///
/// The first two are taken as given (a missing file is reported by [`environment`], naming it);
/// the others only when a library is there. When nothing is found the error lists every place
/// looked at and how to fix it.
pub fn library_path(cfg: &RuntimeConfig) -> Result<PathBuf, RuntimeError> {
    let exe = std::env::current_exe().ok();
    let search = LibrarySearch {
        configured: cfg.onnxruntime.clone(),
        env: std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from),
        installed: PathBuf::from(INSTALLED_LIB_DIR),
        exe,
        build_checkout: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
    };
    let (path, source) = search.find().map_err(RuntimeError::Library)?;
    tracing::debug!(path = %path.display(), source, "ONNX Runtime library");
    Ok(path)
}

/// The places [`library_path`] looks at, as values, so the search can be tested in temp dirs.
#[derive(Debug, Clone, Default)]
pub struct LibrarySearch {
    /// `runtime.onnxruntime` from the config.
    pub configured: Option<PathBuf>,
    /// `ORT_DYLIB_PATH` (empty counts as unset).
    pub env: Option<PathBuf>,
    /// The installed library's folder (`/usr/lib/linesight`).
    pub installed: PathBuf,
    /// The running executable: its ancestors are searched for `.cache/onnxruntime`.
    pub exe: Option<PathBuf>,
    /// The checkout the binary was built from (`CARGO_MANIFEST_DIR` at build time).
    pub build_checkout: Option<PathBuf>,
}

impl LibrarySearch {
    /// The library and which rule found it, or the message naming every place looked at.
    pub fn find(&self) -> Result<(PathBuf, &'static str), String> {
        if let Some(p) = &self.configured {
            return Ok((p.clone(), "runtime.onnxruntime"));
        }
        if let Some(p) = self.env.as_ref().filter(|p| !p.as_os_str().is_empty()) {
            return Ok((p.clone(), "ORT_DYLIB_PATH"));
        }
        if let Some(p) = library_in(&self.installed) {
            return Ok((p, "installed"));
        }
        let mut looked = vec![
            "`runtime.onnxruntime` in the config (not set)".to_string(),
            "ORT_DYLIB_PATH (not set)".to_string(),
            format!("{}/libonnxruntime.so* (none)", self.installed.display()),
        ];
        match &self.exe {
            Some(exe) => {
                if let Some(p) = exe.ancestors().skip(1).find_map(|d| library_in_cache(&d.join(".cache/onnxruntime"))) {
                    return Ok((p, "checkout of the executable"));
                }
                looked.push(format!(
                    ".cache/onnxruntime/<version>/libonnxruntime.so* in every folder above the executable {} (none)",
                    exe.display()
                ));
            }
            None => looked.push("the executable's checkout (its path is unknown)".to_string()),
        }
        if let Some(checkout) = &self.build_checkout {
            let cache = checkout.join(".cache/onnxruntime");
            if let Some(p) = library_in_cache(&cache) {
                return Ok((p, "checkout the binary was built from"));
            }
            looked.push(format!("{}/<version>/libonnxruntime.so* (none)", cache.display()));
        }
        Err(format!(
            "no ONNX Runtime library found; looked at, in order: {} — install the linesight Debian package \
             (it puts the library in {}), or run scripts/setup.sh in the checkout (it puts one in \
             .cache/onnxruntime/<version>/), or set `runtime.onnxruntime` in the config or ORT_DYLIB_PATH to a \
             libonnxruntime.so",
            looked.join("; "),
            self.installed.display()
        ))
    }
}

/// `libonnxruntime.so` in `dir` when it is there, else its highest-versioned `libonnxruntime.so.X.Y.Z`
/// (only files that exist: a dangling symlink does not count). Provider libraries
/// (`libonnxruntime_providers_*.so`) are never taken.
fn library_in(dir: &Path) -> Option<PathBuf> {
    let plain = dir.join("libonnxruntime.so");
    if plain.is_file() {
        return Some(plain);
    }
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let version = version_key(name.strip_prefix("libonnxruntime.so.")?)?;
            e.path().is_file().then(|| (version, e.path()))
        })
        .max()
        .map(|(_, p)| p)
}

/// In a `.cache/onnxruntime` folder (scripts/setup.sh), the library of the highest version among
/// the host's folders, named by the bare version (`1.32.0`; a foreign architecture's folder is
/// `1.32.0-aarch64`, a download in progress `.download-*`: both skipped).
fn library_in_cache(cache: &Path) -> Option<PathBuf> {
    std::fs::read_dir(cache)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = version_key(e.file_name().to_str()?)?;
            Some((version, library_in(&e.path())?))
        })
        .max()
        .map(|(_, p)| p)
}

/// `1.32.0` as numbers for ordering; anything but digits and dots is no version.
fn version_key(s: &str) -> Option<Vec<u64>> {
    s.split('.').map(|p| p.parse::<u64>().ok()).collect()
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

/// The file, in an engine cache folder, that says what its engines were built for.
pub const ENGINE_KEY_FILE: &str = "linesight-engine.key";

/// What a TensorRT engine depends on: the whole model (its full SHA-256), the ONNX Runtime build
/// (which writes and reads the engine files), the TensorRT version, the GPU and device index, and
/// the provider options that change the engine (precision). One `name=value` a line.
pub fn engine_key(model_sha256: &str, onnxruntime: &str, tensorrt: &str, gpu: &str, device: u32, fp16: bool) -> String {
    let clean = |s: &str| s.replace(['\n', '\r'], " ");
    format!(
        "linesight-engine-key=1\nmodel_sha256={}\nonnxruntime={}\ntensorrt={}\ngpu={}\ndevice={device}\nfp16={fp16}\n",
        clean(model_sha256),
        clean(onnxruntime),
        clean(tensorrt),
        clean(gpu)
    )
}

/// What [`check_engine_cache`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineCache {
    /// The key file matches: the engines in the folder were built for this key.
    Valid,
    /// No folder, or an empty one: the engine will be built.
    Empty,
    /// The folder held files under another key, or under none (an older linesight, a copy from
    /// another device, a build cut short): everything in it was removed, the engine will be built.
    Cleared,
}

/// Check an engine cache folder against `key` before ONNX Runtime is pointed at it. Only a
/// folder whose key file says exactly `key` is used as it is; any other content is removed (the
/// folder itself is created 0700 when missing). The key is written by [`write_engine_key`] once
/// the session has been built, so a build cut short leaves a folder without a key, which the next
/// start clears.
pub fn check_engine_cache(dir: &Path, key: &str) -> std::io::Result<EngineCache> {
    let key_file = dir.join(ENGINE_KEY_FILE);
    if std::fs::read_to_string(&key_file).is_ok_and(|k| k == key) {
        return Ok(EngineCache::Valid);
    }
    crate::util::private_fs::create_dir_all(dir)?;
    let mut cleared = false;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
        cleared = true;
    }
    Ok(if cleared { EngineCache::Cleared } else { EngineCache::Empty })
}

/// Record that the engines in `dir` are built for `key` (written atomically, 0600).
pub fn write_engine_key(dir: &Path, key: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{ENGINE_KEY_FILE}.tmp"));
    let mut f = crate::util::private_fs::create(&tmp)?;
    f.write_all(key.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(ENGINE_KEY_FILE))
}

/// The ONNX Runtime build, for the engine key (`ort::info()`: version, git commit, build flags).
fn onnxruntime_build() -> String {
    std::panic::catch_unwind(ort::info).map_or_else(|_| "unknown".to_string(), str::to_string)
}

/// An engine cache folder, checked against its key: `Some((dir, key))` to hand to TensorRT and
/// to write the key into once the session is built, `None` to run without a cache (logged).
fn engine_cache(root: &Path, model_sha256: &str, fp16: bool, device: u32) -> Option<(PathBuf, String)> {
    let dir = engine_cache_dir(root, model_sha256, fp16, device);
    let key = engine_key(model_sha256, &onnxruntime_build(), &tensorrt_version(), &gpu_name(device), device, fp16);
    match check_engine_cache(&dir, &key) {
        Ok(state) => {
            if state == EngineCache::Cleared {
                tracing::warn!(dir = %dir.display(), "TensorRT engine cache held engines built for something else (or of a build cut short): cleared, the engine is built afresh");
            }
            tracing::info!(dir = %dir.display(), reused = state == EngineCache::Valid, "TensorRT engine cache (a first start builds the engine: minutes, not READY until done)");
            Some((dir, key))
        }
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "TensorRT engine cache cannot be checked or cleared; running without it (the engine is built at every start)");
            None
        }
    }
}

fn dispatch(p: &ProviderConfig, model_sha256: &str, keys: &mut Vec<(PathBuf, String)>) -> ExecutionProviderDispatch {
    match p {
        ProviderConfig::Tensorrt(t) => {
            let mut trt = ep::TensorRT::default().with_device_id(t.device as i32).with_fp16(t.fp16);
            if let Some((dir, key)) =
                t.engine_cache.as_deref().and_then(|root| engine_cache(root, model_sha256, t.fp16, t.device))
            {
                let path = dir.to_string_lossy().to_string();
                keys.push((dir, key));
                let dir = path;
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
    let mut engine_keys = Vec::new();
    for p in providers {
        let name = provider_name(p);
        let mut keys = Vec::new();
        match dispatch(p, &model_sha256, &mut keys).register(&mut builder) {
            Ok(()) => {
                // Only a provider that registered builds engines under its key.
                engine_keys.append(&mut keys);
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
    for (dir, key) in engine_keys {
        if let Err(e) = write_engine_key(&dir, &key) {
            tracing::warn!(dir = %dir.display(), error = %e, "TensorRT engine cache key cannot be written; the next start clears the cache and builds again");
        }
    }
    Ok(BuiltSession { session, provider, reports })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake library file (the search only looks at names; nothing is loaded).
    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"not really a library").unwrap();
    }

    fn search(root: &Path) -> LibrarySearch {
        LibrarySearch {
            configured: None,
            env: None,
            installed: root.join("usr/lib/linesight"),
            exe: Some(root.join("checkout/target/debug/linesight")),
            build_checkout: Some(root.join("build-checkout")),
        }
    }

    #[test]
    fn the_library_is_taken_from_the_config_then_the_environment_then_installed_then_the_checkout() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        touch(&r.join("checkout/target/debug/linesight"));
        let mut s = search(r);

        // Nothing anywhere: every place is named, with the fixes.
        let e = s.find().unwrap_err();
        for want in [
            "`runtime.onnxruntime` in the config (not set)",
            "ORT_DYLIB_PATH (not set)",
            &format!("{}/libonnxruntime.so* (none)", r.join("usr/lib/linesight").display()),
            &format!("every folder above the executable {}", r.join("checkout/target/debug/linesight").display()),
            &format!("{}/<version>/libonnxruntime.so* (none)", r.join("build-checkout/.cache/onnxruntime").display()),
            "install the linesight Debian package",
            "run scripts/setup.sh",
        ] {
            assert!(e.contains(want), "`{want}` missing from: {e}");
        }

        // The checkout the binary was built from (CARGO_TARGET_DIR elsewhere).
        let built = r.join("build-checkout/.cache/onnxruntime/1.32.0/libonnxruntime.so.1.32.0");
        touch(&built);
        assert_eq!(s.find().unwrap(), (built, "checkout the binary was built from"));

        // The executable's own checkout, found by walking up; the highest host version wins,
        // a foreign architecture's folder and a download in progress are skipped.
        let cache = r.join("checkout/.cache/onnxruntime");
        touch(&cache.join("1.9.0/libonnxruntime.so.1.9.0"));
        touch(&cache.join("1.32.0/libonnxruntime.so.1.32.0"));
        touch(&cache.join("1.40.0-aarch64/libonnxruntime.so.1.40.0"));
        touch(&cache.join(".download-x86_64/libonnxruntime.so.1.50.0"));
        std::fs::create_dir_all(cache.join("2.0.0")).unwrap(); // a folder without a library
        assert_eq!(s.find().unwrap(), (cache.join("1.32.0/libonnxruntime.so.1.32.0"), "checkout of the executable"));

        // Installed: the highest version, never a provider library.
        let installed = r.join("usr/lib/linesight");
        touch(&installed.join("libonnxruntime.so.1.31.0"));
        touch(&installed.join("libonnxruntime.so.1.32.0"));
        touch(&installed.join("libonnxruntime_providers_shared.so"));
        assert_eq!(s.find().unwrap(), (installed.join("libonnxruntime.so.1.32.0"), "installed"));
        // ... and the plain name when it is there (a symlink to the versioned file).
        std::os::unix::fs::symlink("libonnxruntime.so.1.31.0", installed.join("libonnxruntime.so")).unwrap();
        assert_eq!(s.find().unwrap(), (installed.join("libonnxruntime.so"), "installed"));

        // ORT_DYLIB_PATH (an empty one counts as unset), then the config, taken as given.
        s.env = Some(PathBuf::new());
        assert_eq!(s.find().unwrap().1, "installed");
        s.env = Some(r.join("env/libonnxruntime.so"));
        assert_eq!(s.find().unwrap(), (r.join("env/libonnxruntime.so"), "ORT_DYLIB_PATH"));
        s.configured = Some(r.join("cfg/libonnxruntime.so"));
        assert_eq!(s.find().unwrap(), (r.join("cfg/libonnxruntime.so"), "runtime.onnxruntime"));
    }

    #[test]
    fn a_dangling_symlink_is_no_library() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("usr/lib/linesight");
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink("libonnxruntime.so.1.32.0", dir.join("libonnxruntime.so")).unwrap();
        std::os::unix::fs::symlink("gone", dir.join("libonnxruntime.so.1.32.0")).unwrap();
        assert_eq!(library_in(&dir), None);
        let mut s = search(root.path());
        s.exe = None;
        s.build_checkout = None;
        let e = s.find().unwrap_err();
        assert!(e.contains("the executable's checkout (its path is unknown)"), "{e}");
    }

    #[test]
    fn versions_order_by_number_not_text() {
        assert!(version_key("1.10.0") > version_key("1.9.2"));
        assert_eq!(version_key("1.32.0-aarch64"), None);
        assert_eq!(version_key(".download-x86_64"), None);
        assert_eq!(version_key(""), None);
    }

    #[test]
    fn a_pin_is_compared_in_either_case_and_a_mismatch_names_both_hashes() {
        let actual = "ab".repeat(32);
        assert!(check_pin(None, &actual).is_ok());
        assert!(check_pin(Some(&"AB".repeat(32)), &actual).is_ok());
        let e = check_pin(Some(&"CD".repeat(32)), &actual).unwrap_err();
        assert!(e.contains(&actual) && e.contains(&"cd".repeat(32)), "{e}");
    }

    #[test]
    fn the_engine_key_changes_with_everything_an_engine_depends_on() {
        let sha = "ab".repeat(32);
        let base = engine_key(&sha, "ORT 1.32.0 commit a", "10.3.0", "Orin", 0, true);
        let others = [
            engine_key(
                &"cd".repeat(32), // another model
                "ORT 1.32.0 commit a",
                "10.3.0",
                "Orin",
                0,
                true,
            ),
            engine_key(&sha, "ORT 1.32.1 commit b", "10.3.0", "Orin", 0, true),
            engine_key(&sha, "ORT 1.32.0 commit a", "10.4.0", "Orin", 0, true),
            engine_key(&sha, "ORT 1.32.0 commit a", "10.3.0", "Xavier", 0, true),
            engine_key(&sha, "ORT 1.32.0 commit a", "10.3.0", "Orin", 1, true),
            engine_key(&sha, "ORT 1.32.0 commit a", "10.3.0", "Orin", 0, false),
        ];
        assert!(others.iter().all(|k| *k != base), "{others:#?}");
        assert!(base.contains(&format!("model_sha256={sha}\n")), "the whole hash, not a prefix: {base}");
        // A value cannot forge another line.
        assert_eq!(engine_key(&sha, "x\nfp16=false", "t", "g", 0, true).lines().count(), 7);
    }

    #[test]
    fn an_engine_cache_is_used_only_under_its_own_key() {
        // No GPU here: this checks the key logic that guards the folder handed to TensorRT,
        // not TensorRT reading engines.
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cache/model-trt10-Orin-fp16");
        let key = engine_key(&"ab".repeat(32), "ORT 1.32.0", "10.3.0", "Orin", 0, true);
        // A new folder: created 0700, nothing to use.
        assert_eq!(check_engine_cache(&dir, &key).unwrap(), EngineCache::Empty);
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        // Built (an engine file appears), then the key is written: the next start reuses it.
        std::fs::write(dir.join("engine.trt"), b"engine").unwrap();
        write_engine_key(&dir, &key).unwrap();
        assert_eq!(check_engine_cache(&dir, &key).unwrap(), EngineCache::Valid);
        assert!(dir.join("engine.trt").exists());
        // Another key (say a TensorRT upgrade under the same folder name): everything goes.
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/timing.cache"), b"t").unwrap();
        let other = engine_key(&"ab".repeat(32), "ORT 1.32.0", "10.4.0", "Orin", 0, true);
        assert_eq!(check_engine_cache(&dir, &other).unwrap(), EngineCache::Cleared);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "engines, timing cache and key removed");
        // Engines without a key (a build cut short, an older linesight, a copied folder): cleared.
        std::fs::write(dir.join("engine.trt"), b"half an engine").unwrap();
        assert_eq!(check_engine_cache(&dir, &key).unwrap(), EngineCache::Cleared);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        // A damaged key file is no key.
        write_engine_key(&dir, &key).unwrap();
        std::fs::write(dir.join(ENGINE_KEY_FILE), &key[..key.len() - 2]).unwrap();
        assert_eq!(check_engine_cache(&dir, &key).unwrap(), EngineCache::Cleared);
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
