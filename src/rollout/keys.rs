//! Ed25519 keys for model packages.
//!
//! Key files are hex text: the secret file holds the 32-byte seed (mode 0600; it belongs on the
//! packing machine, never on a node), the public file (`<secret>.pub`) the 32-byte public key,
//! which is what a node's `rollout.trusted_keys` lists. A key is named in manifests and messages by
//! its id, the first 16 hex digits of the SHA-256 of the public key: short enough to read out,
//! long enough that two keys of one plant never share it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::config::RolloutConfig;
use crate::util::{hex, private_fs};

/// A public key a node accepts packages from, with the name its config gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrustedKey {
    /// `rollout.trusted_keys[].name`: logged with every install it signed.
    pub name: String,
    pub key: VerifyingKey,
}

impl TrustedKey {
    /// The key's id (see [`key_id`]).
    pub fn key_id(&self) -> String {
        key_id(&self.key)
    }
}

/// First 16 hex digits of the SHA-256 of the public key's 32 bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// A public key from its hex text (64 hex digits); the error says what is wrong with the text.
pub fn parse_public(text: &str) -> Result<VerifyingKey, String> {
    crate::config::parse_public_key(text)
}

/// Read a public key file (`linesight model keygen` writes it as `<key>.pub`).
pub fn load_public(path: &Path) -> Result<VerifyingKey, String> {
    let text = read_small(path)?;
    parse_public(&text).map_err(|e| {
        format!("{}: {e}; give the `.pub` file `linesight model keygen` wrote (64 hex digits)", path.display())
    })
}

/// Read a secret key file. Refused when others may read it: a readable signing key lets anyone
/// sign packages this plant's nodes install.
pub fn load_secret(path: &Path) -> Result<SigningKey, String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{}: mode {mode:04o}, others can read this secret key; `chmod 600 {}` (and consider it leaked \
                 if others did read it: make a new key and replace the old one in every node's rollout.trusted_keys)",
                path.display(),
                path.display()
            ));
        }
    }
    let text = read_small(path)?;
    let seed = hex::decode_array::<32>(&text).map_err(|e| {
        format!("{}: {e}; give the secret key file `linesight model keygen` wrote (64 hex digits)", path.display())
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Make a new key pair: `out` (the secret seed, hex, 0600) and `out.pub` (the public key, hex).
/// Refuses to overwrite either: replacing a signing key by mistake locks every node out of
/// the next package. Returns the public key file's path.
pub fn keygen(out: &Path) -> Result<(SigningKey, PathBuf), String> {
    let public = public_path(out);
    for p in [out, public.as_path()] {
        if p.exists() || p.symlink_metadata().is_ok() {
            return Err(format!("{} already exists; keygen never overwrites a key: choose another --out", p.display()));
        }
    }
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(|e| format!("cannot read /dev/urandom for a new key: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    let write = |path: &Path, text: String, secret: bool| -> Result<(), String> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        let file = if secret { private_fs::open(&mut options, path) } else { options.open(path) };
        file.and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write(out, format!("{}\n", hex::encode(&seed)), true)?;
    write(&public, format!("{}\n", hex::encode(key.verifying_key().as_bytes())), false)?;
    Ok((key, public))
}

/// `<secret>.pub`.
pub fn public_path(secret: &Path) -> PathBuf {
    let mut s = secret.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// The hex signature of `bytes` (what `manifest.sig` holds).
pub fn sign_hex(key: &SigningKey, bytes: &[u8]) -> String {
    format!("{}\n", hex::encode(&key.sign(bytes).to_bytes()))
}

/// The keys a node's config trusts. The config's validation already parsed each one; this reads
/// them again (a `file` may have changed since) and says which entry failed.
pub fn trusted(config: &RolloutConfig) -> Result<Vec<TrustedKey>, String> {
    config
        .trusted_keys
        .iter()
        .map(|k| {
            let key = match (&k.public_key, &k.file) {
                (Some(text), None) => parse_public(text).map_err(|e| format!("rollout.trusted_keys `{}`: {e}", k.name)),
                (None, Some(path)) => load_public(path).map_err(|e| format!("rollout.trusted_keys `{}`: {e}", k.name)),
                _ => Err(format!("rollout.trusted_keys `{}`: give exactly one of public_key and file", k.name)),
            }?;
            Ok(TrustedKey { name: k.name.clone(), key })
        })
        .collect()
}

/// A key file's text; key files are a line of hex, so anything long is not one.
fn read_small(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(4096).read_to_string(&mut text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_pair_that_signs_and_verifies_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("plant.key");
        let (key, public) = keygen(&out).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
        let secret = load_secret(&out).unwrap();
        let pubkey = load_public(&public).unwrap();
        assert_eq!(secret.verifying_key(), pubkey);
        assert_eq!(key.verifying_key(), pubkey);
        assert_eq!(key_id(&pubkey).len(), 16);
        let sig = hex::decode_array::<64>(&sign_hex(&secret, b"manifest")).unwrap();
        assert!(pubkey.verify_strict(b"manifest", &Signature::from_bytes(&sig)).is_ok());
        let again = keygen(&out).unwrap_err();
        assert!(again.contains("already exists"), "{again}");
        // The secret is refused once others may read it.
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_secret(&out).unwrap_err().contains("chmod 600"));
        // A key file that is not a key names itself.
        let bad = dir.path().join("bad.pub");
        std::fs::write(&bad, "abcd\n").unwrap();
        let e = load_public(&bad).unwrap_err();
        assert!(e.contains("bad.pub") && e.contains("expected 64 hex digits"), "{e}");
    }
}
