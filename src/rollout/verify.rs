//! Every check a node makes before it accepts a package, in one function ([`check`]), used by
//! the daemon's install and by `linesight model verify` alike, so that what an engineer sees on
//! the packing machine is what the node will decide.
//!
//! The signature is checked first, before any field of the manifest is believed; then the
//! fields; then every file against its size and SHA-256. The first failure refuses the package
//! with a [`Refusal`] that says what is wrong and how to fix it.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::keys::{Signature, TrustedKey};
use super::manifest::{self, Manifest, ARCHES, FORMAT, KINDS, MANIFEST_FILE, PROVIDERS, SIGNATURE_FILE, VERDICTS};
use crate::util::{hex, time};

/// What this node expects of a package.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    /// The kind of the model entry it replaces (`None`: any kind is accepted).
    pub kind: Option<&'a str>,
    /// This machine's architecture (`std::env::consts::ARCH`).
    pub arch: &'a str,
    /// Highest version ever installed for this model (`Slots::highest_installed`): a package at
    /// or below it is refused, so an old, perhaps flawed, package cannot be replayed.
    pub installed: Option<u64>,
    /// The wall clock, for `expires`.
    pub now: SystemTime,
}

impl Expect<'static> {
    /// This machine now: its architecture and clock, with no kind and no installed version.
    pub fn here() -> Expect<'static> {
        Expect { kind: None, arch: std::env::consts::ARCH, installed: None, now: SystemTime::now() }
    }
}

/// Why a package is refused. Each message says what is wrong and how to fix it; [`Refusal::code`]
/// is the short machine reason published with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("package {0} does not exist or is not a folder; give the path of the `<name>-<version>.lsmodel` folder")]
    NotFound(String),
    #[error("the package is malformed: {0}; make it again with `linesight model pack`")]
    Malformed(String),
    #[error(
        "{SIGNATURE_FILE} is missing: the package is not signed; sign it with `linesight model sign --package DIR --key KEY`"
    )]
    Unsigned,
    #[error(
        "the package is signed by key {key_id}, which this node does not trust; add its public key to \
         rollout.trusted_keys, or sign the package with a trusted key"
    )]
    UnknownKey { key_id: String },
    #[error(
        "{SIGNATURE_FILE} does not verify {MANIFEST_FILE}: the manifest was changed after it was signed; \
         if the change is intended, sign it again with `linesight model sign`, else use the original package"
    )]
    BadSignature,
    #[error("the package is for model `{found}`, not `{expected}`; install it for `{found}`, or pack it with --name {expected}")]
    WrongName { expected: String, found: String },
    #[error(
        "version {version} is not newer than version {installed}, the highest ever installed for this model; \
         pack it again with --version {next} or higher",
        next = installed + 1
    )]
    NotNewer { version: u64, installed: u64 },
    #[error("wrong target: {0}")]
    WrongTarget(String),
    #[error("the package needs linesight {needs} or newer, this is {have}; update linesight first")]
    TooOld { needs: String, have: String },
    #[error("the package expired at {at}; pack it again with a later --expires or --valid-days")]
    Expired { at: String },
    #[error("{0} is listed in the manifest but missing from the package; copy the whole package folder again")]
    MissingFile(String),
    #[error(
        "{path} is {found} bytes, the manifest says {expected}: the copy was cut short; copy the whole package folder again"
    )]
    Truncated { path: String, expected: u64, found: u64 },
    #[error(
        "{path} is {found} bytes, the manifest says {expected}: it was changed or appended to; use the original package"
    )]
    Grown { path: String, expected: u64, found: u64 },
    #[error("{path} does not match its SHA-256 in the manifest: it was changed or damaged; use the original package")]
    HashMismatch { path: String },
    #[error("unsafe path {0}: a package may only name plain relative files inside its own folder")]
    UnsafePath(String),
    #[error("the package has no golden images: a model must prove itself on this device; pack it with --golden or --golden-dir")]
    NoGolden,
}

