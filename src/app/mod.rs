//! The daemon: build everything from a validated config, report READY, run,
//! and stop in order. `app` is the only module that knows every other one:
//! it wires the stages together and routes what crosses between them
//! (finished parts to telemetry, commands to task controls and outputs).
//!
//! - [`start`] reads as its steps; each step is a function or file of its own:
//!   [`models`] (load, warm up, rules), [`warming`], [`tasks`] (one task
//!   wired), [`sessions`] (MQTT and what publishes through it), [`commands`]
//!   (where commands land), [`supervisor`] (faults, stack light, safe state),
//!   [`publish`] (results, stats, watchdog), [`stop`] (the ordered stop).
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

pub mod capture;
pub mod commands;
pub mod models;
pub mod publish;
pub mod purge;
pub mod reload;
pub mod rollout;
pub mod sessions;
pub mod shadow;
pub mod stop;
pub mod supervisor;
pub mod tasks;
pub mod warming;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::camera::Opener;
use crate::config::{Config, LoadedConfig};
use crate::decision::reject::Gate;
use crate::inference::{runtime, Worker};
use crate::line::encoder;
use crate::modbus::heartbeat;
use crate::modbus::points::Points;
use crate::modbus::Outputs;
use crate::service::notify;
use crate::stats::{Faults, Liveness, Machine, NodeStats, RejectWindow};
use crate::telemetry::mqtt::Mqtt;
use crate::telemetry::sparkplug::Sparkplug;
use models::Group;
use sessions::Sessions;
use supervisor::Supervisor;
use tasks::{BuiltTask, LineIo, Wiring};

/// Finished parts waiting for telemetry. Enough for seconds of every task at line rate; when it
/// is full a result is counted as `telemetry_dropped`, never waited for.
const RESULTS_BUFFER: usize = 4096;

/// Commands waiting for the router.
const COMMAND_BUFFER: usize = 64;

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
    /// Receives every part's result document (the JSON telemetry's).
    pub observer: Option<mpsc::UnboundedSender<Value>>,
    /// Replace a camera's source (by camera name), e.g. with a simulated line.
    pub openers: BTreeMap<String, Opener>,
}

pub struct Running {
    pub stats: Arc<NodeStats>,
    /// Tells capture threads to stop.
    stop: Arc<AtomicBool>,
    /// What must not hang; the systemd watchdog and the PLC heartbeat follow it.
    liveness: Arc<Liveness>,
    /// Says, while it exists, that the node runs; removed by a stop in order.
    marker: Option<purge::Marker>,
    cameras: Vec<std::thread::JoinHandle<()>>,
    workers: Vec<std::thread::JoinHandle<()>>,
    controllers: Vec<JoinHandle<()>>,
    /// Hands finished parts to telemetry; ends after the last controller.
    results: Option<JoinHandle<()>>,
    gates: Vec<JoinHandle<()>>,
    outputs: Outputs,
    mqtt: Option<(Mqtt, JoinHandle<()>)>,
    sparkplug: Option<(Sparkplug, JoinHandle<()>)>,
    background: Vec<JoinHandle<()>>,
    /// Trigger tasks: stopped first at shutdown, like the cameras (they
    /// announce parts, and hold the controllers' event channels open).
    triggers: Vec<JoinHandle<()>>,
    /// Applies a changed config file (SIGHUP, the `reload` command).
    reloader: Option<reload::Reloader>,
    /// Where the operator page listens, when `http` is configured.
    pub http_addr: Option<std::net::SocketAddr>,
    /// Model installs, shadows, promotions and rollbacks (the bench's shadow arm uses it).
    pub rollouts: Option<rollout::Rollouts>,
    /// Evidence capture, when a task has it: its writer stops after the controllers.
    pub capture: Option<crate::capture::Capture>,
}

