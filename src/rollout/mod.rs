//! Signed model packages and the per-model slots they are installed into (issue 13, item 4).
//!
//! - [`manifest`]: the package's `manifest.json`: what is in it and for which target;
//! - [`keys`]: Ed25519 keys: generating, reading, the keys a node trusts;
//! - [`verify`]: every check a node makes before it accepts a package, and why it refuses one;
//! - [`slots`]: `<state_dir>/models/<model>/`: staged versions, the active one, the history;
//! - [`pack`]: making and signing a package (the `linesight model` commands).
//!
//! A device-and-store module: it reads files and writes the state directory, imports only
//! `config` and `util`, and knows nothing of sessions or tasks. The daemon (app) decides when
//! to install, shadow, promote and roll back; this module makes each of those steps safe on disk.

pub mod keys;
pub mod manifest;
pub mod pack;
pub mod slots;
pub mod verify;

/// A package made with the real packer from committed files, for the unit tests here.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::{Path, PathBuf};

    use super::keys::{SigningKey, TrustedKey};
    use super::manifest::Manifest;
    use super::pack::{self, PackOptions};

    pub fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    /// A fixed key: tests must not depend on randomness.
    pub fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    pub fn trusted(seed: u8) -> Vec<TrustedKey> {
        vec![TrustedKey { name: format!("key{seed}"), key: key(seed).verifying_key() }]
    }

    /// Options for `surface-classifier` version 3 of the committed classifier, with two golden
    /// images of samples/parts, written into `dir`.
    pub fn options(dir: &Path) -> PackOptions {
        let model = repo().join("models/surface-classifier.onnx");
        let mut o = PackOptions::new(model, "surface-classifier", 3, dir.join("pkg"));
        o.sidecar = Some(repo().join("models/surface-classifier.onnx.json"));
        o.arch = vec!["x86_64".into(), "aarch64".into()];
        o.golden = vec![
            (repo().join("samples/parts/001_good.png"), "OK".into()),
            (repo().join("samples/parts/000_chip.png"), "NG".into()),
        ];
        o
    }

    /// Pack `opts` with key 1; returns the package folder.
    pub fn package(opts: &PackOptions) -> PathBuf {
        pack::pack(opts, &key(1)).unwrap().0
    }

    /// Change the manifest and sign it again with key 1 (a package a trusted signer got wrong).
    pub fn edit(dir: &Path, f: impl FnOnce(&mut Manifest)) {
        let path = dir.join(super::manifest::MANIFEST_FILE);
        let mut m = Manifest::parse(&std::fs::read(&path).unwrap()).unwrap();
        f(&mut m);
        std::fs::write(&path, m.to_bytes()).unwrap();
        pack::sign(dir, &key(1)).unwrap();
    }
}