impl Refusal {
    /// The short machine reason (for MQTT, metrics and the audit log).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NotFound(_) => "not_found",
            Refusal::Malformed(_) => "malformed",
            Refusal::Unsigned => "unsigned",
            Refusal::UnknownKey { .. } => "unknown_key",
            Refusal::BadSignature => "bad_signature",
            Refusal::WrongName { .. } => "wrong_name",
            Refusal::NotNewer { .. } => "not_newer",
            Refusal::WrongTarget(_) => "wrong_target",
            Refusal::TooOld { .. } => "too_old",
            Refusal::Expired { .. } => "expired",
            Refusal::MissingFile(_) => "missing_file",
            Refusal::Truncated { .. } => "truncated",
            Refusal::Grown { .. } => "grown",
            Refusal::HashMismatch { .. } => "hash_mismatch",
            Refusal::UnsafePath(_) => "unsafe_path",
            Refusal::NoGolden => "no_golden",
        }
    }
}

/// A package that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The package folder, as given.
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// The trusted key that signed it (its config name).
    pub key_name: String,
    /// SHA-256 of the manifest's bytes: names this exact package in logs and history.
    pub manifest_sha256: String,
}

/// Check the package in `dir` for model `model_name`: signature by one of `trusted`, every field
/// against `expect`, every file against its size and hash. Reads every file once.
pub fn check(dir: &Path, model_name: &str, trusted: &[TrustedKey], expect: &Expect) -> Result<Verified, Refusal> {
    check_with(dir, model_name, trusted, expect, &mut |_, _| {})
}

/// [`check`], telling `passed` the name and outcome of each check as it passes (for
/// `linesight model verify`, which prints them).
pub fn check_with(
    dir: &Path,
    model_name: &str,
    trusted: &[TrustedKey],
    expect: &Expect,
    passed: &mut dyn FnMut(&'static str, String),
) -> Result<Verified, Refusal> {
    if !dir.is_dir() {
        return Err(Refusal::NotFound(dir.display().to_string()));
    }
    let bytes = manifest::read_bytes(dir).map_err(|e| {
        if dir.join(MANIFEST_FILE).exists() {
            Refusal::Malformed(e)
        } else {
            Refusal::MissingFile(MANIFEST_FILE.into())
        }
    })?;
    let (m, key) = signature(dir, &bytes, trusted)?;
    passed("signature", format!("signed by `{}` (key {})", key.name, key.key_id()));
    if m.format != FORMAT {
        return Err(Refusal::Malformed(format!("format {}; this linesight reads format {FORMAT}", m.format)));
    }
    if m.key_id != key.key_id() {
        return Err(Refusal::Malformed(format!(
            "key_id {} names another key than the one that signed it ({})",
            m.key_id,
            key.key_id()
        )));
    }
    if m.name != model_name {
        return Err(Refusal::WrongName { expected: model_name.into(), found: m.name.clone() });
    }
    passed("name", m.name.clone());
    if let Some(installed) = expect.installed.filter(|&i| m.version <= i) {
        return Err(Refusal::NotNewer { version: m.version, installed });
    }
    passed(
        "version",
        match expect.installed {
            Some(i) => format!("{} (newer than {i}, the highest installed)", m.version),
            None => format!("{} (none installed)", m.version),
        },
    );
    target(&m, expect)?;
    passed("target", format!("{} on {} ({})", m.target.kind, expect.arch, m.target.providers.join(", ")));
    let have = env!("CARGO_PKG_VERSION");
    let needs = manifest::semver(&m.min_linesight).ok_or_else(|| {
        Refusal::Malformed(format!("min_linesight `{}` is not a version like 0.1.0", m.min_linesight))
    })?;
    if needs > manifest::semver(have).unwrap_or_default() {
        return Err(Refusal::TooOld { needs: m.min_linesight.clone(), have: have.into() });
    }
    passed("linesight version", format!("needs {}, this is {have}", m.min_linesight));
    dates(&m, expect)?;
    passed("expiry", m.expires.clone().map_or("never expires".into(), |at| format!("valid until {at}")));
    listing(&m)?;
    passed("golden images", format!("{} ({} OK, {} NG)", m.golden.len(), count(&m, "OK"), count(&m, "NG")));
    files(dir, &m)?;
    let total: u64 = m.files.iter().map(|f| f.bytes).sum();
    passed("files", format!("{} files, {total} bytes, sizes and SHA-256 match", m.files.len()));
    Ok(Verified {
        dir: dir.to_path_buf(),
        manifest_sha256: hex::encode(&Sha256::digest(&bytes)),
        manifest: m,
        key_name: key.name.clone(),
    })
}

fn count(m: &Manifest, verdict: &str) -> usize {
    m.golden.iter().filter(|g| g.verdict == verdict).count()
}

/// The signature over the manifest's exact bytes, by a trusted key; only then is the manifest
/// parsed and believed. Which key signed is found by trying each one (a node trusts a handful),
/// so a forged `key_id` cannot pick the key.
fn signature<'k>(dir: &Path, bytes: &[u8], trusted: &'k [TrustedKey]) -> Result<(Manifest, &'k TrustedKey), Refusal> {
    let sig_path = dir.join(SIGNATURE_FILE);
    let text = match std::fs::read_to_string(&sig_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Refusal::Unsigned),
        Err(e) => return Err(Refusal::Malformed(format!("{SIGNATURE_FILE}: {e}"))),
    };
    let sig = hex::decode_array::<64>(&text)
        .map_err(|e| Refusal::Malformed(format!("{SIGNATURE_FILE} is not a hex Ed25519 signature: {e}")))?;
    let sig = Signature::from_bytes(&sig);
    let signer = trusted.iter().find(|k| k.key.verify_strict(bytes, &sig).is_ok());
    let parsed = Manifest::parse(bytes);
    match (signer, parsed) {
        (Some(k), Ok(m)) => Ok((m, k)),
        (Some(_), Err(e)) => Err(Refusal::Malformed(format!("{MANIFEST_FILE}: {e}"))),
        // Not verified by any trusted key: an untrusted signer, or a changed manifest. The
        // manifest's own key_id (not believed, only used to choose the message) tells which.
        (None, Ok(m)) if !trusted.iter().any(|k| k.key_id() == m.key_id) => {
            Err(Refusal::UnknownKey { key_id: m.key_id })
        }
        (None, _) => Err(Refusal::BadSignature),
    }
}