/// Build and start everything from a config that passed every check (a [`LoadedConfig`] is
/// the proof: the steps below index its maps by the names one entry gives another). Outputs
/// are in their safe state when this returns an error.
pub async fn start(file: &LoadedConfig, mut opts: Options) -> Result<Running, StartError> {
    // What runs: the file's config with each model's active rollout slot in place.
    let (_, overrides) = rollout::effective(file.config()).map_err(StartError::Other)?;
    let current = reload::with_overrides(file, &overrides).map_err(|p| StartError::Other(p.join("; ")))?;
    let loaded = &current;
    let config = loaded.config();
    let outputs = outputs_to_safe_state(config).await;
    let marker = purge::Marker::take(&config.runtime.state_dir);
    let (env, threads) = onnx_runtime(config)?;
    let mut sessions = Sessions::open(config)?;
    let mut running = Running::new(outputs.clone());
    running.marker = Some(marker);
    let line = line_io(config, &outputs, &mut running);
    let mut groups = models::load_all(config, env, threads, &sessions.telemetry).await?;
    let (results_tx, results_rx) = mpsc::channel(RESULTS_BUFFER);
    let capture = capture::start(config).map_err(StartError::Other)?;
    running.capture = capture.as_ref().map(|(c, _)| c.clone());
    // Frames are lent to the controllers for the page, or for evidence capture alone.
    let views = match (&config.http, &capture) {
        (Some(h), _) => Some(Arc::new(crate::part::view::Views::new(h.live_fps, h.gallery))),
        (None, Some(_)) => Some(Arc::new(crate::part::view::Views::lend_only())),
        (None, None) => None,
    };
    let wiring = Wiring {
        config,
        outputs: &outputs,
        line: &line,
        results: results_tx,
        stop: running.stop.clone(),
        views: views.clone(),
        capture: capture.as_ref().map(|(c, _)| c.clone()),
        capture_stats: capture.map(|(_, s)| s.into_iter().collect()).unwrap_or_default(),
        config_hash: capture::config_hash(config).into(),
    };
    let built = build_tasks(&wiring, &mut groups, &mut opts, &mut running)?;
    drop(wiring);
    let (entries, watched, cameras, gates, handles) = split(built);
    let shadows =
        Shadows::start(&groups, tasks::task_stats(&entries), running.capture.clone(), capture::config_hash(config))?;
    let results = publish::forward_results(
        results_rx,
        sessions.telemetry.clone(),
        opts.observer.take(),
        tasks::task_stats(&entries),
        shadows.matcher.clone(),
    );
    running.results = Some(tokio::spawn(results));
    let machine = Arc::new(Machine::for_config(config));
    running.stats = node_stats(&outputs, &groups, entries, line.heartbeats.clone(), &sessions, machine);
    let reloader = reloader(file, loaded, overrides, handles, &groups, env, &running.stats);
    running.reloader = Some(reloader.clone());
    let rollouts = rollout::Rollouts::start(rollout::Wiring {
        config,
        env,
        reloader: reloader.clone(),
        matcher: shadows.matcher.clone(),
        shadow_out: shadows.outputs.clone(),
        taps: &shadows.taps,
        task_stats: tasks::task_stats(&running.stats.tasks),
        kinds: model_kinds(config, &running.stats),
    })
    .map_err(StartError::Other)?;
    if let Some(r) = &rollouts {
        running.stats.rollout.set(r.docs.clone()).ok();
    }
    running.rollouts = rollouts.clone();
    start_supervisor(config, &outputs, &line, watched, &sessions, &mut running);
    let commander = start_command_router(config, &line.points, &outputs, &sessions, reloader, rollouts, &mut running);
    let ready = Arc::new(AtomicBool::new(false));
    if let (Some(cfg), Some(views)) = (&config.http, views) {
        start_http(config, cfg, views, commander.clone(), ready.clone(), &mut running).await?;
    }
    let sparkplug_task =
        sessions.start_publishers(config, &running.stats, &line.points.points, commander, &mut running.background)?;
    start_workers(config, groups, &shadows.taps, &mut running)?;
    start_cameras(cameras, &mut running)?;
    if running.marker.as_ref().is_some_and(|m| m.unclean) {
        purge::purge(config, &gates, line.encoder.as_ref()).await;
    }
    start_periodic(config, &sessions, &mut running);
    running.mqtt = sessions.mqtt.take();
    running.sparkplug = sessions.sparkplug.take().zip(sparkplug_task);
    notify::notify("READY=1\nSTATUS=inspecting");
    ready.store(true, Ordering::Relaxed);
    Ok(running)
}

