//! Hot reload: a changed config file applied while the line runs (SIGHUP, `systemctl reload`,
//! or the `reload` command).
//!
//! The file is read and checked whole. An invalid file is refused with every problem as
//! `FILE:LINE:COL`, and the running config stays. A valid one is compared with the running
//! config key by key; only these may change while running:
//!
//! - a task's `rules` (threshold, uncertain band, classes, areas, zones) and `commands` limits;
//! - a task's gate distance (`reject.delay` / `reject.distance`);
//! - a model (`models.<name>`: file, kind, sidecar, pin, providers, classes), except `batch`
//!   and `batch_wait`, which shape its worker;
//! - a camera's source, rate (`fps`, `loop`), `rotate`, `crop`, `stall_frames` and `timeout`:
//!   its capture thread takes them between two frames and opens its source again (the part ids
//!   go on; a triggered part waiting for its frame gets the new source's first frame after its
//!   trigger, or ERROR and the reject if the reopen outlasts its inference timeout). Its `mode`
//!   and `queue` shape the task and need a restart.
//!
//! Anything else (a camera's mode or queue, Modbus, MQTT, the line, a task added or removed, a gate's output or
//! pulse) needs a restart, and a file that changes any of it is refused whole, naming each key:
//! a reload is applied completely or not at all, never half.
//!
//! # Between two parts
//!
//! Everything the new config needs is prepared first, while the old one keeps inspecting: new
//! models loaded and warmed up, every affected task's rule made against its model. Then the
//! switch: new settings are put beside the old ones under the next config generation
//! ([`Versions`]), new models are handed to their workers, and last every task's control starts
//! stamping parts with the new generation. A part announced before the switch is inferred, judged
//! and timed by the old settings; a part announced after it by the new ones. Nothing in flight is
//! dropped, and Modbus links, MQTT sessions and unchanged cameras keep running through it.
//!
//! A rule is made against a loaded model (its classes, its own threshold): for a task whose
//! model did not change, the model file is loaded again for that (not warmed, then dropped; the
//! worker keeps its session).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{json, Value};

use super::models::{self, rule_for};
use crate::config::{self, Config, LoadedConfig};
use crate::decision::controller::{GateDistance, TaskSettings};
use crate::inference::{Loaded, ModelSwap};
use crate::part::control::{CommandLimits, TaskControl, Versions};
use crate::part::output::ScoreFloor;
use crate::stats::node::ReloadStats;

/// What a reload may change in one running task.
pub struct TaskHandles {
    pub control: Arc<TaskControl>,
    pub settings: Arc<Versions<TaskSettings>>,
    pub floor: Arc<Versions<ScoreFloor>>,
    /// The model as the stats report it.
    pub model_doc: Arc<RwLock<Value>>,
    /// The task's camera thread, which takes changed camera settings between two frames.
    pub camera: std::sync::mpsc::Sender<crate::camera::Settings>,
    /// What the task's model does with a frame, as its camera was last told (`decode: auto`).
    pub fit: Option<crate::part::fit::Fit>,
}

/// What a reload may change in one running model's worker.
pub struct ModelHandles {
    pub swaps: std::sync::mpsc::Sender<ModelSwap>,
    pub threads: usize,
}

/// A model file from a rollout slot in place of the config's own (see [`super::rollout`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOverride {
    pub path: PathBuf,
    pub sidecar: Option<PathBuf>,
    /// The manifest's hash of the model file: pinned, so a slot changed on disk is refused at load.
    pub sha256: Option<String>,
    pub version: u64,
}

impl ModelOverride {
    /// The model entry with the slot's files; its providers, batching and classes stay.
    pub fn apply(&self, m: &mut config::ModelConfig) {
        m.path = self.path.clone();
        m.sidecar = self.sidecar.clone();
        m.sha256 = self.sha256.clone();
    }
}

/// The one owner of the running config. Cheap to clone; reloads run one at a time.
#[derive(Clone)]
pub struct Reloader {
    state: Arc<tokio::sync::Mutex<State>>,
    stats: Arc<ReloadStats>,
}

