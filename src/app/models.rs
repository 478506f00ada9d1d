//! Models: one ONNX Runtime session per model, shared by every task using
//! it, loaded and warmed up in turn (each may build a TensorRT engine); and
//! each task's verdict rule for its model.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use opencv::core::{Mat, Scalar, CV_8UC3};

use super::warming::Warming;
use super::StartError;
use crate::config::{Config, ModelConfig, ProviderConfig, RulesConfig};
use crate::decision::rules::{ClassifierRule, DetectionRule, Rule};
use crate::decision::Band;
use crate::inference::runtime::ProviderReport;
use crate::inference::{Loaded, Member, ModelSwap};
use crate::part::queue::Doorbell;
use crate::stats::ModelStats;
use crate::telemetry::Telemetry;

/// Load every model the tasks use, in turn. A model that cannot be used stops only its own
/// tasks (they reject every part); none usable at all is a broken installation.
pub async fn load_all<'c>(
    config: &'c Config,
    env: &'static ort::environment::Environment,
    threads: usize,
    telemetry: &Telemetry,
) -> Result<BTreeMap<&'c str, Group>, StartError> {
    let mut groups = BTreeMap::new();
    let budget = thread_budget(config, threads);
    for (model_name, users) in models_in_use(config) {
        let model_cfg = &config.models[model_name];
        let group = load_one(model_name, model_cfg, &users, env, budget[model_name], telemetry).await;
        groups.insert(model_name, group);
    }
    if !groups.is_empty() && groups.values().all(|g| g.loaded.is_err()) {
        let why = groups.values().filter_map(|g| g.loaded.as_ref().err()).cloned().collect::<Vec<_>>().join("; ");
        return Err(StartError::Model(why));
    }
    Ok(groups)
}

/// Load one model and run it once on a blank frame, reporting its tasks as warming meanwhile.
async fn load_one(
    model_name: &str,
    model_cfg: &ModelConfig,
    users: &[String],
    env: &'static ort::environment::Environment,
    model_threads: usize,
    telemetry: &Telemetry,
) -> Group {
    let warming = Warming::begin(telemetry, users, model_cfg);
    let stats = Arc::new(ModelStats::default());
    stats.threads.store(model_threads as u64, Ordering::Relaxed);
    let loaded = match load_and_warm(model_name, model_cfg, env, model_threads).await {
        Ok((loaded, warm)) => {
            warming.done(loaded.provider(), warm);
            let _ = stats.provider.set(loaded.provider());
            tracing::info!(model = model_name, threads = model_threads, batch = model_cfg.batch, tasks = ?users, "model shared by its tasks");
            Ok(loaded)
        }
        Err(why) => {
            // The other models' tasks keep inspecting; this one's parts are all rejected (ERROR)
            // and the fault holds the plain outputs safe and lights the stack light.
            let why = format!("model `{model_name}` (tasks {}): {why}", users.join(", "));
            tracing::error!(error = %why, "model cannot be used; its tasks reject every part");
            warming.failed(&why);
            Err(why)
        }
    };
    let (swap_tx, swaps) = std::sync::mpsc::channel();
    Group {
        loaded,
        bell: Arc::new(Doorbell::default()),
        members: Vec::new(),
        stats,
        threads: model_threads,
        swap_tx,
        swaps,
    }
}

/// Off the runtime threads: loading blocks, and the first run is where lazy providers
/// (TensorRT with dynamic shapes) build their engine.
///
/// The session is made on a thread of its own named `ort-<model>`: ONNX Runtime starts its
/// intra-op pool there, and on Linux a thread inherits its creator's name, so the pool's
/// threads are named after the model too (machine health reports CPU by thread name; made on
/// the async runtime's blocking pool, they would count as `rt-worker`).
pub(super) async fn load_and_warm(
    name: &str,
    model_cfg: &ModelConfig,
    env: &'static ort::environment::Environment,
    threads: usize,
) -> Result<(Loaded, f64), String> {
    let cfg = model_cfg.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("ort-{name}"))
        .spawn(move || {
            let _ = tx.send(crate::inference::load_model(env, &cfg, threads));
        })
        .map_err(|e| format!("cannot start a thread to load the model: {e}"))?;
    let loaded = rx
        .await
        .map_err(|_| "the thread loading the model ended without an answer".to_string())?
        .map_err(|e| e.to_string())?;
    if let Some(max) = loaded.max_batch().filter(|max| model_cfg.batch > *max) {
        return Err(format!(
            "`batch: {}` but `{}` takes at most {max} frame(s) per call; export it with a dynamic batch (Ultralytics: `dynamic=True`) or set `batch: {max}`",
            model_cfg.batch,
            model_cfg.path.display()
        ));
    }
    tokio::task::spawn_blocking(move || {
        let mut loaded = loaded;
        warm_up(&mut loaded).map(|ms| (loaded, ms))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("`{}` fails on a blank frame: {e}", model_cfg.path.display()))
}