/// The operator page, `/metrics` and the health endpoints. A port that cannot be bound stops
/// the start: a node configured with a page that nobody can reach is misconfigured.
async fn start_http(
    config: &Config,
    cfg: &crate::config::HttpConfig,
    views: Arc<crate::part::view::Views>,
    commander: crate::telemetry::commands::Commander,
    ready: Arc<AtomicBool>,
    running: &mut Running,
) -> Result<(), StartError> {
    let auth = crate::http::auth::Auth::load(cfg.token_file.as_deref()).map_err(StartError::Other)?;
    let node = format!("{}/{}", config.node.group_id, config.node.node_id);
    let tls = cfg.tls.as_ref().map(crate::http::tls::server_config).transpose().map_err(StartError::Other)?;
    let stored = running.capture.clone().map(|c| {
        let view: Arc<dyn crate::part::view::Stored> = Arc::new(capture::StoreView(c));
        view
    });
    let page = crate::http::Page {
        listen: cfg.listen,
        tls,
        node,
        live_fps: cfg.live_fps,
        stats: running.stats.clone(),
        views,
        stored,
        commander,
        auth,
        ready,
    };
    let served = crate::http::serve(page).await.map_err(StartError::Other)?;
    running.http_addr = Some(served.addr);
    running.background.push(served.task);
    Ok(())
}

/// How long the start retries the safe-state writes (and read-backs) before it goes on.
const START_SAFE_TIME: Duration = Duration::from_secs(3);

/// Outputs first, before anything can go wrong: written safe and read back, retried for a few
/// seconds. An unreachable PLC at start is not fatal: it is a fault, during which the supervisor
/// holds every plain output safe (re-written every few seconds once the link is back) and the
/// lamps show it; a gate is written by its next part (an off-write from here racing the gate's
/// own pulse on the reconnect could cut a reject short, so it is not retried in the background).
async fn outputs_to_safe_state(config: &Config) -> Outputs {
    let outputs = Outputs::start(&config.modbus);
    for (name, why) in outputs.confirm_all_safe(tokio::time::Instant::now() + START_SAFE_TIME).await {
        tracing::warn!(output = %name, %why, "safe state not confirmed at start");
    }
    outputs
}

/// The ONNX Runtime library and the inference thread budget.
fn onnx_runtime(config: &Config) -> Result<(&'static ort::environment::Environment, usize), StartError> {
    let lib = runtime::library_path(&config.runtime).map_err(|e| StartError::Model(e.to_string()))?;
    let env = runtime::environment(&lib).map_err(|e| StartError::Model(e.to_string()))?;
    let threads =
        config.runtime.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    Ok((env, threads))
}

/// Line I/O: points first, so triggers, the encoder and the gates have values to follow;
/// the heartbeat.
fn line_io(config: &Config, outputs: &Outputs, running: &mut Running) -> LineIo {
    let (points, poll_tasks) = Points::start(&config.modbus, &outputs.devices);
    running.background.extend(poll_tasks);
    let encoder = config.line.encoder.as_ref().and_then(|name| {
        let point = points.get(name)?;
        let (tx, rx) = tokio::sync::watch::channel(None);
        running.background.push(tokio::spawn(encoder::follow(point.rx.clone(), point.ty, tx)));
        Some(rx)
    });
    let line_running = config.line.running.as_ref().and_then(|name| points.subscribe(name));
    let heartbeats = match (outputs.heartbeat(), &config.modbus.heartbeat) {
        (Some(reg), Some(hb)) => {
            let beats = Arc::new(AtomicU64::new(0));
            let alive = running.liveness.clone();
            running.background.push(tokio::spawn(heartbeat::run(reg.clone(), hb.period.get(), beats.clone(), alive)));
            Some(beats)
        }
        _ => None,
    };
    let reject_window = config.stack_light.ng_rate.as_ref().map(|n| Arc::new(RejectWindow::new(n.window)));
    LineIo { points, encoder, running: line_running, reject_window, heartbeats }
}

