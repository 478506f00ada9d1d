//! `manifest.json`: a package's table of contents, the one file its signature covers.
//!
//! Everything else in the package is trusted only through the SHA-256 and size the manifest
//! gives it, so a verified manifest makes every listed file verifiable.

use std::io::Read;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest's file name inside a package.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The signature's file name inside a package: hex Ed25519 over the exact bytes of the manifest.
pub const SIGNATURE_FILE: &str = "manifest.sig";
/// The package format this linesight writes and reads.
pub const FORMAT: u32 = 1;
/// Largest manifest read: a manifest is a few KiB; more is not a manifest.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// The model kinds a package may target (the config's `models.<name>.kind` values).
pub const KINDS: &[&str] = &["classifier", "yolo-detect", "yolo-segment", "yolo-classify", "anomaly"];
/// The execution providers a package may name (the config's `providers` entries).
pub const PROVIDERS: &[&str] = &["cpu", "cuda", "tensorrt"];
/// The CPU architectures a package may name (`std::env::consts::ARCH` values linesight builds for).
pub const ARCHES: &[&str] = &["x86_64", "aarch64"];
/// The verdicts a golden image may expect.
pub const VERDICTS: &[&str] = &["OK", "NG"];

/// The manifest, field for field as in the file (see docs/rollout.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Package format; [`FORMAT`].
    pub format: u32,
    /// The model entry it is for (a `models:` name in the node's config).
    pub name: String,
    /// Monotonic: a node refuses a version at or below the highest it ever installed for this name.
    pub version: u64,
    /// When it was packed (RFC 3339).
    pub created: String,
    /// After this (RFC 3339) a node refuses it; `None`: never.
    pub expires: Option<String>,
    /// Oldest linesight version that can run it (`major.minor.patch`).
    pub min_linesight: String,
    /// Where it may run.
    pub target: Target,
    /// The ONNX file, a path in `files`.
    pub model: String,
    /// Its linesight sidecar (`<model>.json`), a path in `files`, if it has one.
    pub sidecar: Option<String>,
    /// Every file of the package except the manifest and its signature.
    pub files: Vec<FileEntry>,
    /// Images the model must judge as given on the device before it may run; paths in `files`.
    pub golden: Vec<Golden>,
    /// First 16 hex digits of the SHA-256 of the signing public key.
    pub key_id: String,
}

/// What a package runs on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// One of [`KINDS`]: how the model's output is read.
    pub kind: String,
    /// Execution providers it was checked with ([`PROVIDERS`]).
    pub providers: Vec<String>,
    /// CPU architectures it may be installed on ([`ARCHES`]).
    pub arch: Vec<String>,
}

/// One file of the package.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative to the package folder, `/`-separated; never absolute, never `..`.
    pub path: String,
    /// Lower-case hex SHA-256 of its bytes.
    pub sha256: String,
    /// Its size: a short file is reported as truncated, not merely as a wrong hash.
    pub bytes: u64,
}

/// A golden image and the verdict the model must give it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Golden {
    /// A path in `files`.
    pub image: String,
    /// `OK` or `NG`.
    pub verdict: String,
}

impl Manifest {
    /// The manifest as written to `manifest.json`: pretty JSON with a final newline, so that an
    /// engineer can read and edit it (and sign it again with `linesight model sign`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a manifest always serializes");
        v.push(b'\n');
        v
    }

    /// Parse manifest bytes; the error is serde's, with its line and column.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }

    /// The entry of `path` in `files`.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }
}

/// Read `dir/manifest.json`, at most [`MAX_MANIFEST_BYTES`]. Errors name the file.
pub fn read_bytes(dir: &Path) -> Result<Vec<u8>, String> {
    let path = dir.join(MANIFEST_FILE);
    let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(format!("{} is larger than {MAX_MANIFEST_BYTES} bytes: not a manifest", path.display()));
    }
    Ok(bytes)
}

/// Why `path` (a manifest path) could reach outside its package, or `None` when it cannot:
/// relative, `/`-separated, plain names only (no `..`, no `.`, no empty part, no backslash), and not
/// the manifest or its signature (which are not listed files).
pub fn unsafe_path(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("an empty path");
    }
    if path.starts_with('/') || Path::new(path).is_absolute() {
        return Some("an absolute path");
    }
    if path.contains('\\') || path.contains('\0') {
        return Some("a backslash or NUL in the path");
    }
    for part in path.split('/') {
        match part {
            "" => return Some("an empty path segment"),
            "." | ".." => return Some("a `.` or `..` segment"),
            _ => {}
        }
    }
    if !Path::new(path).components().all(|c| matches!(c, Component::Normal(_))) {
        return Some("a path that is not plain names");
    }
    if path == MANIFEST_FILE || path == SIGNATURE_FILE {
        return Some("the manifest or its signature listed as a file");
    }
    None
}

/// SHA-256 (lower-case hex) and size of the file at `path`, read in 64 KiB blocks.
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((crate::util::hex::encode(&hasher.finalize()), total))
}

/// `major.minor.patch` of a version such as `0.1.0` or `1.2.3-rc.1` (the pre-release is ignored:
/// a package says which release it needs); `None` when it is not one.
pub fn semver(text: &str) -> Option<(u64, u64, u64)> {
    let core = text.trim().split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    let v = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_leave_the_package_are_refused() {
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a\\b", "manifest.json", "manifest.sig"] {
            assert!(unsafe_path(bad).is_some(), "{bad}");
        }
        for good in ["model.onnx", "golden/0001.png", "a/b/c.json", "..x", "x.."] {
            assert_eq!(unsafe_path(good), None, "{good}");
        }
    }

    #[test]
    fn versions() {
        assert_eq!(semver("0.1.0"), Some((0, 1, 0)));
        assert_eq!(semver("1.2.3-rc.1"), Some((1, 2, 3)));
        assert_eq!(semver("1.2"), None);
        assert_eq!(semver("1.2.3.4"), None);
        assert_eq!(semver("a.b.c"), None);
    }
}
