//! Model rollout on a running node: install a signed package, shadow it, promote it, roll back.
//!
//! One owner ([`Rollouts`]) per node, behind one lock, so rollout commands run one at a time.
//! Each model in use has its slots under `<state_dir>/models/<model>/` (see
//! [`crate::rollout::slots`]): staged versions, `active.json` (which version production runs,
//! and the versions accepted before it) and `history.jsonl` (every install, refusal, shadow,
//! promotion and rollback).
//!
//! - **install**: the package in the drop folder is checked whole (signature by a trusted key,
//!   version newer than any installed, target, sizes and hashes, expiry), copied into a slot,
//!   and its golden images are run on this device: each must get its expected verdict from
//!   every task's rules. Then it is shadowed.
//! - **promote**: `active.json` is replaced (written, fsynced, renamed, the folder fsynced)
//!   first; then the model is swapped between two parts by the reloader (parts announced
//!   before are judged by the old model, after by the new one; see [`super::reload`]). A power
//!   cut between the two leaves the new version active at the next start: exactly one version
//!   is active, always one of the two. After the swap the first `health.first_parts` parts are
//!   watched; an ERROR share above `health.max_error_rate` rolls back by itself.
//! - **rollback**: the last accepted version before the current one, the same way.
//!
//! A canary is a second model entry (same file) used by one task: it has its own slots, so a
//! version can be promoted there first.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use opencv::imgcodecs;
use serde_json::{json, Value};

use super::models::{self, rule_for};
use super::reload::{ModelOverride, Reloader};
use super::shadow::{self, CandidateRule, Matcher};
use crate::config::{Config, ModelConfig};
use crate::inference::shadow::{ShadowOutput, Tap};
use crate::inference::Loaded;
use crate::part::{Inspection, PartInfo, Verdict};
use crate::rollout::keys::TrustedKey;
use crate::rollout::slots::{Active, Slot, Slots};
use crate::rollout::verify::{self, Expect};
use crate::stats::TaskStats;

/// The rollout state of every model, as the stats message reports it.
pub type Docs = Arc<Mutex<BTreeMap<String, Value>>>;

#[derive(Clone)]
pub struct Rollouts {
    state: Arc<tokio::sync::Mutex<State>>,
    pub docs: Docs,
}

struct State {
    incoming: PathBuf,
    trusted: Vec<TrustedKey>,
    first_parts: u64,
    max_error_rate: f64,
    shadow_queue: usize,
    config: Config,
    env: &'static ort::environment::Environment,
    reloader: Reloader,
    matcher: Arc<Matcher>,
    shadow_out: flume::Sender<ShadowOutput>,
    task_stats: BTreeMap<String, Arc<TaskStats>>,
    models: BTreeMap<String, ModelState>,
    docs: Docs,
    /// Itself, for the health watch a promotion starts.
    me: Option<Rollouts>,
}

struct ModelState {
    slots: Slots,
    tap: Arc<Tap>,
    /// The tasks using the model.
    tasks: Vec<String>,
    /// The kind production runs: a package must have the same.
    kind: String,
    shadow: Option<shadow::Running>,
    last: Option<Value>,
}

/// The config with every model that has an active slot pointed at it: what the node runs.
/// A broken `active.json` is an error naming it (a start that guessed could run a model nobody chose).
pub fn effective(config: &Config) -> Result<(Config, BTreeMap<String, ModelOverride>), String> {
    let mut overrides = BTreeMap::new();
    let mut config = config.clone();
    let state_dir = config.runtime.state_dir.clone();
    for (name, m) in config.models.iter_mut() {
        // A model never promoted has nothing to read (and nothing is made for it here).
        if !state_dir.join("models").join(name).join("active.json").exists() {
            continue;
        }
        let slots = match Slots::open(&state_dir, name) {
            Ok(s) => s,
            Err(e) => {
                return Err(format!(
                    "model `{name}`: cannot open its slots under {}: {e}",
                    state_dir.join("models").join(name).display()
                ))
            }
        };
        let Some(active) = slots.active()? else { continue };
        let Some(version) = active.version else { continue };
        let slot = slots.slot(version).ok_or_else(|| {
            format!(
                "model `{name}`: active.json names version {version}, which has no slot under {}; run `linesight model` to inspect it or remove active.json to run the config's file",
                state_dir.join("models").join(name).display()
            )
        })?;
        let o = ModelOverride::of(&slot);
        o.apply(m);
        overrides.insert(name.clone(), o);
    }
    Ok((config, overrides))
}

