//! The daemon: build everything from a validated config, report READY, run,
//! and stop in order.
//!
//! Start order: outputs to their safe state first (before anything can go
//! wrong), then MQTT, then per task the model (loaded and warmed), the gate,
//! the controller, the inference worker and last the camera, so that no
//! frame is captured before something can judge it.
//!
//! Stop order is the reverse: cameras stop taking frames, workers finish the
//! frames already queued, controllers give every captured part its verdict
//! and wait for the rejects in flight, then outputs go to their safe state,
//! final stats and `offline` are published.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opencv::core::{Mat, Scalar, CV_8UC3};
use rumqttc::QoS;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::camera::queue::Doorbell;
use crate::camera::queue::FrameQueue;
use crate::camera::{Camera, CameraStats, Opener};
use crate::config::{CameraMode, Config};
use crate::decision::control::TaskControl;
use crate::decision::controller::{Controller, GateDistance, RejectPlan};
use crate::decision::reject::{Gate, GateSettings};
use crate::decision::rules::{ClassifierRule, DetectionRule};
use crate::decision::Band;
use crate::inference::{runtime, Member, Rule, Worker};
use crate::line::health::{self, Faults, RejectWindow, WatchedTask};
use crate::line::{encoder, trigger};
use crate::modbus::handshake::{self, HandshakeStats};
use crate::modbus::heartbeat;
use crate::modbus::points::Points;
use crate::modbus::Outputs;
use crate::service::notify;
use crate::telemetry::commands::Commander;
use crate::telemetry::durable::{AckBy, Durable};
use crate::telemetry::mqtt::Mqtt;
use crate::telemetry::sparkplug::Sparkplug;
use crate::telemetry::stats::TaskStats;
use crate::telemetry::{NodeStats, TaskEntry, Telemetry};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The model or the ONNX Runtime library cannot be used: fix the files, restarting will not help.
    #[error("{0}")]
    Model(String),
    #[error("{0}")]
    Other(String),
}

/// Hooks for the demo, the bench and tests.
#[derive(Default)]
pub struct Options {
    /// Receives every part's result document.
    pub observer: Option<mpsc::UnboundedSender<Value>>,
    /// Replace a camera's source (by camera name), e.g. with a simulated line.
    pub openers: BTreeMap<String, Opener>,
}

pub struct Running {
    pub stats: Arc<NodeStats>,
    stop: Arc<AtomicBool>,
    cameras: Vec<std::thread::JoinHandle<()>>,
    workers: Vec<std::thread::JoinHandle<()>>,
    controllers: Vec<JoinHandle<()>>,
    gates: Vec<JoinHandle<()>>,
    outputs: Outputs,
    mqtt: Option<(Mqtt, JoinHandle<()>)>,
    sparkplug: Option<(Sparkplug, JoinHandle<()>)>,
    background: Vec<JoinHandle<()>>,
    /// Trigger tasks: stopped first at shutdown, like the cameras (they
    /// announce parts, and hold the controllers' event channels open).
    triggers: Vec<JoinHandle<()>>,
}

