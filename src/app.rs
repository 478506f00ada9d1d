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

use crate::camera::queue::FrameQueue;
use crate::camera::{Camera, CameraStats, Opener};
use crate::config::{CameraMode, Config};
use crate::decision::controller::{Controller, RejectPlan};
use crate::decision::reject::Gate;
use crate::decision::rules::ClassifierRule;
use crate::inference::classifier::Classifier;
use crate::inference::{runtime, Worker};
use crate::modbus::Outputs;
use crate::service::notify;
use crate::telemetry::mqtt::Mqtt;
use crate::telemetry::stats::TaskStats;
use crate::telemetry::{NodeStats, TaskEntry};

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
    background: Vec<JoinHandle<()>>,
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

    let mqtt = config.mqtt.as_ref().map(|m| Mqtt::start(m, &config.node));
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let mut running = Running {
        stats: Arc::new(NodeStats {
            started: Instant::now(),
            tasks: BTreeMap::new(),
            devices: outputs.devices.clone(),
        }),
        stop: stop.clone(),
        cameras: Vec::new(),
        workers: Vec::new(),
        controllers: Vec::new(),
        gates: Vec::new(),
        outputs: outputs.clone(),
        mqtt: None,
        background: Vec::new(),
    };
    let mut entries = BTreeMap::new();
    let mut to_start = Vec::new();
    for (task_name, task) in &config.tasks {
        let cam_cfg = &config.cameras[&task.camera];
        let model_cfg = &config.models[&task.model];
        let model_cfg_owned = model_cfg.clone();
        let mut model = tokio::task::spawn_blocking(move || Classifier::load(env, &model_cfg_owned, threads))
            .await
            .map_err(|e| StartError::Other(e.to_string()))?
            .map_err(|e| StartError::Model(format!("task `{task_name}`: {e}")))?;
        let warm = warm_up(&mut model).map_err(|e| {
            StartError::Model(format!(
                "task `{task_name}`: model `{}` fails on a blank frame: {e}",
                model_cfg.path.display()
            ))
        })?;
        let threshold = task.rules.ng_threshold.map(|t| t as f32).or(model.contract.ng_threshold).unwrap_or(0.5);
        tracing::info!(
            task = %task_name, model = %model.contract.name, version = %model.contract.version,
            provider = model.provider, ng_threshold = %format!("{threshold:.3}"), warm_up_ms = %format!("{warm:.1}"), "model loaded"
        );
        let stats = Arc::new(TaskStats::default());
        let cam_stats = Arc::new(CameraStats::default());
        entries.insert(
            task_name.clone(),
            TaskEntry {
                camera: task.camera.clone(),
                camera_stats: cam_stats.clone(),
                stats: stats.clone(),
                provider: model.provider.to_string(),
                model: json!({
                    "name": model.contract.name,
                    "version": model.contract.version,
                    "sha256": model.sha256,
                    "providers": model.providers,
                }),
            },
        );
        let reject = match &task.reject {
            Some(r) => {
                let handle = outputs
                    .get(&r.output)
                    .ok_or_else(|| StartError::Other(format!("output `{}` has no device task", r.output)))?
                    .clone();
                let (gate, gate_task) = Gate::start(handle);
                running.gates.push(gate_task);
                Some(RejectPlan { gate, output: r.output.clone(), delay: r.delay.get(), pulse: r.pulse.get() })
            }
            None => None,
        };
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let task_arc: Arc<str> = task_name.as_str().into();
        let controller = Controller {
            task: task_arc.clone(),
            classes: model.contract.classes.clone().into(),
            inference_timeout: task.inference_timeout.get(),
            part_per_frame: cam_cfg.mode == CameraMode::PartPerFrame,
            reject,
            mqtt: mqtt.as_ref().map(|(m, _)| m.clone()),
            stats: stats.clone(),
            model_label: format!("{}@{}", model.contract.name, model.contract.version),
            observer: opts.observer.clone(),
        };
        running.controllers.push(tokio::spawn(controller.run(events_rx)));
        let queue = Arc::new(FrameQueue::new(cam_cfg.queue));
        let rule = ClassifierRule { ok: model.ok_mask().to_vec(), ng_threshold: threshold };
        let worker = Worker {
            task: task_arc,
            model,
            rule,
            queue: queue.clone(),
            events: events_tx.clone(),
            max_age: task.inference_timeout.get(),
            progress: progress.clone(),
        };
        let opener = opts.openers.remove(&task.camera).unwrap_or_else(|| Camera::opener_for(&cam_cfg.source));
        let camera = Camera {
            name: task.camera.as_str().into(),
            config: cam_cfg.clone(),
            queue,
            stats: cam_stats,
            events: events_tx,
            stop: stop.clone(),
            opener,
        };
        to_start.push((worker, camera));
    }
    running.stats = Arc::new(NodeStats { started: Instant::now(), tasks: entries, devices: outputs.devices.clone() });
    for (worker, camera) in to_start {
        running.workers.push(worker.spawn().map_err(|e| StartError::Other(format!("cannot start a thread: {e}")))?);
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

/// One inference on a blank frame, so the first part is not slowed by lazy
/// initialisation, and so a model that cannot run is found before READY.
fn warm_up(model: &mut Classifier) -> Result<f64, String> {
    let spec = &model.contract.input;
    let blank = Mat::new_rows_cols_with_default(spec.height as i32, spec.width as i32, CV_8UC3, Scalar::all(128.0))
        .map_err(|e| e.message.clone())?;
    let t = Instant::now();
    model.classify(&blank)?;
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
        if let Some((m, task)) = self.mqtt.take() {
            let payload = serde_json::to_vec(&final_stats).unwrap_or_default();
            m.publish(m.topics.stats(), payload, QoS::AtLeastOnce, false);
            m.stop().await;
            drop(m);
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
        final_stats
    }
}