/// Every task, wired into its model's group; cameras are returned, not started.
fn build_tasks(
    wiring: &Wiring<'_>,
    groups: &mut BTreeMap<&str, Group>,
    opts: &mut Options,
    running: &mut Running,
) -> Result<Vec<(String, BuiltTask)>, StartError> {
    let config = wiring.config;
    let mut built = Vec::new();
    for (name, task) in &config.tasks {
        let group = groups.get_mut(task.model.as_str()).expect("every used model was loaded");
        let opener = opts.openers.remove(&task.camera);
        built.push((name.clone(), wiring.build(name, task, group, opener, running)?));
    }
    Ok(built)
}

type Split = (
    BTreeMap<String, crate::stats::TaskEntry>,
    Vec<supervisor::WatchedTask>,
    Vec<crate::camera::Camera>,
    Vec<(String, Gate)>,
    BTreeMap<String, reload::TaskHandles>,
);

fn split(built: Vec<(String, BuiltTask)>) -> Split {
    let mut entries = BTreeMap::new();
    let mut handles = BTreeMap::new();
    let (mut watched, mut cameras, mut gates) = (Vec::new(), Vec::new(), Vec::new());
    for (name, b) in built {
        if let Some(g) = b.gate {
            gates.push((name.clone(), g));
        }
        handles.insert(name.clone(), b.reload);
        entries.insert(name, b.entry);
        watched.push(b.watched);
        cameras.push(b.camera);
    }
    (entries, watched, cameras, gates, handles)
}

/// Per model, the kind its production session reports (a package must have the same).
fn model_kinds(config: &Config, stats: &NodeStats) -> BTreeMap<String, String> {
    config
        .tasks
        .iter()
        .filter_map(|(name, t)| {
            let kind = stats.tasks.get(name)?.model()["kind"].as_str()?.to_string();
            Some((t.model.clone(), kind))
        })
        .collect()
}

/// The one owner of the running config, for SIGHUP and the `reload` command.
fn reloader(
    file: &LoadedConfig,
    loaded: &LoadedConfig,
    overrides: BTreeMap<String, reload::ModelOverride>,
    tasks: BTreeMap<String, reload::TaskHandles>,
    groups: &BTreeMap<&str, Group>,
    env: &'static ort::environment::Environment,
    stats: &NodeStats,
) -> reload::Reloader {
    let models = groups
        .iter()
        .map(|(name, g)| (name.to_string(), reload::ModelHandles { swaps: g.swap_tx.clone(), threads: g.threads }))
        .collect();
    reload::Reloader::new(file, loaded, overrides, tasks, models, env, stats.reloads.clone())
}

/// The registry of every figure, now that every task exists.
fn node_stats(
    outputs: &Outputs,
    groups: &BTreeMap<&str, Group>,
    tasks: BTreeMap<String, crate::stats::TaskEntry>,
    heartbeats: Option<Arc<AtomicU64>>,
    sessions: &Sessions,
    machine: Arc<Machine>,
) -> Arc<NodeStats> {
    Arc::new(NodeStats {
        started: Instant::now(),
        tasks,
        models: groups.iter().map(|(k, g)| (k.to_string(), g.stats.clone())).collect(),
        devices: outputs.devices.iter().map(|(n, d)| (n.clone(), d.stats.clone())).collect(),
        faults: Arc::new(Faults::default()),
        heartbeats,
        mqtt_queue: sessions.queue_stats(),
        reloads: Default::default(),
        machine,
        rollout: Default::default(),
    })
}