/// Build and start everything. Outputs are in their safe state when this returns an error.
pub async fn start(config: &Config, mut opts: Options) -> Result<Running, StartError> {
    let outputs = Outputs::start(config);
    for (name, e) in outputs.all_to_safe_state().await {
        // An unreachable PLC at start is retried by the link; it is not fatal.
        tracing::warn!(output = %name, error = %e, "safe state not confirmed at start; the link keeps retrying");
    }
    let lib = runtime::library_path(&config.runtime).map_err(|e| StartError::Model(e.to_string()))?;
    let env = runtime::environment(&lib).map_err(|e| StartError::Model(e.to_string()))?;
    let threads =
        config.runtime.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));

    let (mqtt, incoming) = match &config.mqtt {
        Some(m) if m.dialect.json() => {
            let commands = crate::telemetry::mqtt::Topics::new(&m.prefix, &config.node).commands();
            let durable = match &m.queue {
                Some(q) => Some(Durable::open(q, AckBy::PubAck).map_err(StartError::Other)?),
                None => None,
            };
            let (client, task, incoming) =
                Mqtt::start(m, &config.node, vec![commands], durable).map_err(StartError::Other)?;
            (Some((client, task)), Some(incoming))
        }
        _ => (None, None),
    };
    let (sparkplug, sparkplug_pending) = match &config.mqtt {
        Some(m) if m.dialect.sparkplug() => {
            let (handle, pending) = Sparkplug::channel();
            (Some(handle), Some(pending))
        }
        _ => (None, None),
    };
    let telemetry = Telemetry { json: mqtt.as_ref().map(|(m, _)| m.clone()), sparkplug: sparkplug.clone() };
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let faults = Arc::new(Faults::default());
    let mut running = Running {
        stats: Arc::new(NodeStats {
            started: Instant::now(),
            tasks: BTreeMap::new(),
            devices: outputs.devices.clone(),
            faults: faults.clone(),
            heartbeats: None,
            mqtt_queue: None,
            models: BTreeMap::new(),
        }),
        stop: stop.clone(),
        cameras: Vec::new(),
        workers: Vec::new(),
        controllers: Vec::new(),
        gates: Vec::new(),
        outputs: outputs.clone(),
        mqtt: None,
        sparkplug: None,
        background: Vec::new(),
        triggers: Vec::new(),
    };
    // Line I/O: points first, so triggers, the encoder and the gates have values to follow.
    let (points, poll_tasks) = Points::start(config, &outputs.devices);
    running.background.extend(poll_tasks);
    let encoder_rx = config.line.encoder.as_ref().and_then(|name| {
        let point = points.get(name)?;
        let (tx, rx) = tokio::sync::watch::channel(None);
        running.background.push(tokio::spawn(encoder::follow(point.rx.clone(), point.spec.ty, tx)));
        Some(rx)
    });
    let running_rx = config.line.running.as_ref().and_then(|name| points.subscribe(name));
    let heartbeats = match (outputs.heartbeat(), &config.modbus.heartbeat) {
        (Some(reg), Some(hb)) => {
            let beats = Arc::new(AtomicU64::new(0));
            running.background.push(tokio::spawn(heartbeat::run(reg.clone(), hb.period.get(), beats.clone())));
            Some(beats)
        }
        _ => None,
    };
    let reject_window = config.stack_light.ng_rate.as_ref().map(|n| Arc::new(RejectWindow::new(n.window)));
    let mut watched = Vec::new();
    let mut entries = BTreeMap::new();
    let mut to_start = Vec::new();
    // One session per model, shared by every task that uses it (frames batched
    // across their cameras). Loaded in turn: each may build a TensorRT engine.
    let mut groups: BTreeMap<&str, Group> = BTreeMap::new();
    let budget = thread_budget(config, threads);
    for (model_name, users) in models_in_use(config) {
        let model_cfg = &config.models[model_name];
        let warming = Warming::begin(&telemetry, &users, model_cfg);
        let model_cfg_owned = model_cfg.clone();
        let model_threads = budget[model_name];
        let load = async {
            let loaded =
                tokio::task::spawn_blocking(move || crate::inference::load_model(env, &model_cfg_owned, model_threads))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
            if let Some(max) = loaded.max_batch().filter(|max| model_cfg.batch > *max) {
                return Err(format!(
                    "`batch: {}` but `{}` takes at most {max} frame(s) per call; export it with a dynamic batch (Ultralytics: `dynamic=True`) or set `batch: {max}`",
                    model_cfg.batch,
                    model_cfg.path.display()
                ));
            }
            // The first run is where lazy providers (TensorRT with dynamic shapes) build their engine.
            tokio::task::spawn_blocking(move || {
                let mut loaded = loaded;
                warm_up(&mut loaded).map(|ms| (loaded, ms))
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("`{}` fails on a blank frame: {e}", model_cfg.path.display()))
        };
        let stats = Arc::new(crate::telemetry::ModelStats::default());
        stats.threads.store(model_threads as u64, Ordering::Relaxed);
        let loaded = match load.await {
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
        groups.insert(model_name, Group { loaded, bell: Arc::new(Doorbell::default()), members: Vec::new(), stats });
    }
    // Nothing at all can be inspected: that is a broken installation, not a cell to run.
    if !groups.is_empty() && groups.values().all(|g| g.loaded.is_err()) {
        let why = groups.values().filter_map(|g| g.loaded.as_ref().err()).cloned().collect::<Vec<_>>().join("; ");
        return Err(StartError::Model(why));
    }
    for (task_name, task) in &config.tasks {
        let cam_cfg = &config.cameras[&task.camera];
        let model_cfg = &config.models[&task.model];
        let group = groups.get_mut(task.model.as_str()).expect("every used model was loaded");
        let (rule, info) = match &group.loaded {
            Ok(loaded) => rule_for(loaded, &task.rules, &model_cfg.path, &model_cfg.ok_classes)
                .map_err(|e| StartError::Model(format!("task `{task_name}`: {e}")))?,
            Err(_) => unusable_rule(&model_cfg.path),
        };
        let provider = group.loaded.as_ref().map_or("none", |l| l.provider());
        let threshold = info.threshold;
        tracing::info!(
            task = %task_name, model = %info.name, version = %info.version, kind = info.kind,
            provider, ng_threshold = %format!("{threshold:.3}"), "task ready"
        );
        let stats = Arc::new(TaskStats::default());
        let cam_stats = Arc::new(CameraStats::default());
        let task_progress = Arc::new(AtomicU64::new(0));
        let handshake_stats = task.handshake.as_ref().map(|_| Arc::new(HandshakeStats::default()));
        let control = Arc::new(TaskControl::new(threshold));
        entries.insert(
            task_name.clone(),
            TaskEntry {
                camera: task.camera.clone(),
                camera_stats: cam_stats.clone(),
                stats: stats.clone(),
                provider: provider.to_string(),
                handshake: handshake_stats.clone(),
                control: control.clone(),
                model: json!({
                    "name": info.name,
                    "version": info.version,
                    "kind": info.kind,
                    "sha256": info.sha256,
                    "providers": info.providers,
                }),
            },
        );
        let reject = match &task.reject {
            Some(r) => {
                let handle = outputs
                    .get(&r.output)
                    .ok_or_else(|| StartError::Other(format!("output `{}` has no device task", r.output)))?
                    .clone();
                let settings = GateSettings {
                    pulse: r.pulse.get(),
                    on_deadline_miss: r.on_deadline_miss,
                    precise: true,
                    encoder: encoder_rx.clone(),
                    running: running_rx.clone(),
                    confirm: r.confirm.as_ref().and_then(|c| Some((points.subscribe(&c.point)?, c.within.get()))),
                };
                let (gate, gate_task) = Gate::start(handle, settings, stats.clone());
                running.gates.push(gate_task);
                let at = match (r.delay, r.distance) {
                    (_, Some(n)) => GateDistance::Counts(n),
                    (Some(d), None) => GateDistance::Delay(d.get()),
                    (None, None) => GateDistance::Delay(Duration::ZERO), // refused by validation
                };
                Some(RejectPlan { gate, output: r.output.clone(), at, encoder: encoder_rx.clone() })
            }
            None => None,
        };
        let handshake_tx = match (&task.handshake, &handshake_stats) {
            (Some(block), Some(hs)) => {
                let (Some(reg), Some(cfg)) = (outputs.result_block(block), config.modbus.result_blocks.get(block))
                else {
                    return Err(StartError::Other(format!("result block `{block}` has no device")));
                };
                let (tx, rx) = mpsc::unbounded_channel();
                running.gates.push(tokio::spawn(handshake::run(
                    reg.clone(),
                    cfg.ack_poll.get(),
                    cfg.buffer,
                    rx,
                    hs.clone(),
                    Duration::from_secs(1),
                )));
                Some(tx)
            }
            _ => None,
        };
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let task_arc: Arc<str> = task_name.as_str().into();
        let controller = Controller {
            task: task_arc.clone(),
            classes: info.classes.clone().into(),
            inference_timeout: task.inference_timeout.get(),
            part_per_frame: cam_cfg.mode != CameraMode::FreeRunning,
            reject,
            telemetry: telemetry.clone(),
            stats: stats.clone(),
            model_label: format!("{}@{}", info.name, info.version),
            observer: opts.observer.clone(),
            handshake: handshake_tx,
            reject_window: reject_window.clone(),
            uncertain: task.rules.uncertain.as_ref().map(|u| u.action).unwrap_or_default(),
        };
        running.controllers.push(tokio::spawn(controller.run(events_rx)));
        let queue = Arc::new(FrameQueue::with_doorbell(cam_cfg.queue, group.bell.clone()));
        group.members.push(Member {
            task: task_arc,
            rule,
            queue: queue.clone(),
            events: events_tx.clone(),
            max_age: task.inference_timeout.get(),
            task_progress: task_progress.clone(),
            control,
        });
        let waiting: Option<trigger::Waiting> = task.trigger.as_ref().map(|_| Default::default());
        if let (Some(t), Some(w)) = (&task.trigger, &waiting) {
            let point = points
                .get(&t.point)
                .ok_or_else(|| StartError::Other(format!("trigger point `{}` missing", t.point)))?;
            let detector = trigger::Detector::new(t.on, point.spec.ty);
            running.triggers.push(tokio::spawn(trigger::run(
                task.camera.as_str().into(),
                point.rx.clone(),
                detector,
                w.clone(),
                events_tx.clone(),
                stats.clone(),
            )));
        }
        watched.push(WatchedTask {
            name: task_name.clone(),
            camera: task.camera.clone(),
            camera_stats: cam_stats.clone(),
            queue: queue.clone(),
            progress: task_progress,
            stats: stats.clone(),
            unusable: group.loaded.as_ref().err().cloned(),
        });
        let opener = opts
            .openers
            .remove(&task.camera)
            .unwrap_or_else(|| Camera::opener_for(&cam_cfg.source, cam_cfg.timeout.get()));
        let camera = Camera {
            name: task.camera.as_str().into(),
            config: cam_cfg.clone(),
            queue,
            stats: cam_stats,
            events: events_tx,
            stop: stop.clone(),
            opener,
            waiting,
            max_age: task.inference_timeout.get(),
        };
        to_start.push(camera);
    }
    running.stats = Arc::new(NodeStats {
        started: Instant::now(),
        tasks: entries,
        models: groups.iter().map(|(k, g)| (k.to_string(), g.stats.clone())).collect(),
        devices: outputs.devices.clone(),
        faults: faults.clone(),
        heartbeats,
        // The JSON session's queue figures; with Sparkplug alone, its session fills them in.
        mqtt_queue: mqtt
            .as_ref()
            .map(|(m, _)| m.queue.clone())
            .or_else(|| sparkplug.as_ref().map(|_| Arc::new(crate::telemetry::mqtt::QueueStats::default()))),
    });
    // Plain outputs (not a gate, not a lamp) are held safe during a fault.
    let lamps: Vec<&str> = [
        config.stack_light.running.as_deref(),
        config.stack_light.fault.as_deref(),
        config.stack_light.ng_rate.as_ref().map(|n| n.output.as_str()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let plain: Vec<String> = outputs
        .names()
        .filter(|n| {
            !lamps.contains(n) && !config.tasks.values().any(|t| t.reject.as_ref().is_some_and(|r| r.output == *n))
        })
        .map(str::to_string)
        .collect();
    let alarm_telemetry = telemetry.clone();
    running.background.push(tokio::spawn(health::supervise(
        config.stack_light.clone(),
        outputs.clone(),
        watched,
        running.stats.mqtt_queue.clone(),
        reject_window.unwrap_or_else(|| Arc::new(RejectWindow::new(1))),
        faults,
        plain,
        move |doc| alarm_telemetry.alarms(&doc),
    )));
    let commander = Commander {
        points: points.clone(),
        outputs: outputs.clone(),
        tasks: Arc::new(running.stats.tasks.iter().map(|(n, t)| (n.clone(), t.control.clone())).collect()),
        rebirth: sparkplug.as_ref().map(|s| s.rebirth.clone()),
    };
    if let Some((m, _)) = &mqtt {
        let mut cameras: BTreeMap<&str, Arc<CameraStats>> = BTreeMap::new();
        for t in running.stats.tasks.values() {
            cameras.entry(t.camera.as_str()).or_insert_with(|| t.camera_stats.clone());
        }
        for (name, stats) in cameras {
            running.background.push(tokio::spawn(crate::telemetry::cameras::publish(name.into(), stats, m.clone())));
        }
        for p in points.points.values() {
            running.background.push(tokio::spawn(crate::telemetry::points::publish(p.clone(), m.clone())));
        }
        if let Some(incoming) = incoming {
            running.background.push(tokio::spawn(crate::telemetry::commands::serve_json(
                incoming,
                m.clone(),
                commander.clone(),
            )));
        }
    }
    if let (Some(pending), Some(handle), Some(m)) = (sparkplug_pending, sparkplug, &config.mqtt) {
        let durable = match &m.queue {
            Some(q) => {
                // Its own queue beside the JSON one: the two sessions acknowledge differently.
                let q = crate::config::QueueConfig { dir: q.dir.join("sparkplug"), ..q.clone() };
                let barrier = crate::telemetry::sparkplug::Topics::new(&config.node).barrier();
                Some(Durable::open(&q, AckBy::Barrier(barrier)).map_err(StartError::Other)?)
            }
            None => None,
        };
        let (task, _counts) = pending
            .start(m, &config.node, running.stats.clone(), points.clone(), commander, durable)
            .map_err(StartError::Other)?;
        running.sparkplug = Some((handle, task));
    }
    for (model_name, g) in groups {
        let cfg = &config.models[model_name];
        let worker = Worker {
            model: model_name.into(),
            loaded: g.loaded,
            members: g.members,
            batch: cfg.batch,
            batch_wait: cfg.batch_wait.get(),
            bell: g.bell,
            iou: 0.7,
            progress: progress.clone(),
            stats: g.stats,
        };
        running.workers.push(worker.spawn().map_err(|e| StartError::Other(format!("cannot start a thread: {e}")))?);
    }
    for camera in to_start {
        running.cameras.push(camera.spawn().map_err(|e| StartError::Other(format!("cannot start a thread: {e}")))?);
    }
    if let (Some((m, _)), Some(cfg)) = (&mqtt, &config.mqtt) {
        running.background.push(tokio::spawn(publish_stats(
            m.clone(),
            running.stats.clone(),
            cfg.stats_interval.get(),
        )));
    }
    if let Some(interval) = notify::watchdog_interval() {
        running.background.push(tokio::spawn(feed_watchdog(progress, interval)));
    }
    running.mqtt = mqtt;
    notify::notify("READY=1\nSTATUS=inspecting");
    Ok(running)
}

/// The tasks whose model is loading: `warming` on MQTT (retained) and in
/// systemd's status, with the start timeout extended while it lasts, because
/// the first TensorRT engine build for a model can take many minutes on a
/// Jetson and systemd would otherwise kill a start that is only slow. READY
/// comes after every model has warmed up.
struct Warming {
    telemetry: Telemetry,
    tasks: Vec<String>,
    started: Instant,
    extender: tokio::task::JoinHandle<()>,
}

impl Warming {
    fn begin(telemetry: &Telemetry, tasks: &[String], model: &crate::config::ModelConfig) -> Self {
        let providers: Vec<&str> = model.providers.iter().map(crate::inference::runtime::provider_name).collect();
        tracing::info!(?tasks, model = %model.path.display(), ?providers, "warming: loading the model (a TensorRT engine build can take minutes)");
        for task in tasks {
            telemetry.task_state(
                task,
                &json!({"state": "warming", "since": crate::telemetry::rfc3339(std::time::SystemTime::now()),
                        "model": model.path.display().to_string(), "providers": providers}),
            );
        }
        notify::notify(&format!("STATUS=warming: task {} loads model {}", tasks.join(", "), model.path.display()));
        let extender = tokio::spawn(async {
            loop {
                notify::notify("EXTEND_TIMEOUT_USEC=60000000");
                tokio::time::sleep(Duration::from_secs(20)).await;
            }
        });
        Warming { telemetry: telemetry.clone(), tasks: tasks.to_vec(), started: Instant::now(), extender }
    }

    fn failed(self, why: &str) {
        for task in &self.tasks {
            self.telemetry.task_state(
                task,
                &json!({"state": "failed", "since": crate::telemetry::rfc3339(std::time::SystemTime::now()), "error": why}),
            );
        }
    }

    fn done(self, provider: &str, warm_up_ms: f64) {
        let took = self.started.elapsed().as_secs_f64();
        tracing::info!(tasks = ?self.tasks, provider, seconds = %format!("{took:.1}"), "warmed up");
        for task in &self.tasks {
            self.telemetry.task_state(
                task,
                &json!({"state": "inspecting", "since": crate::telemetry::rfc3339(std::time::SystemTime::now()),
                        "provider": provider, "warming_s": (took * 10.0).round() / 10.0, "warm_up_ms": (warm_up_ms * 10.0).round() / 10.0}),
            );
        }
    }
}

impl Drop for Warming {
    fn drop(&mut self) {
        self.extender.abort();
    }
}

/// A loaded model and the tasks it serves, until its worker starts.
struct Group {
    /// The model, or why it cannot be used.
    loaded: Result<crate::inference::Loaded, String>,
    bell: Arc<Doorbell>,
    members: Vec<Member>,
    stats: Arc<crate::telemetry::ModelStats>,
}

/// Each model the tasks use, with its tasks.
fn models_in_use(config: &Config) -> BTreeMap<&str, Vec<String>> {
    let mut used: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, task) in &config.tasks {
        used.entry(task.model.as_str()).or_default().push(name.clone());
    }
    used
}

/// Inference threads per model: a model's own `cpu: {threads}` if set, else an
/// equal share of `runtime.threads` (at least one), so that several models on
/// one device do not each take every core and fight over them.
fn thread_budget(config: &Config, threads: usize) -> BTreeMap<&str, usize> {
    let used = models_in_use(config);
    let share = (threads / used.len().max(1)).max(1);
    used.keys()
        .map(|name| {
            let own = config.models[*name].providers.iter().find_map(|p| match p {
                crate::config::ProviderConfig::Cpu(c) => c.threads,
                _ => None,
            });
            (*name, own.unwrap_or(share))
        })
        .collect()
}

/// What the rest of the node needs to know about a task's model.
struct ModelInfo {
    name: String,
    version: String,
    kind: &'static str,
    sha256: String,
    providers: Vec<crate::inference::runtime::ProviderReport>,
    classes: Vec<String>,
    /// The task's NG threshold: a probability for classifiers, the minimum confidence for detectors.
    threshold: f32,
}

/// A task's verdict rule for a loaded model, from the task's `rules`.
fn rule_for(
    loaded: &crate::inference::Loaded,
    rules: &crate::config::RulesConfig,
    path: &std::path::Path,
    ok_classes: &[String],
) -> Result<(Rule, ModelInfo), String> {
    use crate::inference::Loaded;
    let band = |threshold: f32| -> Result<Option<Band>, String> {
        match &rules.uncertain {
            Some(u) if u.from as f32 >= threshold => Err(format!(
                "rules.uncertain.from {} is not below the NG threshold {threshold}: the band would be empty; lower `from` or raise `ng_threshold`",
                u.from
            )),
            Some(u) => Ok(Some(Band { from: u.from as f32 })),
            None => Ok(None),
        }
    };
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
            let info =
                ModelInfo {
                    name: model.contract.name.clone().unwrap_or_else(|| {
                        path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default()
                    }),
                    version: format!("anomaly-{}", &model.sha256[..12]),
                    kind: "anomaly",
                    sha256: model.sha256.clone(),
                    providers: model.providers.clone(),
                    classes: vec!["anomaly".into()],
                    threshold,
                };
            Ok((Rule::Anomaly { band: band(threshold)? }, info))
        }
        Loaded::Classifier(_) | Loaded::YoloClassify(_) => {
            if !rules.class_min_confidence.is_empty() || rules.min_area > 0.0 || rules.roi.is_some() {
                return Err(
                    "`class_min_confidence`, `min_area` and `roi` are for detectors; this model is a classifier".into(),
                );
            }
            let (classes, ok, own) =
                loaded.class_contract(ok_classes).unwrap_or_else(|| Err("not a classifier".into()))?;
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
                    name: path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default(),
                    version: format!("yolo-{}", &model.sha256[..12]),
                    kind: "yolo-classify",
                    sha256: model.sha256.clone(),
                    providers: model.providers.clone(),
                    classes,
                    threshold,
                },
                _ => unreachable!("matched above"),
            };
            let rule = ClassifierRule { ok, ng_threshold: threshold, band: band(threshold)? };
            Ok((Rule::Classifier(rule), info))
        }
        Loaded::Detector(model) => {
            let names = model.meta.names.clone();
            let mut class_min = vec![0.0_f32; names.len()];
            for (class, min) in &rules.class_min_confidence {
                let i = names.iter().position(|n| n == class).ok_or_else(|| {
                    format!("rules.class_min_confidence names `{class}`, which the model does not have (its classes: {names:?})")
                })?;
                class_min[i] = *min as f32;
            }
            let threshold = rules.ng_threshold.map_or(0.25, |t| t as f32);
            let info = ModelInfo {
                name: path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default(),
                version: format!("yolo-{}", &model.sha256[..12]),
                kind: if model.meta.task == "segment" { "yolo-segment" } else { "yolo-detect" },
                sha256: model.sha256.clone(),
                providers: model.providers.clone(),
                classes: names,
                threshold,
            };
            let rule = DetectionRule {
                class_min,
                min_area: rules.min_area as f32,
                roi: rules.roi.map(|r| r.map(|v| v as f32)),
                zones: rules.zones.iter().map(|z| z.iter().map(|p| p.map(|v| v as f32)).collect()).collect(),
                band: band(threshold)?,
            };
            Ok((Rule::Detector(rule), info))
        }
    }
}