struct State {
    /// The file a reload reads.
    path: PathBuf,
    /// The file's own config, as last read.
    file: LoadedConfig,
    /// What runs: the file's config with each model's active rollout slot in place.
    current: LoadedConfig,
    /// Per model, the rollout slot production runs instead of the file's model.
    overrides: BTreeMap<String, ModelOverride>,
    generation: u64,
    tasks: BTreeMap<String, TaskHandles>,
    models: BTreeMap<String, ModelHandles>,
    env: &'static ort::environment::Environment,
}

/// Everything a reload switches to, made before anything switches.
struct Prepared {
    swaps: Vec<(String, Loaded)>,
    /// (task, its camera's new settings) for each camera that changed, or whose task's new
    /// model uses another share of the frame (its decoding may reduce more or less).
    cameras: Vec<(String, crate::camera::Settings)>,
    tasks: Vec<(String, TaskSettings, ScoreFloor, Option<f32>, CommandLimits, Value)>,
}

impl Reloader {
    /// `file` is the config as read; `current` what runs (with `overrides` in place).
    pub fn new(
        file: &LoadedConfig,
        current: &LoadedConfig,
        overrides: BTreeMap<String, ModelOverride>,
        tasks: BTreeMap<String, TaskHandles>,
        models: BTreeMap<String, ModelHandles>,
        env: &'static ort::environment::Environment,
        stats: Arc<ReloadStats>,
    ) -> Reloader {
        let state = State {
            path: file.file().to_path_buf(),
            file: file.clone(),
            current: current.clone(),
            overrides,
            generation: 0,
            tasks,
            models,
            env,
        };
        Reloader { state: Arc::new(tokio::sync::Mutex::new(state)), stats }
    }