impl ModelOverride {
    /// What a slot changes in a model's config: the file, its sidecar and its pinned hash (the
    /// manifest's, so a slot file changed on disk is refused at load like any pinned model).
    pub fn of(slot: &Slot) -> ModelOverride {
        let sha = slot.manifest.files.iter().find(|f| f.path == slot.manifest.model).map(|f| f.sha256.clone());
        ModelOverride { path: slot.model_path(), sidecar: slot.sidecar_path(), sha256: sha, version: slot.version }
    }
}

pub struct Wiring<'a> {
    pub config: &'a Config,
    pub env: &'static ort::environment::Environment,
    pub reloader: Reloader,
    pub matcher: Arc<Matcher>,
    pub shadow_out: flume::Sender<ShadowOutput>,
    pub taps: &'a BTreeMap<String, Arc<Tap>>,
    pub task_stats: BTreeMap<String, Arc<TaskStats>>,
    /// Per model, the kind its production session reports.
    pub kinds: BTreeMap<String, String>,
}

impl Rollouts {
    /// None when no model can have slots (the state directory cannot hold them: each is logged).
    pub fn start(w: Wiring<'_>) -> Result<Option<Rollouts>, String> {
        let cfg = &w.config.rollout;
        let trusted = crate::rollout::keys::trusted(cfg)?;
        let incoming = w.config.incoming_dir();
        if !trusted.is_empty() {
            if let Err(e) = std::fs::create_dir_all(&incoming) {
                tracing::warn!(folder = %incoming.display(), error = %e, "the model drop folder cannot be made; installs will fail until it exists");
            }
        }
        let docs: Docs = Arc::default();
        let mut models = BTreeMap::new();
        for (name, tap) in w.taps {
            let slots = match Slots::open(&w.config.runtime.state_dir, name) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(model = %name, error = %e, "model rollout is off for this model: its slots cannot be kept");
                    continue;
                }
            };
            let tasks = w.config.tasks.iter().filter(|(_, t)| &t.model == name).map(|(n, _)| n.clone()).collect();
            let kind = w.kinds.get(name).cloned().unwrap_or_default();
            models.insert(name.clone(), ModelState { slots, tap: tap.clone(), tasks, kind, shadow: None, last: None });
        }
        let state = State {
            incoming,
            trusted,
            first_parts: u64::from(cfg.health.first_parts),
            max_error_rate: cfg.health.max_error_rate,
            shadow_queue: cfg.shadow.queue,
            config: w.config.clone(),
            env: w.env,
            reloader: w.reloader,
            matcher: w.matcher,
            shadow_out: w.shadow_out,
            task_stats: w.task_stats,
            models,
            docs: docs.clone(),
            me: None,
        };
        if state.models.is_empty() {
            return Ok(None);
        }
        let r = Rollouts { state: Arc::new(tokio::sync::Mutex::new(state)), docs };
        {
            let mut s = r.state.try_lock().expect("just made");
            s.me = Some(r.clone());
            let names: Vec<String> = s.models.keys().cloned().collect();
            for m in names {
                s.publish(&m);
            }
        }
        Ok(Some(r))
    }

    pub async fn install(&self, model: &str, package: &str, source: &str) -> Result<(), String> {
        let mut s = self.state.lock().await;
        let outcome = s.install(model, package, source).await;
        s.after(model, "install", source, &outcome);
        outcome.map(|_| ())
    }

    pub async fn shadow(&self, model: &str, version: u64, source: &str) -> Result<(), String> {
        let mut s = self.state.lock().await;
        let outcome = s.start_shadow(model, version).await.map(|label| json!({"candidate": label}));
        s.after(model, "shadow", source, &outcome);
        outcome.map(|_| ())
    }

    pub async fn stop_shadow(&self, model: &str, source: &str) -> Result<(), String> {
        let mut s = self.state.lock().await;
        let outcome = s.model(model).map(|_| ());
        let outcome = outcome.map(|()| {
            s.stop_shadow(model);
            json!({})
        });
        s.after(model, "stop-shadow", source, &outcome);
        outcome.map(|_| ())
    }

    pub async fn promote(&self, model: &str, version: Option<u64>, source: &str) -> Result<(), String> {
        let mut s = self.state.lock().await;
        let outcome = s.promote(model, version, source).await;
        s.after(model, "promote", source, &outcome);
        outcome.map(|_| ())
    }

    pub async fn rollback(&self, model: &str, source: &str) -> Result<(), String> {
        let mut s = self.state.lock().await;
        let outcome = s.rollback(model, source).await;
        s.after(model, "rollback", source, &outcome);
        outcome.map(|_| ())
    }

    /// The health check after a promotion: the first parts judged by the new version.
    async fn watch_health(self, model: String, version: u64, start: BTreeMap<String, (u64, u64)>) {
        let (first, limit, stats) = {
            let s = self.state.lock().await;
            let stats: Vec<(String, Arc<TaskStats>)> =
                start.keys().filter_map(|t| s.task_stats.get(t).map(|st| (t.clone(), st.clone()))).collect();
            (s.first_parts, s.max_error_rate, stats)
        };
        if first == 0 || stats.is_empty() {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            let (mut parts, mut errors) = (0, 0);
            for (t, st) in &stats {
                let (p0, e0) = start[t];
                parts += st.processed.load(Ordering::Relaxed).saturating_sub(p0);
                errors += st.error.load(Ordering::Relaxed).saturating_sub(e0);
            }
            if parts < first {
                // A newer promotion or a rollback replaced this version: its watch ends.
                let s = self.state.lock().await;
                let active = s.models.get(&model).and_then(|m| m.slots.active().ok().flatten());
                if active.and_then(|a| a.version) != Some(version) {
                    return;
                }
                continue;
            }
            let rate = errors as f64 / parts as f64;
            if rate > limit {
                let why = format!(
                    "health check failed after promoting version {version}: {errors} ERROR of the first {parts} parts ({:.1} %, limit {:.1} %)",
                    rate * 100.0,
                    limit * 100.0
                );
                tracing::error!(target: "linesight::audit", model, %why, "rolling back by itself");
                let _ = self.rollback(&model, &format!("health check: {why}")).await;
            } else {
                tracing::info!(target: "linesight::audit", model, version, parts, errors, "health check after promotion passed");
                let mut s = self.state.lock().await;
                let event =
                    json!({"event": "healthy", "version": version, "parts": parts, "errors": errors, "at": now()});
                s.record(&model, event);
            }
            return;
        }
    }
}