/// The stand-in for a task whose model cannot be used: its worker judges every part ERROR.
fn unusable_rule(path: &std::path::Path) -> (Rule, ModelInfo) {
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
fn warm_up(loaded: &mut crate::inference::Loaded) -> Result<f64, String> {
    let (w, h) = loaded.input_size();
    let blank = Mat::new_rows_cols_with_default(h as i32, w as i32, CV_8UC3, Scalar::all(128.0))
        .map_err(|e| e.message.clone())?;
    let t = Instant::now();
    loaded.infer(&[&blank], 0.25, 0.7)?;
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

async fn publish_stats(mqtt: Mqtt, stats: Arc<NodeStats>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let payload = serde_json::to_vec(&stats.to_json(false)).unwrap_or_default();
        if !mqtt.publish(mqtt.topics.stats(), payload, QoS::AtLeastOnce, false) {
            tracing::warn!("stats message dropped: MQTT buffer full");
        }
    }
}

/// WATCHDOG=1 only while frames are judged: a stuck inference stops the
/// feeding and systemd restarts the service (whose start drives outputs safe).
async fn feed_watchdog(progress: Arc<AtomicU64>, interval: Duration) {
    let mut last = progress.load(Ordering::Relaxed);
    let mut tick = tokio::time::interval(interval / 2);
    loop {
        tick.tick().await;
        let now = progress.load(Ordering::Relaxed);
        if now != last {
            notify::notify("WATCHDOG=1");
            last = now;
        }
    }
}

impl Running {
    /// Run until `shutdown` resolves or every source has ended, then stop in order.
    /// Returns the final stats document.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Value {
        let controllers = std::mem::take(&mut self.controllers);
        let all_done = futures_util::future::join_all(controllers);
        tokio::pin!(all_done);
        tokio::pin!(shutdown);
        let finished_alone = tokio::select! {
            _ = &mut shutdown => false,
            _ = &mut all_done => true,
        };
        notify::notify("STOPPING=1\nSTATUS=stopping");
        self.stop.store(true, Ordering::Relaxed);
        for t in self.triggers.drain(..) {
            t.abort();
        }
        if !finished_alone {
            // Parts in flight finish: the controllers wait for their rejects.
            // The grace period bounds a stuck inference.
            if tokio::time::timeout(Duration::from_secs(10), &mut all_done).await.is_err() {
                tracing::error!("parts still in flight after 10 s; stopping anyway");
            }
        }
        self.finish().await
    }

    async fn finish(mut self) -> Value {
        for h in self.background.drain(..) {
            h.abort();
        }
        // Gates end once their controllers (the only senders) are gone.
        for g in self.gates.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), g).await;
        }
        let failures = self.outputs.all_to_safe_state().await;
        if failures.is_empty() {
            tracing::info!("all outputs in their safe state");
        }
        let joins: Vec<_> = self.cameras.drain(..).chain(self.workers.drain(..)).collect();
        let joined = tokio::task::spawn_blocking(move || {
            for j in joins {
                let _ = j.join();
            }
        });
        // A camera stuck inside a driver or network read cannot be
        // interrupted; do not let it hold the stop (the process exit ends it).
        if tokio::time::timeout(Duration::from_secs(2), joined).await.is_err() {
            tracing::warn!("a camera or inference thread did not finish within 2 s; leaving it behind");
        }
        let final_stats = self.stats.to_json(true);
        let (json_session, sparkplug_session) = (self.mqtt.take(), self.sparkplug.take());
        let json = async {
            if let Some((m, task)) = json_session {
                let payload = serde_json::to_vec(&final_stats).unwrap_or_default();
                m.publish(m.topics.stats(), payload, QoS::AtLeastOnce, false);
                m.stop().await;
                drop(m);
                let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
            }
        };
        let sparkplug = async {
            if let Some((sp, task)) = sparkplug_session {
                sp.stop().await;
                drop(sp);
                let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
            }
        };
        tokio::join!(json, sparkplug);
        final_stats
    }
}