    /// Read the config file again and apply it, or refuse it whole. `source` (the signal or the
    /// command's topic) goes into the log. Ok: what was applied; Err: why nothing was.
    pub async fn reload(&self, source: &str) -> Result<String, String> {
        let mut state = self.state.lock().await;
        let file = state.path.clone();
        let outcome = match config::load_file(&file) {
            Err(errors) => {
                for d in &errors.0 {
                    tracing::error!(%source, problem = %d, "config reload refused; the running config stays");
                }
                let problems: Vec<String> = errors.0.iter().map(|d| d.to_string()).collect();
                Err((problems, "invalid"))
            }
            Ok(file) => match with_overrides(&file, &state.overrides) {
                Err(problems) => Err((problems, "refused")),
                Ok(new) => {
                    let applied = state.apply(new).await.map_err(|p| (p, "refused"));
                    if applied.is_ok() {
                        state.file = file;
                    }
                    applied
                }
            },
        };
        let now = crate::util::time::rfc3339(std::time::SystemTime::now());
        let result = match outcome {
            Ok(changes) if changes.is_empty() => {
                tracing::info!(%source, config = %file.display(), "config reload: valid and unchanged; nothing to apply");
                *self.last() = Some(json!({"at": now, "source": source, "result": "unchanged"}));
                Ok("config unchanged".to_string())
            }
            Ok(changes) => {
                self.stats.applied.fetch_add(1, Ordering::Relaxed);
                self.stats.generation.store(state.generation, Ordering::Relaxed);
                tracing::info!(%source, config = %file.display(), generation = state.generation, changes = ?changes, "config reload applied between two parts");
                *self.last() = Some(
                    json!({"at": now, "source": source, "result": "applied", "generation": state.generation, "changes": changes}),
                );
                Ok(format!("applied (generation {}): {}", state.generation, changes.join(", ")))
            }
            Err((problems, kind)) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                if kind == "refused" {
                    for p in &problems {
                        tracing::error!(%source, problem = %p, "config reload refused; the running config stays");
                    }
                }
                *self.last() = Some(json!({"at": now, "source": source, "result": "refused", "problems": problems}));
                Err(format!("reload refused, the running config stays: {}", problems.join("; ")))
            }
        };
        result
    }

    /// Run `model` from a rollout slot (`Some`) or from the config file's own entry (`None`),
    /// switched between two parts like a reload that changes only that model's file.
    pub async fn set_model(&self, model: &str, slot: Option<ModelOverride>, source: &str) -> Result<u64, String> {
        let mut state = self.state.lock().await;
        let mut overrides = state.overrides.clone();
        match slot {
            Some(o) => overrides.insert(model.to_string(), o),
            None => overrides.remove(model),
        };
        let new = with_overrides(&state.file, &overrides).map_err(|p| p.join("; "))?;
        match state.apply(new).await {
            Ok(changes) => {
                state.overrides = overrides;
                if !changes.is_empty() {
                    self.stats.applied.fetch_add(1, Ordering::Relaxed);
                    self.stats.generation.store(state.generation, Ordering::Relaxed);
                }
                tracing::info!(%source, model, generation = state.generation, changes = ?changes, "model switched between two parts");
                Ok(state.generation)
            }
            Err(problems) => Err(format!("the model could not be switched: {}", problems.join("; "))),
        }
    }

    fn last(&self) -> std::sync::MutexGuard<'_, Option<Value>> {
        self.stats.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    /// Apply `new` between two parts, or refuse it with the reasons. Ok: the keys applied.
    async fn apply(&mut self, new: LoadedConfig) -> Result<Vec<String>, Vec<String>> {
        let changes = changed_keys(self.current.config(), new.config());
        if changes.is_empty() {
            return Ok(changes);
        }
        let cold: Vec<String> = changes.iter().filter(|k| !applies_while_running(k)).cloned().collect();
        if !cold.is_empty() {
            return Err(cold
                .iter()
                .map(|k| format!("`{k}` changed: that takes a restart (systemctl restart linesight)"))
                .collect());
        }
        let prepared = self.prepare(new.config(), &changes).await?;
        self.switch(prepared);
        self.current = new;
        Ok(changes)
    }

    /// Load what changed and make every affected task's settings; nothing switches yet.
    async fn prepare(&self, new: &Config, changes: &[String]) -> Result<Prepared, Vec<String>> {
        let changed_models: BTreeSet<&str> = new
            .models
            .keys()
            .filter(|m| changes.iter().any(|k| under(k, &format!("models.{m}"))))
            .map(String::as_str)
            .collect();
        let mut problems = Vec::new();
        let mut swaps = Vec::new();
        for m in &changed_models {
            let Some(handles) = self.models.get(*m) else { continue }; // not used by any task
            match models::load_and_warm(m, &new.models[*m], self.env, handles.threads).await {
                Ok((loaded, warm_ms)) => {
                    tracing::info!(model = m, warm_ms, "reload: new model loaded and warmed up");
                    swaps.push((m.to_string(), loaded));
                }
                Err(e) => problems.push(format!("model `{m}` ({}): {e}", new.models[*m].path.display())),
            }
        }
        let mut tasks = Vec::new();
        for (name, task) in &new.tasks {
            let touched = changes.iter().any(|k| under(k, &format!("tasks.{name}")));
            if !touched && !changed_models.contains(task.model.as_str()) {
                continue;
            }
            let model_cfg = &new.models[&task.model];
            let made = match swaps.iter().find(|(m, _)| *m == task.model) {
                Some((_, loaded)) => rule_for(loaded, &task.rules, &model_cfg.path, &model_cfg.ok_classes),
                None => {
                    let cfg = model_cfg.clone();
                    let env = self.env;
                    let loaded = tokio::task::spawn_blocking(move || crate::inference::load_model(env, &cfg, 1))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()));
                    loaded.and_then(|l| rule_for(&l, &task.rules, &model_cfg.path, &model_cfg.ok_classes))
                }
            };
            let (rule, info) = match made {
                Ok(r) => r,
                Err(e) => {
                    problems.push(format!("task `{name}`: {e}"));
                    continue;
                }
            };
            let handles = &self.tasks[name];
            let limits = CommandLimits::for_task(&task.commands, info.threshold);
            let threshold = (limits.base != handles.control.limits().base).then_some(info.threshold);
            let floor = rule.score_floor();
            let settings = TaskSettings {
                classes: info.classes.clone().into(),
                model_label: info.label().into(),
                rule,
                uncertain: task.rules.uncertain.as_ref().map(|u| u.action).unwrap_or_default(),
                gate_at: gate_at(task.reject.as_ref()),
            };
            tasks.push((name.clone(), settings, floor, threshold, limits, super::tasks::model_doc(&info)));
        }
        let mut cameras = Vec::new();
        for (name, t) in &new.tasks {
            let Some(handles) = self.tasks.get(name) else { continue };
            let fit = match swaps.iter().find(|(m, _)| *m == t.model) {
                Some((_, loaded)) => loaded.fit(),
                None => handles.fit,
            };
            let camera_changed = changes.iter().any(|k| under(k, &format!("cameras.{}", t.camera)));
            if camera_changed || fit != handles.fit {
                let config = new.cameras[&t.camera].clone();
                cameras.push((name.clone(), crate::camera::Settings { config, fit, reopen: camera_changed }));
            }
        }
        if problems.is_empty() {
            Ok(Prepared { swaps, tasks, cameras })
        } else {
            Err(problems)
        }
    }

    /// The switch. Order matters: settings and models of the next generation are in place
    /// before any part can be stamped with it.
    fn switch(&mut self, prepared: Prepared) {
        let generation = self.generation + 1;
        let mut changed = BTreeMap::new();
        for (name, settings, floor, threshold, limits, doc) in prepared.tasks {
            let h = &self.tasks[&name];
            h.settings.push(generation, settings);
            h.floor.push(generation, floor);
            *h.model_doc.write().unwrap_or_else(|p| p.into_inner()) = doc;
            changed.insert(name, (threshold, limits));
        }
        for (model, loaded) in prepared.swaps {
            // A worker that has stopped is shutting down: nothing left to judge.
            let _ = self.models[&model].swaps.send(ModelSwap { generation, loaded: Ok(loaded) });
        }
        for (task, camera) in prepared.cameras {
            let h = self.tasks.get_mut(&task).expect("prepared from these tasks");
            h.fit = camera.fit;
            // A camera thread that has ended (a file that does not loop) has nothing left to take.
            let _ = h.camera.send(camera);
        }
        for (name, h) in &self.tasks {
            let (threshold, limits) = changed.remove(name).unwrap_or_else(|| (None, h.control.limits()));
            h.control.switch(generation, threshold, limits);
        }
        self.generation = generation;
    }
}