fn now() -> String {
    crate::util::time::rfc3339(SystemTime::now())
}

/// The package's folder: a path inside the drop folder, nothing else (no `..`, not absolute,
/// no symlink leading out).
fn package_dir(incoming: &Path, package: &str) -> Result<PathBuf, String> {
    let rel = Path::new(package);
    if package.is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!(
            "package `{package}` must be a path inside the drop folder {} (no `..`, not absolute)",
            incoming.display()
        ));
    }
    let dir = incoming.join(rel);
    let real = dir.canonicalize().map_err(|e| format!("package {}: {e}", dir.display()))?;
    let base = incoming.canonicalize().map_err(|e| format!("drop folder {}: {e}", incoming.display()))?;
    if !real.starts_with(&base) {
        return Err(format!("package {} leads outside the drop folder {}", dir.display(), incoming.display()));
    }
    Ok(real)
}

impl State {
    fn model(&self, model: &str) -> Result<&ModelState, String> {
        self.models.get(model).ok_or_else(|| {
            let known: Vec<&str> = self.models.keys().map(String::as_str).collect();
            format!("no model `{model}` in use; models: {}", known.join(", "))
        })
    }

    /// Log, record and publish the outcome of one rollout action.
    fn after(&mut self, model: &str, action: &str, source: &str, outcome: &Result<Value, String>) {
        let mut event = match outcome {
            Ok(v) => {
                let mut e = v.clone();
                if !e.is_object() {
                    e = json!({});
                }
                e["result"] = json!("done");
                e
            }
            Err(why) => json!({"result": "refused", "reason": why}),
        };
        event["event"] = json!(action);
        event["source"] = json!(source);
        event["at"] = json!(now());
        match outcome {
            Ok(_) => tracing::info!(target: "linesight::audit", model, action, source, event = %event, "model rollout"),
            Err(why) => {
                tracing::warn!(target: "linesight::audit", model, action, source, reason = %why, "model rollout refused")
            }
        }
        if self.models.contains_key(model) {
            self.record(model, event);
        }
    }

