//! Making a package (`linesight model pack`) and signing one again (`linesight model sign`).
//!
//! A package is built in a hidden sibling folder and renamed into place when complete, so a
//! node watching its drop folder never sees half a package under the final name.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::keys::{key_id, sign_hex, SigningKey};
use super::manifest::{
    self, FileEntry, Golden, Manifest, Target, ARCHES, FORMAT, KINDS, MANIFEST_FILE, PROVIDERS, SIGNATURE_FILE,
    VERDICTS,
};
use crate::util::time;

/// The model's file name inside a package.
pub const MODEL_FILE: &str = "model.onnx";
/// The sidecar's file name inside a package (the usual `<model>.json`).
pub const SIDECAR_FILE: &str = "model.onnx.json";

/// What `linesight model pack` was asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct PackOptions {
    pub model: PathBuf,
    pub sidecar: Option<PathBuf>,
    pub name: String,
    pub version: u64,
    /// `None`: read from the sidecar's `kind`.
    pub kind: Option<String>,
    pub providers: Vec<String>,
    pub arch: Vec<String>,
    pub min_linesight: String,
    /// RFC 3339.
    pub expires: Option<String>,
    /// Image and expected verdict (`OK` or `NG`).
    pub golden: Vec<(PathBuf, String)>,
    /// The package folder, or an existing folder to put `<name>-<version>.lsmodel` in.
    pub out: PathBuf,
}

impl PackOptions {
    /// Options with the defaults: CPU, both architectures, this linesight, no expiry.
    pub fn new(model: PathBuf, name: &str, version: u64, out: PathBuf) -> PackOptions {
        PackOptions {
            model,
            sidecar: None,
            name: name.into(),
            version,
            kind: None,
            providers: vec!["cpu".into()],
            arch: ARCHES.iter().map(|a| a.to_string()).collect(),
            min_linesight: env!("CARGO_PKG_VERSION").into(),
            expires: None,
            golden: Vec::new(),
            out,
        }
    }
}

/// `<name>-<version>.lsmodel`, the package folder's usual name.
pub fn default_dir_name(name: &str, version: u64) -> String {
    format!("{name}-{version}.lsmodel")
}

/// Make the package: copy the files, hash them, write and sign the manifest. Returns the
/// package folder and its manifest.
pub fn pack(opts: &PackOptions, key: &SigningKey) -> Result<(PathBuf, Manifest), String> {
    let kind = checked_kind(opts)?;
    check_options(opts)?;
    let out =
        if opts.out.is_dir() { opts.out.join(default_dir_name(&opts.name, opts.version)) } else { opts.out.clone() };
    if out.symlink_metadata().is_ok() {
        return Err(format!("{} already exists; remove it or choose another --out", out.display()));
    }
    let tmp = partial_dir(&out)?;
    let result = build(opts, kind, key, &tmp).and_then(|m| {
        std::fs::rename(&tmp, &out)
            .map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), out.display()))?;
        // A bare relative name's parent is "": the current folder.
        let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        sync_dir(parent)?;
        Ok(m)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.map(|m| (out, m))
}

/// Sign `dir/manifest.json` again with `key` (after an engineer edited it). If the manifest names
/// another key, its `key_id` is set to this key's and the manifest is rewritten first.
pub fn sign(dir: &Path, key: &SigningKey) -> Result<Manifest, String> {
    let path = dir.join(MANIFEST_FILE);
    let mut bytes = manifest::read_bytes(dir)?;
    let mut m = Manifest::parse(&bytes).map_err(|e| format!("{}: {e}; fix the JSON and sign again", path.display()))?;
    let id = key_id(&key.verifying_key());
    if m.key_id != id {
        m.key_id = id;
        bytes = m.to_bytes();
        write_replace(&path, &bytes)?;
    }
    write_replace(&dir.join(SIGNATURE_FILE), sign_hex(key, &bytes).as_bytes())?;
    Ok(m)
}