/// The file's config with each override in place, checked again in full.
pub(super) fn with_overrides(
    file: &LoadedConfig,
    overrides: &BTreeMap<String, ModelOverride>,
) -> Result<LoadedConfig, Vec<String>> {
    if overrides.is_empty() {
        return Ok(file.clone());
    }
    file.edited(|c| {
        for (m, o) in overrides {
            if let Some(entry) = c.models.get_mut(m) {
                o.apply(entry);
            }
        }
    })
    .map_err(|e| e.0.iter().map(|d| d.to_string()).collect())
}

/// Where a task's gate sits downstream.
pub fn gate_at(reject: Option<&crate::config::RejectConfig>) -> GateDistance {
    match reject.map(|r| (r.delay, r.distance)) {
        Some((_, Some(n))) => GateDistance::Counts(n),
        Some((Some(d), None)) => GateDistance::Delay(d.get()),
        _ => GateDistance::Delay(Duration::ZERO), // no gate, or refused by validation
    }
}

/// Whether `key` is `prefix` or below it.
fn under(key: &str, prefix: &str) -> bool {
    key == prefix || key.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('.'))
}

/// The keys (dotted paths) whose values differ; a whole section or entry added or removed is
/// one key. Lists are compared whole.
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let old = serde_json::to_value(old).unwrap_or(Value::Null);
    let new = serde_json::to_value(new).unwrap_or(Value::Null);
    let mut keys = Vec::new();
    diff("", &old, &new, &mut keys);
    keys
}

fn diff(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in names {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff(&p, x, y, out),
                    _ => out.push(p),
                }
            }
        }
        (a, b) if a != b => out.push(path.to_string()),
        _ => {}
    }
}