/// Faults, the stack light and the safe state of plain outputs (not a gate, not a lamp).
fn start_supervisor(
    config: &Config,
    outputs: &Outputs,
    line: &LineIo,
    watched: Vec<supervisor::WatchedTask>,
    sessions: &Sessions,
    running: &mut Running,
) {
    let lamps: Vec<&str> = [
        config.stack_light.running.as_deref(),
        config.stack_light.fault.as_deref(),
        config.stack_light.ng_rate.as_ref().map(|n| n.output.as_str()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let is_gate = |n: &str| config.tasks.values().any(|t| t.reject.as_ref().is_some_and(|r| r.output == n));
    let plain_outputs = outputs.names().filter(|n| !lamps.contains(n) && !is_gate(n)).map(str::to_string).collect();
    let supervisor = Supervisor {
        lights: config.stack_light.clone(),
        outputs: outputs.clone(),
        tasks: watched,
        devices: running.stats.devices.clone(),
        queues: sessions.queues(),
        rejects: line.reject_window.clone().unwrap_or_else(|| Arc::new(RejectWindow::new(1))),
        faults: running.stats.faults.clone(),
        plain_outputs,
        telemetry: sessions.telemetry.clone(),
        fault_word: outputs.fault_word().cloned(),
        machine: running.stats.machine.clone(),
        health: config.health.clone(),
    };
    running.background.push(tokio::spawn(supervisor.run()));
}

/// Where both command doors send what they parsed, after the replay and rate checks (whose
/// memory of command ids lives in `runtime.state_dir`).
fn start_command_router(
    config: &Config,
    points: &Points,
    outputs: &Outputs,
    sessions: &Sessions,
    reloader: reload::Reloader,
    rollouts: Option<rollout::Rollouts>,
    running: &mut Running,
) -> crate::telemetry::commands::Commander {
    let (route, requests) = mpsc::channel(COMMAND_BUFFER);
    let router = commands::Router {
        points: points.clone(),
        outputs: outputs.clone(),
        reloader,
        rollouts,
        tasks: running.stats.tasks.iter().map(|(n, t)| (n.clone(), t.control.clone())).collect(),
        capture: running.capture.clone(),
    };
    running.background.push(tokio::spawn(router.run(requests)));
    let guard = crate::telemetry::guard::Guard::open(&config.runtime.state_dir);
    sessions.commander(route, Arc::new(guard))
}

/// Shadow mode's plumbing: a tap per model (where its worker offers frames to a candidate), the
/// matcher of production and candidate verdicts, and the comparator thread. Idle until a
/// candidate is shadowed.
pub struct Shadows {
    pub taps: BTreeMap<String, Arc<crate::inference::shadow::Tap>>,
    pub matcher: Arc<shadow::Matcher>,
    pub outputs: flume::Sender<crate::inference::shadow::ShadowOutput>,
}

/// Candidate outputs waiting for the comparator; a full channel holds the shadow's thread, never production.
const SHADOW_OUTPUTS: usize = 64;

impl Shadows {
    /// Disagreements go to the evidence capture of tasks that have one.
    fn start(
        groups: &BTreeMap<&str, Group>,
        tasks: BTreeMap<String, Arc<crate::stats::TaskStats>>,
        capture: Option<crate::capture::Capture>,
        config_hash: String,
    ) -> Result<Shadows, StartError> {
        let taps = groups
            .iter()
            .map(|(name, g)| (name.to_string(), Arc::new(crate::inference::shadow::Tap::new(g.stats.shadow.clone()))))
            .collect();
        let on_disagreement = Box::new(move |d: shadow::Disagreement| {
            tracing::debug!(task = %d.task, part = d.production.judgement.part.part_id, candidate = %d.candidate_label, "shadow disagreement");
            if let Some(cap) = capture.as_ref().filter(|c| c.keeps(&d.task, crate::capture::Reason::Disagreement)) {
                let task = d.task.clone();
                // A full writer queue drops and counts it (the capture figures say so).
                cap.offer(&task, capture::disagreement_record(d, &config_hash));
            }
        });
        let matcher = Arc::new(shadow::Matcher::new(tasks, on_disagreement));
        let (outputs, rx) = flume::bounded(SHADOW_OUTPUTS);
        // Not joined at the stop: it ends with the last candidate output, and the rollout owner
        // (alive as long as the command router) keeps a sender. It holds nothing that needs a
        // stop in order: no output, no file.
        drop(shadow::spawn_comparator(rx, matcher.clone()).map_err(thread_error)?);
        Ok(Shadows { taps, matcher, outputs })
    }
}

/// One inference worker thread per model.
fn start_workers(
    config: &Config,
    groups: BTreeMap<&str, Group>,
    taps: &BTreeMap<String, Arc<crate::inference::shadow::Tap>>,
    running: &mut Running,
) -> Result<(), StartError> {
    for (model_name, g) in groups {
        let cfg = &config.models[model_name];
        let worker = Worker {
            model: model_name.into(),
            loaded: g.loaded,
            swaps: g.swaps,
            members: g.members,
            batch: cfg.batch,
            batch_wait: cfg.batch_wait.get(),
            bell: g.bell,
            iou: 0.7,
            stats: g.stats,
            shadow: taps[model_name].clone(),
            busy: running
                .liveness
                .watch(format!("inference worker of model `{model_name}`"), stall_time(config, model_name)),
        };
        running.workers.push(worker.spawn().map_err(thread_error)?);
    }
    Ok(())
}

/// How long one inference call of `model` may run before the node counts as hung: twice the
/// longest inference timeout of its tasks (a frame older than that is judged ERROR anyway), and
/// never less than the supervisor's stall time.
fn stall_time(config: &Config, model: &str) -> Duration {
    let longest = config.tasks.values().filter(|t| t.model == model).map(|t| t.inference_timeout.get()).max();
    longest.map_or(supervisor::STALL_AFTER, |t| (t * 2).max(supervisor::STALL_AFTER))
}

/// Cameras last, so that no frame is captured before something can judge it.
fn start_cameras(cameras: Vec<crate::camera::Camera>, running: &mut Running) -> Result<(), StartError> {
    for camera in cameras {
        running.cameras.push(camera.spawn().map_err(thread_error)?);
    }
    Ok(())
}

fn thread_error(e: std::io::Error) -> StartError {
    StartError::Other(format!("cannot start a thread: {e}"))
}

/// The stats message, the machine health sampler and the systemd watchdog.
fn start_periodic(config: &Config, sessions: &Sessions, running: &mut Running) {
    if let Err(e) = running.stats.machine.start_sampler(crate::stats::machine::SAMPLE_EVERY) {
        tracing::warn!(error = %e, "machine health is not sampled: cannot start its thread");
    }
    if let (Some((m, _)), Some(cfg)) = (&sessions.mqtt, &config.mqtt) {
        let stats = publish::publish_stats(m.clone(), running.stats.clone(), cfg.stats_interval.get());
        running.background.push(tokio::spawn(stats));
    }
    if let Some(interval) = notify::watchdog_interval() {
        running.background.push(tokio::spawn(publish::feed_watchdog(running.liveness.clone(), interval)));
    }
}

impl Running {
    fn new(outputs: Outputs) -> Running {
        Running {
            stats: Arc::new(NodeStats {
                started: Instant::now(),
                tasks: BTreeMap::new(),
                devices: BTreeMap::new(),
                faults: Arc::new(Faults::default()),
                heartbeats: None,
                mqtt_queue: None,
                models: BTreeMap::new(),
                reloads: Default::default(),
                machine: Arc::new(Machine::new(Default::default(), Vec::new())),
                rollout: Default::default(),
            }),
            stop: Arc::new(AtomicBool::new(false)),
            liveness: Arc::new(Liveness::default()),
            marker: None,
            cameras: Vec::new(),
            workers: Vec::new(),
            controllers: Vec::new(),
            results: None,
            gates: Vec::new(),
            outputs,
            mqtt: None,
            sparkplug: None,
            background: Vec::new(),
            triggers: Vec::new(),
            capture: None,
            reloader: None,
            http_addr: None,
            rollouts: None,
        }
    }

    /// Applies a changed config file while the line runs.
    pub fn reloader(&self) -> reload::Reloader {
        self.reloader.clone().expect("set by start")
    }
}
