//! Per-model slots under `<state_dir>/models/<model>/`:
//!
//! ```text
//! slots/<version>/     a staged package: manifest.json, manifest.sig and its files, as verified
//! slots/.tmp-*         a copy or removal a crash interrupted: ignored, deleted by `Slots::open`
//! active.json          which version runs (absent: the config's own file), replaced atomically
//! history.jsonl        one JSON event per line, appended and fsynced: staged, removed, and the
//!                      daemon's own (promoted, rolled back, refused, ...); `staged` events are
//!                      what `highest_installed` counts
//! ```
//!
//! Every change is a write to a temp name, fsync, rename, fsync of the folder: after a power cut
//! at any instant a slot is whole or absent and active.json is the old one or the new one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::manifest::{self, Manifest, MANIFEST_FILE, SIGNATURE_FILE};
use super::pack::sync_dir;
use super::verify::Verified;
use crate::util::{private_fs, time};

/// Prefix of a slot being copied or removed: never a version, so never mistaken for a slot.
const TMP_PREFIX: &str = ".tmp-";
const ACTIVE_FILE: &str = "active.json";
const HISTORY_FILE: &str = "history.jsonl";
/// The history event [`Slots::stage`] records; [`Slots::highest_installed`] counts these.
pub const STAGED_EVENT: &str = "staged";

/// One model's slots.
#[derive(Debug, Clone)]
pub struct Slots {
    model: String,
    root: PathBuf,
}

/// A staged version.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub version: u64,
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Slot {
    /// The ONNX file.
    pub fn model_path(&self) -> PathBuf {
        self.dir.join(&self.manifest.model)
    }

    /// The sidecar, if the package has one.
    pub fn sidecar_path(&self) -> Option<PathBuf> {
        self.manifest.sidecar.as_ref().map(|s| self.dir.join(s))
    }

    /// Each golden image and the verdict (`OK` or `NG`) it must get.
    pub fn golden(&self) -> Vec<(PathBuf, String)> {
        self.manifest.golden.iter().map(|g| (self.dir.join(&g.image), g.verdict.clone())).collect()
    }
}

/// Which version of a model runs, and the way back.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Active {
    /// `None`: the factory model, the file the config names.
    pub version: Option<u64>,
    /// Earlier accepted versions, oldest first (`None` = factory); a rollback returns to the last.
    pub accepted: Vec<Option<u64>>,
    /// When it became active (RFC 3339).
    pub since: String,
    /// Who made it active (a command id, `page`, `health check`, ...), for the audit.
    pub by: String,
}