fn target(m: &Manifest, expect: &Expect) -> Result<(), Refusal> {
    let t = &m.target;
    if !KINDS.contains(&t.kind.as_str()) {
        return Err(Refusal::Malformed(format!("target.kind `{}` is not one of {}", t.kind, KINDS.join(", "))));
    }
    if let Some(kind) = expect.kind.filter(|k| *k != t.kind) {
        return Err(Refusal::WrongTarget(format!(
            "the package holds a model of kind {}, this model entry's kind is {kind}; pack a model of kind {kind}, \
             or change the entry's kind in the config first",
            t.kind
        )));
    }
    for p in &t.providers {
        if !PROVIDERS.contains(&p.as_str()) {
            return Err(Refusal::Malformed(format!("target.providers: `{p}` is not one of {}", PROVIDERS.join(", "))));
        }
    }
    for a in &t.arch {
        if !ARCHES.contains(&a.as_str()) {
            return Err(Refusal::Malformed(format!("target.arch: `{a}` is not one of {}", ARCHES.join(", "))));
        }
    }
    if !t.arch.iter().any(|a| a == expect.arch) {
        return Err(Refusal::WrongTarget(format!(
            "the package is for {}, this machine is {}; pack it with --arch {}",
            t.arch.join(", "),
            expect.arch,
            expect.arch
        )));
    }
    Ok(())
}

fn dates(m: &Manifest, expect: &Expect) -> Result<(), Refusal> {
    if time::parse_rfc3339_ms(&m.created).is_none() {
        return Err(Refusal::Malformed(format!("created `{}` is not an RFC 3339 time", m.created)));
    }
    if let Some(at) = &m.expires {
        let ms = time::parse_rfc3339_ms(at)
            .ok_or_else(|| Refusal::Malformed(format!("expires `{at}` is not an RFC 3339 time")))?;
        let now = expect.now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        if now >= ms {
            return Err(Refusal::Expired { at: at.clone() });
        }
    }
    Ok(())
}

