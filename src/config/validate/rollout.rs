//! The `rollout` section: every trusted key must parse (a key that does not would refuse every
//! package it signed, discovered only on the day of an install), names are unique, and the
//! health and shadow settings are in range.

use std::collections::BTreeMap;

use super::super::diagnostic::Collector;
use super::super::types::RolloutConfig;

pub(super) fn check(r: &RolloutConfig, c: &mut Collector) {
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut keys: BTreeMap<[u8; 32], &str> = BTreeMap::new();
    for (i, k) in r.trusted_keys.iter().enumerate() {
        let idx = i.to_string();
        let at = |tail: &'static str| -> Vec<String> {
            ["rollout", "trusted_keys", idx.as_str(), tail].iter().map(|s| s.to_string()).collect()
        };
        let report = |c: &mut Collector, tail: &'static str, message: String, hint: &str| {
            let path = at(tail);
            let refs: Vec<&str> = path.iter().map(String::as_str).collect();
            c.at(&refs, message, hint);
        };
        if k.name.trim().is_empty() {
            report(c, "name", "a trusted key needs a name".into(), "name who packs with it, e.g. `quality-team`");
        } else if let Some(first) = names.insert(k.name.as_str(), i) {
            report(
                c,
                "name",
                format!("trusted key name `{}` is used twice (entries {} and {})", k.name, first + 1, i + 1),
                "give each key its own name: the name says who signed an installed model",
            );
        }
        let (text, tail, source) = match (&k.public_key, &k.file) {
            (Some(t), None) => (t.clone(), "public_key", "public_key".to_string()),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(t) => (t, "file", format!("file `{}`", path.display())),
                Err(e) => {
                    report(
                        c,
                        "file",
                        format!("trusted key `{}`: {} cannot be read: {e}", k.name, path.display()),
                        "give the `.pub` file `linesight model keygen` wrote (relative paths start at the config file's folder)",
                    );
                    continue;
                }
            },
            (Some(_), Some(_)) => {
                report(c, "file", format!("trusted key `{}` has both public_key and file", k.name), "keep one of them");
                continue;
            }
            (None, None) => {
                report(
                    c,
                    "name",
                    format!("trusted key `{}` has neither public_key nor file", k.name),
                    "add `public_key: <64 hex digits>` or `file: <path to the .pub file>`",
                );
                continue;
            }
        };
        match parse_public_key(&text) {
            Ok(key) => {
                let bytes = key.to_bytes();
                if let Some(other) = keys.insert(bytes, k.name.as_str()) {
                    report(
                        c,
                        tail,
                        format!("trusted key `{}` is the same key as `{other}`", k.name),
                        "list each key once",
                    );
                }
            }
            Err(e) => report(
                c,
                tail,
                format!("trusted key `{}`: {source} is not a public key: {e}", k.name),
                "give the content of the `.pub` file `linesight model keygen` wrote (64 hex digits), never the secret key",
            ),
        }
    }
    if r.health.first_parts == 0 {
        c.at(
            &["rollout", "health", "first_parts"],
            "first_parts is 0: a promoted model would never be checked",
            "use 1 or more (default 200)",
        );
    }
    if !(0.0..=1.0).contains(&r.health.max_error_rate) {
        c.at(
            &["rollout", "health", "max_error_rate"],
            format!("max_error_rate {} is not a share", r.health.max_error_rate),
            "use 0 to 1 (default 0.05: 5% ERROR parts)",
        );
    }
    if r.shadow.queue == 0 || r.shadow.queue > 64 {
        c.at(
            &["rollout", "shadow", "queue"],
            format!("shadow queue of {} frames is out of range", r.shadow.queue),
            "use 1 to 64 (default 2)",
        );
    }
}

/// An Ed25519 public key from its hex text (64 hex digits, either case, white space around it
/// ignored: a `.pub` file's content). The one parser of public keys: the config's validation and
/// `rollout::keys` both use it. The error says what is wrong with the text.
pub fn parse_public_key(text: &str) -> Result<ed25519_dalek::VerifyingKey, String> {
    let t = text.trim();
    if t.len() != 64 {
        return Err(format!("{} characters, expected 64 hex digits (32 bytes)", t.len()));
    }
    let mut bytes = [0u8; 32];
    for (i, pair) in t.as_bytes().chunks(2).enumerate() {
        let digits = std::str::from_utf8(pair).ok().filter(|d| d.chars().all(|c| c.is_ascii_hexdigit()));
        bytes[i] = digits
            .and_then(|d| u8::from_str_radix(d, 16).ok())
            .ok_or_else(|| format!("characters {} and {} are not hex digits", 2 * i + 1, 2 * i + 2))?;
    }
    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map_err(|_| "not an Ed25519 public key (not a point of the curve)".to_string())
}