/// A loaded model and the tasks it serves, until its worker starts.
pub struct Group {
    /// The model, or why it cannot be used.
    pub loaded: Result<Loaded, String>,
    pub bell: Arc<Doorbell>,
    pub members: Vec<Member>,
    pub stats: Arc<ModelStats>,
    /// Its share of the inference threads (a model swapped in by a reload gets the same).
    pub threads: usize,
    /// Where a reload sends a replacement, and where the worker takes it.
    pub swap_tx: std::sync::mpsc::Sender<ModelSwap>,
    pub swaps: std::sync::mpsc::Receiver<ModelSwap>,
}

/// Each model the tasks use, with its tasks.
pub fn models_in_use(config: &Config) -> BTreeMap<&str, Vec<String>> {
    let mut used: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, task) in &config.tasks {
        used.entry(task.model.as_str()).or_default().push(name.clone());
    }
    used
}

/// Inference threads per model: a model's own `cpu: {threads}` if set, else an
/// equal share of `runtime.threads` (at least one), so that several models on
/// one device do not each take every core and fight over them.
pub fn thread_budget(config: &Config, threads: usize) -> BTreeMap<&str, usize> {
    let used = models_in_use(config);
    let share = (threads / used.len().max(1)).max(1);
    used.keys()
        .map(|name| {
            let own = config.models[*name].providers.iter().find_map(|p| match p {
                ProviderConfig::Cpu(c) => c.threads,
                _ => None,
            });
            (*name, own.unwrap_or(share))
        })
        .collect()
}

/// What the rest of the node needs to know about a task's model.
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub kind: &'static str,
    pub sha256: String,
    pub providers: Vec<ProviderReport>,
    pub classes: Vec<String>,
    /// The task's NG threshold: a probability for classifiers, the minimum confidence for detectors.
    pub threshold: f32,
}