/// The manifest's paths: all safe, each listed once; the model, sidecar and golden images listed.
fn listing(m: &Manifest) -> Result<(), Refusal> {
    let named = m.files.iter().map(|f| f.path.as_str()).chain([m.model.as_str()]).chain(m.sidecar.as_deref());
    for path in named.chain(m.golden.iter().map(|g| g.image.as_str())) {
        if let Some(why) = manifest::unsafe_path(path) {
            return Err(Refusal::UnsafePath(format!("`{path}` ({why})")));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for f in &m.files {
        if !seen.insert(f.path.as_str()) {
            return Err(Refusal::Malformed(format!("`{}` is listed twice in files", f.path)));
        }
        if f.sha256.len() != 64 || hex::decode(&f.sha256).is_err() {
            return Err(Refusal::Malformed(format!("the sha256 of `{}` is not 64 hex digits", f.path)));
        }
    }
    let listed = |what: &str, path: &str| {
        if m.file(path).is_none() {
            return Err(Refusal::Malformed(format!("{what} `{path}` is not listed in files")));
        }
        Ok(())
    };
    listed("model", &m.model)?;
    if let Some(s) = &m.sidecar {
        listed("sidecar", s)?;
    }
    if m.golden.is_empty() {
        return Err(Refusal::NoGolden);
    }
    for g in &m.golden {
        listed("golden image", &g.image)?;
        if !VERDICTS.contains(&g.verdict.as_str()) {
            return Err(Refusal::Malformed(format!(
                "golden image `{}`: verdict `{}` is not OK or NG",
                g.image, g.verdict
            )));
        }
    }
    Ok(())
}

/// Each listed file: inside the folder (a symlink may not lead out of it), present, of its size
/// and hash.
fn files(dir: &Path, m: &Manifest) -> Result<(), Refusal> {
    let root = dir.canonicalize().map_err(|_| Refusal::NotFound(dir.display().to_string()))?;
    for f in &m.files {
        let path = dir.join(&f.path);
        if path.symlink_metadata().is_err() {
            return Err(Refusal::MissingFile(f.path.clone()));
        }
        let real = path.canonicalize().map_err(|_| Refusal::MissingFile(f.path.clone()))?;
        if !real.starts_with(&root) {
            return Err(Refusal::UnsafePath(format!("`{}` leads outside the package, to {}", f.path, real.display())));
        }
        if !real.is_file() {
            return Err(Refusal::Malformed(format!("`{}` is not a regular file", f.path)));
        }
        let (sha, bytes) =
            manifest::sha256_file(&real).map_err(|e| Refusal::Malformed(format!("`{}`: {e}", f.path)))?;
        if bytes < f.bytes {
            return Err(Refusal::Truncated { path: f.path.clone(), expected: f.bytes, found: bytes });
        }
        if bytes > f.bytes {
            return Err(Refusal::Grown { path: f.path.clone(), expected: f.bytes, found: bytes });
        }
        if sha != f.sha256.to_ascii_lowercase() {
            return Err(Refusal::HashMismatch { path: f.path.clone() });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::super::keys::sign_hex;
    use super::super::manifest::FileEntry;
    use super::super::testing::{self, edit, key, options, package, trusted};
    use super::*;

    fn expect() -> Expect<'static> {
        Expect { kind: Some("classifier"), arch: "x86_64", installed: None, now: SystemTime::now() }
    }

    fn refused(dir: &Path, e: &Expect) -> Refusal {
        let r = check(dir, "surface-classifier", &trusted(1), e).unwrap_err();
        // Every refusal says what to do.
        let text = r.to_string();
        assert!(text.contains(';') || text.contains("pack") || text.contains("copy"), "{text}");
        r
    }

    #[test]
    fn a_good_package_is_accepted_and_each_check_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = package(&options(tmp.path()));
        let mut seen = Vec::new();
        let v = check_with(&dir, "surface-classifier", &trusted(1), &expect(), &mut |c, _| seen.push(c)).unwrap();
        assert_eq!(v.key_name, "key1");
        assert_eq!(v.manifest.version, 3);
        assert_eq!(v.manifest.target.kind, "classifier");
        assert_eq!(v.manifest.files.len(), 4);
        assert_eq!(
            seen,
            ["signature", "name", "version", "target", "linesight version", "expiry", "golden images", "files"]
        );
        // Newer than what is installed, and on the other architecture it was packed for.
        let e = Expect { installed: Some(2), arch: "aarch64", ..expect() };
        assert!(check(&dir, "surface-classifier", &trusted(1), &e).is_ok());
    }

    #[test]
    fn a_package_signed_by_an_unknown_key_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = package(&options(tmp.path()));
        let r = check(&dir, "surface-classifier", &trusted(2), &expect()).unwrap_err();
        assert_eq!(r, Refusal::UnknownKey { key_id: testing::trusted(1)[0].key_id() });
        assert!(r.to_string().contains("rollout.trusted_keys"));
        let none = check(&dir, "surface-classifier", &[], &expect()).unwrap_err();
        assert_eq!(none.code(), "unknown_key");
    }

    #[test]
    fn one_changed_byte_of_the_manifest_breaks_the_signature() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = package(&options(tmp.path()));
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        let changed = text.replacen("\"version\": 3", "\"version\": 4", 1);
        assert_eq!(changed.len(), text.len());
        assert_ne!(changed, text);
        std::fs::write(&path, changed).unwrap();
        assert_eq!(refused(&dir, &expect()), Refusal::BadSignature);
        std::fs::remove_file(dir.join(SIGNATURE_FILE)).unwrap();
        assert_eq!(refused(&dir, &expect()), Refusal::Unsigned);
    }

    #[test]
    fn a_tampered_truncated_grown_or_missing_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = package(&options(tmp.path()));
        let model = dir.join("model.onnx");
        let original = std::fs::read(&model).unwrap();
        let mut tampered = original.clone();
        let mid = tampered.len() / 2;
        tampered[mid] ^= 0x01;
        std::fs::write(&model, &tampered).unwrap();
        assert_eq!(refused(&dir, &expect()), Refusal::HashMismatch { path: "model.onnx".into() });
        std::fs::write(&model, &original[..100]).unwrap();
        let r = refused(&dir, &expect());
        assert_eq!(r, Refusal::Truncated { path: "model.onnx".into(), expected: original.len() as u64, found: 100 });
        assert!(r.to_string().contains("cut short"));
        let mut longer = original.clone();
        longer.push(0);
        std::fs::write(&model, &longer).unwrap();
        assert_eq!(refused(&dir, &expect()).code(), "grown");
        std::fs::write(&model, &original).unwrap();
        assert!(check(&dir, "surface-classifier", &trusted(1), &expect()).is_ok());
        std::fs::remove_file(dir.join("golden/0002.png")).unwrap();
        assert_eq!(refused(&dir, &expect()), Refusal::MissingFile("golden/0002.png".into()));
    }

    #[test]
    fn paths_out_of_the_package_are_refused_even_when_signed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = package(&options(tmp.path()));
        std::fs::write(tmp.path().join("x"), b"outside").unwrap();
        edit(&dir, |m| {
            m.files.push(FileEntry { path: "../x".into(), sha256: "00".repeat(32), bytes: 7 });
        });
        assert_eq!(refused(&dir, &expect()).code(), "unsafe_path");
        edit(&dir, |m| {
            m.files.pop();
            m.model = "/etc/passwd".into();
        });
        assert_eq!(refused(&dir, &expect()).code(), "unsafe_path");
        // A symlink that leads out of the folder, even to a file of the right content.
        edit(&dir, |m| m.model = "model.onnx".into());
        let model = dir.join("model.onnx");
        let outside = tmp.path().join("outside.onnx");
        std::fs::rename(&model, &outside).unwrap();
        std::os::unix::fs::symlink(&outside, &model).unwrap();
        let r = refused(&dir, &expect());
        assert_eq!(r.code(), "unsafe_path");
        assert!(r.to_string().contains("outside"), "{r}");
    }

    #[test]
    fn an_older_or_equal_version_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = package(&options(tmp.path()));
        for installed in [3, 7] {
            let r = refused(&dir, &Expect { installed: Some(installed), ..expect() });
            assert_eq!(r, Refusal::NotNewer { version: 3, installed });
            assert!(r.to_string().contains(&format!("--version {}", installed + 1)));
        }
    }

    #[test]
    fn a_wrong_kind_arch_or_name_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut o = options(tmp.path());
        o.arch = vec!["x86_64".into()];
        let dir = package(&o);
        let r = refused(&dir, &Expect { kind: Some("anomaly"), ..expect() });
        assert_eq!(r.code(), "wrong_target");
        assert!(r.to_string().contains("kind classifier, this model entry's kind is anomaly"), "{r}");
        let r = refused(&dir, &Expect { arch: "aarch64", ..expect() });
        assert_eq!(r.code(), "wrong_target");
        assert!(r.to_string().contains("--arch aarch64"), "{r}");
        let r = check(&dir, "other-model", &trusted(1), &expect()).unwrap_err();
        assert_eq!(r, Refusal::WrongName { expected: "other-model".into(), found: "surface-classifier".into() });
    }

    #[test]
    fn a_package_for_a_newer_linesight_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut o = options(tmp.path());
        o.min_linesight = "99.0.0".into();
        let dir = package(&o);
        let r = refused(&dir, &expect());
        assert_eq!(r, Refusal::TooOld { needs: "99.0.0".into(), have: env!("CARGO_PKG_VERSION").into() });
    }

    #[test]
    fn an_expired_package_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut o = options(tmp.path());
        o.expires = Some("2030-01-01T00:00:00Z".into());
        let dir = package(&o);
        let before = UNIX_EPOCH + Duration::from_secs(1_893_455_999); // 2029-12-31T23:59:59Z
        assert!(check(&dir, "surface-classifier", &trusted(1), &Expect { now: before, ..expect() }).is_ok());
        let at = before + Duration::from_secs(1);
        let r = refused(&dir, &Expect { now: at, ..expect() });
        assert_eq!(r, Refusal::Expired { at: "2030-01-01T00:00:00Z".into() });
    }

    #[test]
    fn a_signed_manifest_that_is_not_a_manifest_is_malformed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = package(&options(tmp.path()));
        let bytes = b"{\"format\": 1, \"name\": ".to_vec();
        std::fs::write(dir.join(MANIFEST_FILE), &bytes).unwrap();
        std::fs::write(dir.join(SIGNATURE_FILE), sign_hex(&key(1), &bytes)).unwrap();
        let r = refused(&dir, &expect());
        assert_eq!(r.code(), "malformed");
        assert!(r.to_string().contains("manifest.json"), "{r}");
        // An unknown field is refused too (deny_unknown_fields): a newer format is not half-read.
        let b = tmp.path().join("b");
        std::fs::create_dir(&b).unwrap();
        let dir2 = package(&options(&b));
        let text = std::fs::read_to_string(dir2.join(MANIFEST_FILE)).unwrap().replacen('{', "{\"extra\": 1,", 1);
        std::fs::write(dir2.join(MANIFEST_FILE), &text).unwrap();
        std::fs::write(dir2.join(SIGNATURE_FILE), sign_hex(&key(1), text.as_bytes())).unwrap();
        assert!(refused(&dir2, &expect()).to_string().contains("unknown field"));
    }

    #[test]
    fn a_package_without_golden_images_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = package(&options(tmp.path()));
        edit(&dir, |m| m.golden.clear());
        assert_eq!(refused(&dir, &expect()), Refusal::NoGolden);
        assert_eq!(
            check(&tmp.path().join("nothing"), "surface-classifier", &trusted(1), &expect()).unwrap_err().code(),
            "not_found"
        );
    }
}