/// Golden images from a labelled folder: `DIR/good/*` are OK, any other subfolder's images NG.
pub fn golden_dir(dir: &Path) -> Result<Vec<(PathBuf, String)>, String> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("--golden-dir {}: {e}", dir.display()))?;
    let mut subs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    subs.sort();
    for sub in subs {
        if !sub.is_dir() {
            if image_ext(&sub).is_some() {
                return Err(format!(
                    "{}: an image directly in --golden-dir has no label; move it into good/ (OK) or a defect folder (NG)",
                    sub.display()
                ));
            }
            continue;
        }
        let verdict = if sub.file_name().is_some_and(|n| n == "good") { "OK" } else { "NG" };
        let mut images: Vec<PathBuf> = std::fs::read_dir(&sub)
            .map_err(|e| format!("{}: {e}", sub.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && image_ext(p).is_some())
            .collect();
        images.sort();
        out.extend(images.into_iter().map(|p| (p, verdict.to_string())));
    }
    if out.is_empty() {
        return Err(format!(
            "--golden-dir {} holds no PNG or JPEG images in subfolders; put OK images in good/ and NG images in \
             a folder per defect",
            dir.display()
        ));
    }
    Ok(out)
}

/// The `kind` a linesight sidecar declares, if it declares one.
pub fn kind_from_sidecar(path: &Path) -> Result<Option<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("sidecar {}: {e}", path.display()))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("sidecar {} is not JSON: {e}", path.display()))?;
    Ok(doc.get("kind").and_then(|k| k.as_str()).map(str::to_string))
}

/// `png` or `jpg` by the file's first bytes (not its name): a golden image must be one the
/// node can decode.
pub fn image_ext(path: &Path) -> Option<&'static str> {
    let mut head = [0u8; 8];
    let n = std::fs::File::open(path).and_then(|mut f| std::io::Read::read(&mut f, &mut head)).ok()?;
    match &head[..n] {
        [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a] => Some("png"),
        [0xff, 0xd8, 0xff, ..] => Some("jpg"),
        _ => None,
    }
}

fn checked_kind(opts: &PackOptions) -> Result<String, String> {
    let declared = match &opts.sidecar {
        Some(s) => kind_from_sidecar(s)?,
        None => None,
    };
    let kind = match (&opts.kind, declared) {
        (Some(k), Some(d)) if *k != d => {
            return Err(format!(
                "--kind {k} but the sidecar {} says {d}; give the sidecar of this model, or leave --kind out",
                opts.sidecar.as_deref().unwrap_or(Path::new("")).display()
            ))
        }
        (Some(k), _) => k.clone(),
        (None, Some(d)) => d,
        (None, None) => {
            return Err(format!(
                "the model's kind is unknown (no sidecar says it); give --kind, one of {}",
                KINDS.join(", ")
            ))
        }
    };
    if !KINDS.contains(&kind.as_str()) {
        return Err(format!("kind `{kind}` is not one of {}", KINDS.join(", ")));
    }
    Ok(kind)
}

fn check_options(opts: &PackOptions) -> Result<(), String> {
    let n = &opts.name;
    if n.is_empty() || n.len() > 64 || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!("--name `{n}`: use the model's name in the node's config (letters, digits, `-`, `_`)"));
    }
    let known = |what: &str, given: &[String], all: &[&str]| -> Result<(), String> {
        if given.is_empty() {
            return Err(format!("--{what} is empty; give at least one of {}", all.join(", ")));
        }
        match given.iter().find(|g| !all.contains(&g.as_str())) {
            Some(g) => Err(format!("--{what}: `{g}` is not one of {}", all.join(", "))),
            None => Ok(()),
        }
    };
    known("providers", &opts.providers, PROVIDERS)?;
    known("arch", &opts.arch, ARCHES)?;
    if manifest::semver(&opts.min_linesight).is_none() {
        return Err(format!("--min-linesight `{}` is not a version like 0.1.0", opts.min_linesight));
    }
    if let Some(e) = &opts.expires {
        if time::parse_rfc3339_ms(e).is_none() {
            return Err(format!("--expires `{e}` is not an RFC 3339 time such as 2027-06-30T00:00:00Z"));
        }
    }
    if !opts.model.is_file() {
        return Err(format!("--model {} is not a file", opts.model.display()));
    }
    if opts.golden.is_empty() {
        return Err(
            "no golden images: give --golden IMAGE=OK|NG (repeatable) or --golden-dir DIR; a node runs them before it \
             accepts the model. The committed samples are labelled by name (samples/parts/ and \
             models/*-samples/: *_good.png is OK, *_chip.png, *_scratch.png, ... NG)"
                .into(),
        );
    }
    for (image, verdict) in &opts.golden {
        if !VERDICTS.contains(&verdict.as_str()) {
            return Err(format!("golden image {}: verdict `{verdict}` is not OK or NG", image.display()));
        }
        if image_ext(image).is_none() {
            return Err(format!("golden image {} is not a readable PNG or JPEG file", image.display()));
        }
    }
    Ok(())
}