    fn record(&mut self, model: &str, event: Value) {
        let Some(m) = self.models.get_mut(model) else { return };
        if let Err(e) = m.slots.record(&event) {
            tracing::warn!(model, error = %e, "rollout history not written");
        }
        m.last = Some(event);
        self.publish(model);
    }

    /// The model's rollout state into the stats message.
    fn publish(&self, model: &str) {
        let Some(m) = self.models.get(model) else { return };
        let active = m.slots.active().ok().flatten();
        let doc = json!({
            "active": active.as_ref().and_then(|a| a.version),
            "accepted": active.as_ref().map(|a| a.accepted.clone()).unwrap_or_default(),
            "installed": m.slots.slots().iter().map(|s| s.version).collect::<Vec<_>>(),
            "shadow": m.shadow.as_ref().map(|s| json!({"version": s.version, "candidate": &*s.label})),
            "last": m.last,
        });
        self.docs.lock().unwrap_or_else(|p| p.into_inner()).insert(model.to_string(), doc);
    }

    async fn install(&mut self, model: &str, package: &str, source: &str) -> Result<Value, String> {
        let m = self.model(model)?;
        if self.trusted.is_empty() {
            return Err("no package can be installed: `rollout.trusted_keys` is empty; add the public key of whoever signs your packages (docs/rollout.md)".into());
        }
        let dir = package_dir(&self.incoming, package)?;
        let expect = Expect {
            kind: Some(m.kind.as_str()).filter(|k| !k.is_empty()),
            arch: std::env::consts::ARCH,
            installed: m.slots.highest_installed(),
            now: SystemTime::now(),
        };
        let verified = verify::check(&dir, model, &self.trusted, &expect).map_err(|r| r.to_string())?;
        let version = verified.manifest.version;
        let slot = m.slots.stage(&verified)?;
        let golden = match self.golden(model, &slot).await {
            Ok(n) => n,
            Err(e) => {
                // The slot goes; its version stays used (history), so a fixed package needs a new one.
                let _ = self.models[model].slots.remove(version);
                return Err(format!("version {version} staged, but {e}; removed"));
            }
        };
        tracing::info!(target: "linesight::audit", model, version, key = %verified.key_name, golden, source, "model package installed");
        let label = self.start_shadow(model, version).await?;
        Ok(json!({"version": version, "key": verified.key_name, "golden": golden, "candidate": label}))
    }

    /// A model config for a slot: the production entry's settings with the slot's files.
    fn slot_config(&self, model: &str, slot: &Slot) -> ModelConfig {
        let mut cfg = self.config.models[model].clone();
        ModelOverride::of(slot).apply(&mut cfg);
        cfg
    }

    /// Load a slot's model and run its golden images through every task's rules: each must get
    /// its expected verdict. Ok: how many images passed.
    async fn golden(&self, model: &str, slot: &Slot) -> Result<usize, String> {
        let golden = slot.golden();
        if golden.is_empty() {
            return Err(
                "the package has no golden images: a model that was never seen to work here is not installed".into()
            );
        }
        let cfg = self.slot_config(model, slot);
        let (mut loaded, _) = models::load_and_warm(model, &cfg, self.env, 1).await?;
        let rules = self.rules(model, &loaded, slot)?;
        let (loaded2, failures) = tokio::task::spawn_blocking(move || {
            let mut failures = Vec::new();
            for (path, expected) in &golden {
                for (task, r) in &rules {
                    match judge_file(&mut loaded, r, path) {
                        Ok(v) if v.as_str() == expected => {}
                        Ok(v) => failures.push(format!(
                            "golden image {} gives {} for task `{task}`, expected {expected}",
                            path.display(),
                            v.as_str()
                        )),
                        Err(e) => failures.push(format!("golden image {}: {e}", path.display())),
                    }
                }
            }
            (loaded, failures)
        })
        .await
        .map_err(|e| e.to_string())?;
        drop(loaded2);
        if failures.is_empty() {
            Ok(slot.golden().len())
        } else {
            Err(format!("its golden images fail on this device: {}", failures.join("; ")))
        }
    }