/// Whether a change of `key` can be applied while the line runs (see the module doc).
fn applies_while_running(key: &str) -> bool {
    let parts: Vec<&str> = key.split('.').collect();
    match parts.as_slice() {
        ["tasks", _, "rules", ..] | ["tasks", _, "commands", ..] => true,
        ["tasks", _, "reject", "delay" | "distance"] => true,
        ["models", _, field, ..] => !matches!(*field, "batch" | "batch_wait"),
        ["cameras", _, field, ..] => {
            matches!(*field, "source" | "fps" | "loop" | "rotate" | "crop" | "stall_frames" | "timeout" | "decode")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(edit: &str) -> Config {
        let yaml = format!(
            r#"
node: {{ group_id: g, node_id: n }}
modbus:
  devices:
    plc: {{ tcp: "127.0.0.1:502" }}
  outputs:
    gate: {{ device: plc, area: coil, address: 1, safe_state: off }}
cameras:
  top: {{ source: {{ file: a.avi }} }}
models:
  m: {{ path: m.onnx }}
tasks:
  t:
    camera: top
    model: m
    reject: {{ output: gate, delay: 1s, pulse: 30ms }}
{edit}"#
        );
        // The types alone, without the loader's checks (the files named do not exist).
        config::yaml::from_str(&yaml).expect("test config parses")
    }

    #[test]
    fn rules_gate_distance_and_models_apply_while_running_the_rest_needs_a_restart() {
        let old = config("");
        let mut new = old.clone();
        new.tasks.get_mut("t").unwrap().rules.ng_threshold = Some(0.7);
        new.tasks.get_mut("t").unwrap().reject.as_mut().unwrap().delay = Some(config::Dur::from_millis(1500));
        new.models.get_mut("m").unwrap().path = "other.onnx".into();
        let keys = changed_keys(&old, &new);
        assert_eq!(keys, vec!["models.m.path", "tasks.t.reject.delay", "tasks.t.rules.ng_threshold"]);
        assert!(keys.iter().all(|k| applies_while_running(k)));

        let mut cold = old.clone();
        cold.tasks.get_mut("t").unwrap().reject.as_mut().unwrap().pulse = config::Dur::from_millis(50);
        cold.models.get_mut("m").unwrap().batch = 4;
        cold.cameras.get_mut("top").unwrap().mode = config::CameraMode::FreeRunning;
        let keys = changed_keys(&old, &cold);
        assert_eq!(keys, vec!["cameras.top.mode", "models.m.batch", "tasks.t.reject.pulse"]);
        assert!(keys.iter().all(|k| !applies_while_running(k)), "{keys:?}");
        assert!(changed_keys(&old, &old.clone()).is_empty());

        let mut camera = old.clone();
        let top = camera.cameras.get_mut("top").unwrap();
        top.fps = Some(10.0);
        top.source = config::SourceConfig::File("b.avi".into());
        top.rotate = config::Rotation::R180;
        let keys = changed_keys(&old, &camera);
        assert_eq!(keys, vec!["cameras.top.fps", "cameras.top.rotate", "cameras.top.source.file"]);
        assert!(keys.iter().all(|k| applies_while_running(k)), "{keys:?}");
        assert!(!applies_while_running("cameras.top.queue") && !applies_while_running("cameras.top"));
    }

    #[test]
    fn an_entry_added_or_removed_is_one_key() {
        let old = config("");
        let mut new = old.clone();
        new.tasks.remove("t");
        assert_eq!(changed_keys(&old, &new), vec!["tasks.t"]);
        assert!(!applies_while_running("tasks.t"));
        assert!(!applies_while_running("models.m"), "a model added or removed");
        assert!(under("tasks.t.rules", "tasks.t") && !under("tasks.t2.rules", "tasks.t"));
    }

    #[test]
    fn evidence_capture_changes_need_a_restart() {
        // The writer thread, its folders and its index are built once at start.
        let old = config("");
        let mut new = old.clone();
        new.tasks.get_mut("t").unwrap().capture = Some(config::CaptureConfig {
            dir: None,
            ng: true,
            uncertain: true,
            error: true,
            ok_every: Some(10),
            ok_per_hour: None,
            format: config::ImageFormat::Png,
            jpeg_quality: 95,
            max_bytes: config::Size(1_000_000),
            max_files: 10,
            queue: 4,
        });
        let keys = changed_keys(&old, &new);
        assert_eq!(keys, vec!["tasks.t.capture"]);
        assert!(!applies_while_running(&keys[0]));
        assert!(!applies_while_running("tasks.t.capture.ok_every"));
    }
}