impl Slots {
    /// The slots of `model` under `state_dir`, created if missing. Leftovers of an interrupted
    /// copy, removal or active.json write are deleted here.
    pub fn open(state_dir: &Path, model: &str) -> std::io::Result<Slots> {
        if model.is_empty()
            || model.len() > 64
            || !model.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("model name `{model}` cannot name a slot folder (letters, digits, `-`, `_` only)"),
            ));
        }
        let root = state_dir.join("models").join(model);
        private_fs::create_dir_all(&root.join("slots"))?;
        for entry in std::fs::read_dir(root.join("slots"))?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let path = entry.path();
                tracing::info!(path = %path.display(), "removing an interrupted slot copy");
                std::fs::remove_dir_all(&path)?;
            }
        }
        for entry in std::fs::read_dir(&root)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&format!("{ACTIVE_FILE}{TMP_PREFIX}")) {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(Slots { model: model.into(), root })
    }

    /// The slots of `model` for reading only, while a daemon may be using them (`linesight model
    /// verify --config`): nothing is created or cleaned. `None` when the model has no slots yet.
    pub fn peek(state_dir: &Path, model: &str) -> Option<Slots> {
        let valid = !model.is_empty() && model.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let root = state_dir.join("models").join(model);
        (valid && root.is_dir()).then(|| Slots { model: model.into(), root })
    }

    /// `<state_dir>/models/<model>`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Copy a verified package into `slots/<version>/`: into a temp folder, every file fsynced
    /// and checked again against the manifest (the package may have changed since it was
    /// verified), then renamed into place. Records a `staged` event.
    pub fn stage(&self, v: &Verified) -> Result<Slot, String> {
        let m = &v.manifest;
        if m.name != self.model {
            return Err(format!("the package is for model `{}`, these slots are `{}`'s", m.name, self.model));
        }
        let slots = self.root.join("slots");
        let dest = slots.join(m.version.to_string());
        if dest.exists() {
            return Err(format!(
                "version {} of `{}` is already staged in {}; remove it first to stage it again",
                m.version,
                self.model,
                dest.display()
            ));
        }
        let tmp = slots.join(format!("{TMP_PREFIX}{}-{}", m.version, std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let result = self.copy(v, &tmp).and_then(|()| {
            std::fs::rename(&tmp, &dest)
                .map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), dest.display()))?;
            sync_dir(&slots)
        });
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        self.record(&json!({
            "event": STAGED_EVENT,
            "version": m.version,
            "manifest_sha256": v.manifest_sha256,
            "key": v.key_name,
            "from": v.dir.display().to_string(),
        }))?;
        Ok(Slot { version: m.version, dir: dest, manifest: m.clone() })
    }

    fn copy(&self, v: &Verified, tmp: &Path) -> Result<(), String> {
        private_fs::create_dir_all(tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        let mut dirs = vec![tmp.to_path_buf()];
        let mut copy = |rel: &str| -> Result<PathBuf, String> {
            let to = tmp.join(rel);
            if let Some(parent) = to.parent() {
                if !parent.is_dir() {
                    private_fs::create_dir_all(parent)
                        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
                    dirs.push(parent.to_path_buf());
                }
            }
            let from = v.dir.join(rel);
            std::fs::copy(&from, &to)
                .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))?;
            File::open(&to).and_then(|f| f.sync_all()).map_err(|e| format!("{}: {e}", to.display()))?;
            Ok(to)
        };
        let copied = copy(MANIFEST_FILE)?;
        let (sha, _) = manifest::sha256_file(&copied).map_err(|e| format!("{}: {e}", copied.display()))?;
        if sha != v.manifest_sha256 {
            return Err(format!(
                "{} changed after it was verified; verify and install the package again",
                v.dir.join(MANIFEST_FILE).display()
            ));
        }
        copy(SIGNATURE_FILE)?;
        for f in &v.manifest.files {
            let copied = copy(&f.path)?;
            let (sha, bytes) = manifest::sha256_file(&copied).map_err(|e| format!("{}: {e}", copied.display()))?;
            if sha != f.sha256 || bytes != f.bytes {
                return Err(format!(
                    "{} changed after it was verified (now {bytes} bytes, another SHA-256); verify and install the \
                     package again",
                    v.dir.join(&f.path).display()
                ));
            }
        }
        for d in dirs.iter().rev() {
            sync_dir(d)?;
        }
        Ok(())
    }

    /// The staged version `version`, if it is whole.
    pub fn slot(&self, version: u64) -> Option<Slot> {
        let dir = self.root.join("slots").join(version.to_string());
        let bytes = manifest::read_bytes(&dir).ok()?;
        let manifest = Manifest::parse(&bytes).ok()?;
        (manifest.version == version).then_some(Slot { version, dir, manifest })
    }

    /// Every staged version, lowest first.
    pub fn slots(&self) -> Vec<Slot> {
        let Ok(entries) = std::fs::read_dir(self.root.join("slots")) else { return Vec::new() };
        let mut versions: Vec<u64> =
            entries.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok())).collect();
        versions.sort_unstable();
        versions.into_iter().filter_map(|v| self.slot(v)).collect()
    }

    /// The highest version ever staged for this model: over the slots and the history's
    /// `staged` events, so that removing a slot does not let its version (or an older one) in
    /// again. Only `staged` events count: a refused package's version, recorded for the audit,
    /// must not block the next good one.
    pub fn highest_installed(&self) -> Option<u64> {
        let staged = self.slots().into_iter().map(|s| s.version);
        let recorded = self
            .history()
            .into_iter()
            .filter(|e| e.get("event").and_then(|v| v.as_str()) == Some(STAGED_EVENT))
            .filter_map(|e| e.get("version").and_then(|v| v.as_u64()));
        staged.chain(recorded).max()
    }

    /// What runs; `None` when nothing was ever made active (the config's own file).
    pub fn active(&self) -> Result<Option<Active>, String> {
        let path = self.root.join(ACTIVE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            format!(
                "{} is not an active-model record ({e}); delete it to run the config's own model file, then promote \
                 a staged version again",
                path.display()
            )
        })
    }

    /// Make `a` what runs: active.json replaced atomically (temp file, fsync, rename, fsync of the
    /// folder). The version must be staged.
    pub fn set_active(&self, a: &Active) -> Result<(), String> {
        if let Some(v) = a.version {
            if self.slot(v).is_none() {
                return Err(format!("version {v} of `{}` is not staged; stage (install) it first", self.model));
            }
        }
        let path = self.root.join(ACTIVE_FILE);
        let tmp = self.root.join(format!("{ACTIVE_FILE}{TMP_PREFIX}{}", std::process::id()));
        let text = serde_json::to_vec_pretty(a).expect("an Active always serializes");
        let written = private_fs::create(&tmp).and_then(|mut f| {
            f.write_all(&text)?;
            f.sync_all()
        });
        written.map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
        sync_dir(&self.root)
    }

    /// Append `event` (with `at`, the time, added when missing) to history.jsonl, fsynced. A line
    /// torn by an earlier crash is ended first, so it cannot swallow this one.
    pub fn record(&self, event: &serde_json::Value) -> Result<(), String> {
        let path = self.root.join(HISTORY_FILE);
        let mut event = event.clone();
        if let Some(obj) = event.as_object_mut() {
            obj.entry("at").or_insert_with(|| json!(time::rfc3339(std::time::SystemTime::now())));
        }
        let mut line = serde_json::to_string(&event).expect("JSON always serializes");
        line.push('\n');
        let appended =
            private_fs::open(OpenOptions::new().read(true).append(true).create(true), &path).and_then(|mut f| {
                let len = f.metadata()?.len();
                if len > 0 {
                    let mut last = [0u8; 1];
                    f.seek(SeekFrom::Start(len - 1))?;
                    f.read_exact(&mut last)?;
                    if last[0] != b'\n' {
                        line.insert(0, '\n');
                    }
                }
                f.write_all(line.as_bytes())?;
                f.sync_data()
            });
        appended.map_err(|e| format!("cannot append to {}: {e}", path.display()))
    }

    /// Every event recorded, oldest first; a line that does not parse (torn by a crash) is skipped.
    pub fn history(&self) -> Vec<serde_json::Value> {
        let Ok(text) = std::fs::read_to_string(self.root.join(HISTORY_FILE)) else { return Vec::new() };
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Delete a staged version. Refused for the active version and for those a rollback may
    /// return to. Renamed to a temp name first, so a crash mid-way leaves no half slot.
    pub fn remove(&self, version: u64) -> Result<(), String> {
        if let Some(a) = self.active()? {
            if a.version == Some(version) || a.accepted.contains(&Some(version)) {
                return Err(format!(
                    "version {version} of `{}` is active or a rollback target; promote or roll back to another first",
                    self.model
                ));
            }
        }
        let slots = self.root.join("slots");
        let dir = slots.join(version.to_string());
        if !dir.is_dir() {
            return Err(format!("version {version} of `{}` is not staged (no {})", self.model, dir.display()));
        }
        let tmp = slots.join(format!("{TMP_PREFIX}rm-{version}-{}", std::process::id()));
        std::fs::rename(&dir, &tmp).map_err(|e| format!("cannot move {} away: {e}", dir.display()))?;
        sync_dir(&slots)?;
        std::fs::remove_dir_all(&tmp).map_err(|e| format!("cannot delete {}: {e}", tmp.display()))?;
        self.record(&json!({"event": "removed", "version": version}))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{options, package, trusted};
    use super::super::verify::{check, Expect};
    use super::*;

    fn staged_package(tmp: &Path, version: u64) -> Verified {
        let sub = tmp.join(format!("src-{version}"));
        std::fs::create_dir(&sub).unwrap();
        let mut o = options(&sub);
        o.version = version;
        let dir = package(&o);
        check(&dir, "surface-classifier", &trusted(1), &Expect::here()).unwrap()
    }

    fn active(version: Option<u64>, accepted: Vec<Option<u64>>) -> Active {
        Active { version, accepted, since: "2026-12-03T12:00:00.000Z".into(), by: "test".into() }
    }

    #[test]
    fn staging_copies_a_whole_checked_package_once() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let slots = Slots::open(&state, "surface-classifier").unwrap();
        assert_eq!(slots.highest_installed(), None);
        let v = staged_package(tmp.path(), 3);
        let slot = slots.stage(&v).unwrap();
        assert_eq!(slot.dir, state.join("models/surface-classifier/slots/3"));
        assert_eq!(slot.model_path(), slot.dir.join("model.onnx"));
        assert_eq!(slot.sidecar_path(), Some(slot.dir.join("model.onnx.json")));
        let golden = slot.golden();
        assert_eq!(golden.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>(), ["OK", "NG"]);
        assert!(golden.iter().all(|(p, _)| p.is_file()));
        // The copy is itself a package that passes every check.
        let again = check(&slot.dir, "surface-classifier", &trusted(1), &Expect::here()).unwrap();
        assert_eq!(again.manifest_sha256, v.manifest_sha256);
        assert_eq!(slots.slots(), vec![slot.clone()]);
        assert_eq!(slots.slot(3), Some(slot));
        assert_eq!(slots.highest_installed(), Some(3));
        assert_eq!(slots.history()[0]["event"], "staged");
        assert!(slots.stage(&v).unwrap_err().contains("already staged"));
        // Slots are per model: another model's slots refuse it.
        let other = Slots::open(&state, "other").unwrap();
        assert!(other.stage(&v).unwrap_err().contains("`other`"));
        assert!(Slots::open(&state, "../escape").is_err());
    }

    #[test]
    fn a_package_changed_after_verification_is_not_staged() {
        let tmp = tempfile::tempdir().unwrap();
        let slots = Slots::open(&tmp.path().join("state"), "surface-classifier").unwrap();
        let v = staged_package(tmp.path(), 3);
        let model = v.dir.join("model.onnx");
        let mut bytes = std::fs::read(&model).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&model, bytes).unwrap();
        assert!(slots.stage(&v).unwrap_err().contains("changed after it was verified"));
        assert!(slots.slots().is_empty());
        // Nothing half-copied is left behind.
        assert_eq!(std::fs::read_dir(slots.root().join("slots")).unwrap().count(), 0);
    }

    #[test]
    fn the_active_record_round_trips_and_only_names_staged_versions() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let slots = Slots::open(&state, "surface-classifier").unwrap();
        assert_eq!(slots.active().unwrap(), None);
        assert!(slots.set_active(&active(Some(3), vec![None])).unwrap_err().contains("not staged"));
        slots.stage(&staged_package(tmp.path(), 3)).unwrap();
        let a = active(Some(3), vec![None]);
        slots.set_active(&a).unwrap();
        assert_eq!(slots.active().unwrap(), Some(a.clone()));
        assert_eq!(Slots::open(&state, "surface-classifier").unwrap().active().unwrap(), Some(a));
        let factory = active(None, vec![]);
        slots.set_active(&factory).unwrap();
        assert_eq!(slots.active().unwrap(), Some(factory));
    }

    #[test]
    fn leftovers_of_a_crash_are_ignored_and_cleaned() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let slots = Slots::open(&state, "surface-classifier").unwrap();
        slots.stage(&staged_package(tmp.path(), 3)).unwrap();
        let a = active(Some(3), vec![None]);
        slots.set_active(&a).unwrap();
        // A kill during set_active: the temp file was half written, the rename never happened.
        let torn = slots.root().join("active.json.tmp-4242");
        std::fs::write(&torn, b"{\"version\": 5, \"acc").unwrap();
        // A kill during stage: a half-copied version 5.
        let half = slots.root().join("slots/.tmp-5-4242");
        std::fs::create_dir_all(half.join("golden")).unwrap();
        std::fs::write(half.join("model.onnx"), b"half").unwrap();
        assert_eq!(slots.active().unwrap(), Some(a.clone()));
        assert_eq!(slots.slots().iter().map(|s| s.version).collect::<Vec<_>>(), [3]);
        assert_eq!(slots.highest_installed(), Some(3));
        // A reader does not clean up under a running daemon's feet.
        assert_eq!(Slots::peek(&state, "surface-classifier").unwrap().highest_installed(), Some(3));
        assert!(torn.exists() && half.exists());
        assert!(Slots::peek(&state, "never-staged").is_none());
        let reopened = Slots::open(&state, "surface-classifier").unwrap();
        assert!(!torn.exists() && !half.exists());
        assert_eq!(reopened.active().unwrap(), Some(a));
        // A torn active.json (which the rename prevents) is reported with the way out.
        std::fs::write(reopened.root().join("active.json"), b"{\"vers").unwrap();
        assert!(reopened.active().unwrap_err().contains("delete it"));
    }

    #[test]
    fn a_removed_version_still_counts_as_installed() {
        let tmp = tempfile::tempdir().unwrap();
        let slots = Slots::open(&tmp.path().join("state"), "surface-classifier").unwrap();
        slots.stage(&staged_package(tmp.path(), 3)).unwrap();
        slots.stage(&staged_package(tmp.path(), 5)).unwrap();
        slots.set_active(&active(Some(3), vec![None])).unwrap();
        assert!(slots.remove(3).unwrap_err().contains("active"));
        slots.remove(5).unwrap();
        assert!(slots.slot(5).is_none());
        assert_eq!(slots.highest_installed(), Some(5));
        assert!(slots.remove(5).unwrap_err().contains("not staged"));
        let events: Vec<_> = slots.history().iter().map(|e| e["event"].as_str().unwrap().to_string()).collect();
        assert_eq!(events, ["staged", "staged", "removed"]);
    }

    #[test]
    fn a_history_line_torn_by_a_crash_does_not_swallow_the_next() {
        let tmp = tempfile::tempdir().unwrap();
        let slots = Slots::open(&tmp.path().join("state"), "m").unwrap();
        slots.record(&json!({"event": "promoted", "version": 2})).unwrap();
        let path = slots.root().join("history.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"event\": \"promo").unwrap();
        slots.record(&json!({"event": "rolled_back", "version": 1})).unwrap();
        let h = slots.history();
        assert_eq!(h.len(), 2);
        assert_eq!(h[1]["event"], "rolled_back");
        assert!(h[1]["at"].is_string());
        // Only staged versions count as installed: a refused package's version does not.
        slots.record(&json!({"event": "refused", "version": 99, "reason": "bad_signature"})).unwrap();
        assert_eq!(slots.highest_installed(), None);
        slots.record(&json!({"event": STAGED_EVENT, "version": 4})).unwrap();
        assert_eq!(slots.highest_installed(), Some(4));
    }
}