    /// Every task's rule for a candidate of `model`.
    fn rules(&self, model: &str, loaded: &Loaded, slot: &Slot) -> Result<Vec<(String, CandidateRule)>, String> {
        let cfg = self.slot_config(model, slot);
        let mut out = Vec::new();
        for task in &self.models[model].tasks {
            let t = &self.config.tasks[task];
            let (rule, info) = rule_for(loaded, &t.rules, &cfg.path, &cfg.ok_classes)
                .map_err(|e| format!("task `{task}` cannot use version {}: {e}", slot.version))?;
            out.push((
                task.clone(),
                CandidateRule {
                    rule,
                    threshold: info.threshold,
                    label: info.label().into(),
                    classes: info.classes.clone().into(),
                },
            ));
        }
        Ok(out)
    }

    async fn start_shadow(&mut self, model: &str, version: u64) -> Result<String, String> {
        let m = self.model(model)?;
        let slot =
            m.slots.slot(version).ok_or_else(|| format!("model `{model}` has no installed version {version}"))?;
        if m.slots.active()?.and_then(|a| a.version) == Some(version) {
            return Err(format!("version {version} of `{model}` is production already"));
        }
        self.stop_shadow(model);
        let cfg = self.slot_config(model, &slot);
        // Rules need a loaded model (its classes and threshold): made from a session of their own.
        let env = self.env;
        let cfg2 = cfg.clone();
        let loaded = tokio::task::spawn_blocking(move || crate::inference::load_model(env, &cfg2, 1))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let rules = self.rules(model, &loaded, &slot)?;
        drop(loaded);
        let label: Arc<str> =
            rules.first().map(|(_, r)| r.label.clone()).unwrap_or_else(|| format!("{model}@{version}").into());
        let m = &self.models[model];
        let running = shadow::start(
            model,
            &cfg,
            version,
            label.clone(),
            rules,
            self.env,
            m.tap.clone(),
            self.matcher.clone(),
            self.shadow_out.clone(),
            self.shadow_queue,
        )
        .await?;
        self.models.get_mut(model).expect("checked").shadow = Some(running);
        self.publish(model);
        Ok(label.to_string())
    }

    fn stop_shadow(&mut self, model: &str) {
        let matcher = self.matcher.clone();
        if let Some(m) = self.models.get_mut(model) {
            if let Some(r) = m.shadow.take() {
                r.stop(&m.tap, &matcher);
            }
        }
        self.publish(model);
    }

    async fn promote(&mut self, model: &str, version: Option<u64>, source: &str) -> Result<Value, String> {
        let m = self.model(model)?;
        let version = match version.or_else(|| m.shadow.as_ref().map(|s| s.version)) {
            Some(v) => v,
            None => return Err(format!("no version given and `{model}` has no candidate in shadow")),
        };
        let slot =
            m.slots.slot(version).ok_or_else(|| format!("model `{model}` has no installed version {version}"))?;
        let before = m.slots.active()?.unwrap_or_else(|| factory(source));
        if before.version == Some(version) {
            return Err(format!("version {version} of `{model}` is production already"));
        }
        // The golden images again, on the files production will load.
        self.golden(model, &slot).await?;
        let mut accepted = before.accepted.clone();
        accepted.push(before.version);
        let after = Active { version: Some(version), accepted, since: now(), by: source.to_string() };
        self.switch(model, &before, &after, Some(&slot), source).await?;
        if self.models[model].shadow.as_ref().is_some_and(|s| s.version == version) {
            self.stop_shadow(model);
        }
        self.watch(model, version);
        Ok(json!({"from": before.version, "to": version}))
    }