impl ModelInfo {
    /// `name@version`, as results name the model that judged them.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// A task's verdict rule for a loaded model, from the task's `rules`. A model installed by a
/// rollout is named by its slot: the config's model name and the package's version.
pub fn rule_for(
    loaded: &Loaded,
    rules: &RulesConfig,
    path: &Path,
    ok_classes: &[String],
) -> Result<(Rule, ModelInfo), String> {
    let (rule, mut info) = rule_of(loaded, rules, path, ok_classes)?;
    if let Some((name, version)) = slot_of(path) {
        info.name = name;
        info.version = version.to_string();
    }
    Ok((rule, info))
}

/// `(model name, version)` of a model file in a rollout slot: `<state>/models/<name>/slots/<version>/<file>`.
fn slot_of(path: &Path) -> Option<(String, u64)> {
    let slot = path.parent()?;
    let version = slot.file_name()?.to_str()?.parse().ok()?;
    let slots = slot.parent()?;
    if slots.file_name()? != "slots" {
        return None;
    }
    let name = slots.parent()?.file_name()?.to_str()?.to_string();
    (slots.parent()?.parent()?.file_name()? == "models").then_some((name, version))
}

fn rule_of(
    loaded: &Loaded,
    rules: &RulesConfig,
    path: &Path,
    ok_classes: &[String],
) -> Result<(Rule, ModelInfo), String> {
    let stem = || path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    match loaded {
        Loaded::Anomaly(model) => {
            if !rules.class_min_confidence.is_empty()
                || rules.min_area > 0.0
                || rules.roi.is_some()
                || !rules.zones.is_empty()
            {
                return Err("`class_min_confidence`, `min_area`, `roi` and `zones` are for detectors; this model is an anomaly model (crop the camera instead)".into());
            }
            let threshold = rules.ng_threshold.map_or(model.contract.threshold, |t| t as f32);
            let info = ModelInfo {
                name: model.contract.name.clone().unwrap_or_else(stem),
                version: format!("anomaly-{}", &model.sha256[..12]),
                kind: "anomaly",
                sha256: model.sha256.clone(),
                providers: model.providers.clone(),
                classes: vec!["anomaly".into()],
                threshold,
            };
            Ok((Rule::Anomaly { band: band(rules, threshold)? }, info))
        }
        Loaded::Classifier(_) | Loaded::YoloClassify(_) => classifier_rule(loaded, rules, ok_classes, stem()),
        Loaded::Detector(model) => {
            let threshold = rules.ng_threshold.map_or(0.25, |t| t as f32);
            let info = ModelInfo {
                name: stem(),
                version: format!("yolo-{}", &model.sha256[..12]),
                kind: if model.meta.task == "segment" { "yolo-segment" } else { "yolo-detect" },
                sha256: model.sha256.clone(),
                providers: model.providers.clone(),
                classes: model.meta.names.clone(),
                threshold,
            };
            Ok((Rule::Detector(detection_rule(rules, &info.classes, threshold)?), info))
        }
    }
}

/// The uncertain band below `threshold`, if the task has one; an empty band is a config error.
fn band(rules: &RulesConfig, threshold: f32) -> Result<Option<Band>, String> {
    match &rules.uncertain {
        Some(u) if u.from as f32 >= threshold => Err(format!(
            "rules.uncertain.from {} is not below the NG threshold {threshold}: the band would be empty; lower `from` or raise `ng_threshold`",
            u.from
        )),
        Some(u) => Ok(Some(Band { from: u.from as f32 })),
        None => Ok(None),
    }
}

/// Classifiers (linesight's and Ultralytics'): which classes mean good, and the threshold
/// (the task's, else the model's own, else 0.5).
fn classifier_rule(
    loaded: &Loaded,
    rules: &RulesConfig,
    ok_classes: &[String],
    stem: String,
) -> Result<(Rule, ModelInfo), String> {
    if !rules.class_min_confidence.is_empty() || rules.min_area > 0.0 || rules.roi.is_some() {
        return Err("`class_min_confidence`, `min_area` and `roi` are for detectors; this model is a classifier".into());
    }
    let (classes, ok, own) = loaded.class_contract(ok_classes).unwrap_or_else(|| Err("not a classifier".into()))?;
    let threshold = rules.ng_threshold.map(|t| t as f32).or(own).unwrap_or(0.5);
    let info = match loaded {
        Loaded::Classifier(model) => ModelInfo {
            name: model.contract.name.clone(),
            version: model.contract.version.clone(),
            kind: "classifier",
            sha256: model.sha256.clone(),
            providers: model.providers.clone(),
            classes,
            threshold,
        },
        Loaded::YoloClassify(model) => ModelInfo {
            name: stem,
            version: format!("yolo-{}", &model.sha256[..12]),
            kind: "yolo-classify",
            sha256: model.sha256.clone(),
            providers: model.providers.clone(),
            classes,
            threshold,
        },
        _ => return Err("not a classifier".into()),
    };
    let rule = ClassifierRule { ok, ng_threshold: threshold, band: band(rules, threshold)? };
    Ok((Rule::Classifier(rule), info))
}

/// Detectors and segmenters: per-class minimum confidences, area, region of interest, zones.
fn detection_rule(rules: &RulesConfig, names: &[String], threshold: f32) -> Result<DetectionRule, String> {
    let mut class_min = vec![0.0_f32; names.len()];
    for (class, min) in &rules.class_min_confidence {
        let i = names.iter().position(|n| n == class).ok_or_else(|| {
            format!(
                "rules.class_min_confidence names `{class}`, which the model does not have (its classes: {names:?})"
            )
        })?;
        class_min[i] = *min as f32;
    }
    Ok(DetectionRule {
        class_min,
        min_area: rules.min_area as f32,
        roi: rules.roi.map(|r| r.map(|v| v as f32)),
        zones: rules.zones.iter().map(|z| z.iter().map(|p| p.map(|v| v as f32)).collect()).collect(),
        band: band(rules, threshold)?,
    })
}

/// The stand-in for a task whose model cannot be used: its worker judges every part ERROR.
pub fn unusable_rule(path: &Path) -> (Rule, ModelInfo) {
    let info = ModelInfo {
        name: path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default(),
        version: "unusable".into(),
        kind: "unusable",
        sha256: String::new(),
        providers: Vec::new(),
        classes: Vec::new(),
        threshold: 0.5,
    };
    (Rule::Classifier(ClassifierRule { ok: Vec::new(), ng_threshold: 0.5, band: None }), info)
}

/// One inference on a blank frame, so the first part is not slowed by lazy
/// initialisation, and so a model that cannot run is found before READY.
fn warm_up(loaded: &mut Loaded) -> Result<f64, String> {
    let (w, h) = loaded.input_size();
    let blank = Mat::new_rows_cols_with_default(h as i32, w as i32, CV_8UC3, Scalar::all(128.0))
        .map_err(|e| e.message.clone())?;
    let t = Instant::now();
    loaded.infer(&[&blank], 0.25, 0.7)?;
    Ok(t.elapsed().as_secs_f64() * 1e3)
}