fn build(opts: &PackOptions, kind: String, key: &SigningKey, tmp: &Path) -> Result<Manifest, String> {
    let mut files = Vec::new();
    files.push(copy_in(&opts.model, tmp, MODEL_FILE)?);
    let sidecar = match &opts.sidecar {
        Some(s) => {
            files.push(copy_in(s, tmp, SIDECAR_FILE)?);
            Some(SIDECAR_FILE.to_string())
        }
        None => None,
    };
    let mut golden = Vec::new();
    for (i, (image, verdict)) in opts.golden.iter().enumerate() {
        let ext = image_ext(image).unwrap_or("png");
        let rel = format!("golden/{:04}.{ext}", i + 1);
        files.push(copy_in(image, tmp, &rel)?);
        golden.push(Golden { image: rel, verdict: verdict.clone() });
    }
    sync_dir(&tmp.join("golden")).ok();
    let m = Manifest {
        format: FORMAT,
        name: opts.name.clone(),
        version: opts.version,
        created: time::rfc3339(std::time::SystemTime::now()),
        expires: opts.expires.clone(),
        min_linesight: opts.min_linesight.clone(),
        target: Target { kind, providers: opts.providers.clone(), arch: opts.arch.clone() },
        model: MODEL_FILE.into(),
        sidecar,
        files,
        golden,
        key_id: key_id(&key.verifying_key()),
    };
    let bytes = m.to_bytes();
    write_new(&tmp.join(MANIFEST_FILE), &bytes)?;
    write_new(&tmp.join(SIGNATURE_FILE), sign_hex(key, &bytes).as_bytes())?;
    sync_dir(tmp)?;
    Ok(m)
}

/// Copy `from` to `dir/rel` (fsynced) and describe the copy as the manifest lists it.
fn copy_in(from: &Path, dir: &Path, rel: &str) -> Result<FileEntry, String> {
    let to = dir.join(rel);
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    std::fs::copy(from, &to).map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))?;
    std::fs::File::open(&to).and_then(|f| f.sync_all()).map_err(|e| format!("{}: {e}", to.display()))?;
    let (sha256, bytes) = manifest::sha256_file(&to).map_err(|e| format!("{}: {e}", to.display()))?;
    Ok(FileEntry { path: rel.into(), sha256, bytes })
}

/// A fresh hidden folder beside `out` to build the package in.
fn partial_dir(out: &Path) -> Result<PathBuf, String> {
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(format!("{} does not exist; create it first or choose another --out", parent.display()));
    }
    let name = out.file_name().ok_or_else(|| format!("--out {} names no folder", out.display()))?;
    let tmp = parent.join(format!(".{}.partial-{}", name.to_string_lossy(), std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    Ok(tmp)
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Replace `path` whole: a temp file beside it, fsynced, renamed over it.
fn write_replace(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, bytes)?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

/// fsync a folder, so that a rename in it survives a power cut.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(|e| format!("cannot sync {}: {e}", dir.display()))
}