    async fn rollback(&mut self, model: &str, source: &str) -> Result<Value, String> {
        let m = self.model(model)?;
        let before = m.slots.active()?.unwrap_or_else(|| factory(source));
        let mut accepted = before.accepted.clone();
        let Some(previous) = accepted.pop() else {
            return Err(format!(
                "`{model}` runs the config's own file and has no earlier accepted version to return to"
            ));
        };
        let slot = match previous {
            Some(v) => Some(
                m.slots.slot(v).ok_or_else(|| format!("the previous version {v} of `{model}` has no slot any more"))?,
            ),
            None => None,
        };
        let after = Active { version: previous, accepted, since: now(), by: source.to_string() };
        self.switch(model, &before, &after, slot.as_ref(), source).await?;
        Ok(json!({"from": before.version, "to": previous}))
    }

    /// Record the new active version durably, then swap the model between two parts; if the
    /// swap cannot be made, the old record is put back.
    async fn switch(
        &mut self,
        model: &str,
        before: &Active,
        after: &Active,
        slot: Option<&Slot>,
        source: &str,
    ) -> Result<(), String> {
        let m = &self.models[model];
        m.slots.set_active(after)?;
        let o = slot.map(ModelOverride::of);
        if let Err(e) = self.reloader.set_model(model, o, source).await {
            if let Err(back) = self.models[model].slots.set_active(before) {
                tracing::error!(model, error = %back, "active.json could not be put back after a failed swap");
            }
            return Err(e);
        }
        self.publish(model);
        Ok(())
    }

    fn watch(&self, model: &str, version: u64) {
        let Some(me) = self.me.clone() else { return };
        let start = self.models[model]
            .tasks
            .iter()
            .filter_map(|t| {
                let s = self.task_stats.get(t)?;
                Some((t.clone(), (s.processed.load(Ordering::Relaxed), s.error.load(Ordering::Relaxed))))
            })
            .collect();
        tokio::spawn(me.watch_health(model.to_string(), version, start));
    }
}

/// The state of a model that was never promoted: the config's own file.
fn factory(by: &str) -> Active {
    Active { version: None, accepted: Vec::new(), since: now(), by: by.to_string() }
}

/// Read an image file and judge it with `rule`, as a part.
fn judge_file(loaded: &mut Loaded, rule: &CandidateRule, path: &Path) -> Result<Verdict, String> {
    let image = imgcodecs::imread(&*path.to_string_lossy(), imgcodecs::IMREAD_COLOR).map_err(|e| e.message.clone())?;
    if opencv::prelude::MatTraitConst::empty(&image) {
        return Err("cannot be read as an image".into());
    }
    let conf = rule.rule.score_floor().at(rule.threshold);
    let (mut outs, timing) = loaded.infer(&[&image], conf * 0.999, 0.7)?;
    let out = outs.pop().ok_or("the model returned no result")?;
    let part = PartInfo {
        camera: "golden".into(),
        part_id: 0,
        captured: std::time::Instant::now(),
        position: None,
        captured_wall: SystemTime::now(),
        stamp: crate::part::control::Stamp { generation: 0, threshold: rule.threshold },
    };
    let inspection = Inspection {
        part,
        output: Ok(out),
        threshold: rule.threshold,
        preprocess_ms: timing.preprocess_ms,
        inference_ms: timing.inference_ms,
        image: None,
    };
    Ok(rule.rule.judge(inspection).verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_path_must_stay_inside_the_drop_folder() {
        let dir = tempfile::tempdir().unwrap();
        let incoming = dir.path().join("incoming");
        std::fs::create_dir_all(incoming.join("m-2.lsmodel")).unwrap();
        std::fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), incoming.join("link")).unwrap();
        assert!(package_dir(&incoming, "m-2.lsmodel").is_ok());
        for bad in ["../elsewhere", "/etc", "", "link", "a/../../x"] {
            assert!(package_dir(&incoming, bad).is_err(), "{bad}");
        }
    }
}
