//! One task, wired: its figures, its reject gate and result block, its
//! controller (which judges), its place in its model's worker, its trigger,
//! and its camera (returned, started last).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::models::{rule_for, unusable_rule, Group, ModelInfo};
use super::reload::{gate_at, TaskHandles};
use super::supervisor::WatchedTask;
use super::{Running, StartError};
use crate::camera::{Camera, Opener};
use crate::config::{CameraMode, Config, RejectConfig, TaskConfig};
use crate::decision::controller::{Controller, RejectPlan, ResultBlock, TaskSettings};
use crate::decision::reject::{Gate, GateSettings};
use crate::inference::Member;
use crate::line::trigger;
use crate::modbus::handshake;
use crate::modbus::points::Points;
use crate::modbus::Outputs;
use crate::part::announce::{Announcer, EVENTS_BUFFER};
use crate::part::control::{CommandLimits, TaskControl, Versions};
use crate::part::queue::FrameQueue;
use crate::part::sample::{Position, Sample};
use crate::part::{PartResult, Waiting};
use crate::stats::{CameraStats, HandshakeStats, RejectWindow, TaskEntry, TaskStats};

/// The line I/O tasks share: points, and the encoder and line-running signals derived from them.
pub struct LineIo {
    pub points: Points,
    pub encoder: Option<watch::Receiver<Option<Position>>>,
    pub running: Option<watch::Receiver<Sample>>,
    pub reject_window: Option<Arc<RejectWindow>>,
    /// Heartbeat writes acknowledged, when a heartbeat is configured.
    pub heartbeats: Option<Arc<AtomicU64>>,
}

/// What building a task leaves behind for the rest of the start.
pub struct BuiltTask {
    pub entry: TaskEntry,
    pub watched: WatchedTask,
    pub camera: Camera,
    /// The task's reject gate, for the purge after an unclean stop.
    pub gate: Option<Gate>,
    /// What a reload may change.
    pub reload: TaskHandles,
}

/// Verdicts on their way to a result block's task, which takes them at once (its own `buffer`
/// holds those the PLC has not read); only a stuck task fills this, and then they count as lost.
const HANDSHAKE_BUFFER: usize = 1024;

/// Everything a task needs from the rest of the node.
pub struct Wiring<'a> {
    pub config: &'a Config,
    pub outputs: &'a Outputs,
    pub line: &'a LineIo,
    pub results: mpsc::Sender<PartResult>,
    pub stop: Arc<std::sync::atomic::AtomicBool>,
    /// The operator page's view of judged parts, when `http` is configured.
    pub views: Option<Arc<crate::part::view::Views>>,
    /// Evidence capture, when a task has it.
    pub capture: Option<crate::capture::Capture>,
    /// Each capturing task's capture figures.
    pub capture_stats: BTreeMap<String, Arc<crate::stats::CaptureStats>>,
    /// The config's hash, for capture sidecars.
    pub config_hash: Arc<str>,
}

impl Wiring<'_> {
    /// Build one task into its model's group; the camera is returned, not started.
    pub fn build(
        &self,
        name: &str,
        task: &TaskConfig,
        group: &mut Group,
        opener: Option<Opener>,
        running: &mut Running,
    ) -> Result<BuiltTask, StartError> {
        let cam_cfg = &self.config.cameras[&task.camera];
        let model_cfg = &self.config.models[&task.model];
        let (rule, info) = match &group.loaded {
            Ok(loaded) => rule_for(loaded, &task.rules, &model_cfg.path, &model_cfg.ok_classes)
                .map_err(|e| StartError::Model(format!("task `{name}`: {e}")))?,
            Err(_) => unusable_rule(&model_cfg.path),
        };
        let provider = group.loaded.as_ref().map_or("none", |l| l.provider());
        let limits = CommandLimits::for_task(&task.commands, info.threshold);
        tracing::info!(
            task = %name, model = %info.name, version = %info.version, kind = info.kind,
            provider, ng_threshold = %format!("{:.3}", info.threshold),
            command_thresholds = %format!("{}..{}", limits.threshold.0, limits.threshold.1),
            command_disable = limits.allow_disable, "task ready"
        );
        let stats = Arc::new(TaskStats::default());
        let cam_stats = Arc::new(CameraStats::default());
        let task_progress = Arc::new(AtomicU64::new(0));
        let control = Arc::new(TaskControl::new(name, info.threshold, limits));
        let handshake_stats = task.handshake.as_ref().map(|_| Arc::new(HandshakeStats::default()));
        let reject = match &task.reject {
            Some(r) => Some(self.reject_plan(r, &stats, running)?),
            None => None,
        };
        let gate = reject.as_ref().map(|plan| plan.gate.clone());
        let handshake = self.handshake(task, handshake_stats.clone(), running)?;
        // Waiting longer than the stall time for room in the controller's queue is a hung node.
        let busy = running.liveness.watch(format!("controller of task `{name}`"), super::supervisor::STALL_AFTER * 2);
        let (events_tx, events_rx) = Announcer::channel(EVENTS_BUFFER, busy);
        let task_arc: Arc<str> = name.into();
        let floor = Arc::new(Versions::new(rule.score_floor()));
        let settings = Arc::new(Versions::new(TaskSettings {
            rule,
            classes: info.classes.clone().into(),
            model_label: info.label().into(),
            uncertain: task.rules.uncertain.as_ref().map(|u| u.action).unwrap_or_default(),
            gate_at: gate_at(task.reject.as_ref()),
        }));
        let model_doc = Arc::new(RwLock::new(model_doc(&info)));
        let keeper = self.keeper(name, task, group, &model_doc);
        let controller = Controller {
            task: task_arc.clone(),
            settings: settings.clone(),
            inference_timeout: task.inference_timeout.get(),
            part_per_frame: cam_cfg.mode != CameraMode::FreeRunning,
            reject,
            results: self.results.clone(),
            stats: stats.clone(),
            handshake,
            reject_window: self.line.reject_window.clone(),
            views: self.views.clone(),
            keeper,
        };
        running.controllers.push(tokio::spawn(controller.run(events_rx)));
        let queue = Arc::new(FrameQueue::with_doorbell(cam_cfg.queue, group.bell.clone()));
        group.members.push(Member {
            task: task_arc,
            floor: floor.clone(),
            queue: queue.clone(),
            events: events_tx.clone(),
            max_age: task.inference_timeout.get(),
            task_progress: task_progress.clone(),
            control: control.clone(),
            views: self.views.clone(),
        });
        let waiting = self.trigger(task, &events_tx, &stats, &control, running)?;
        let watched = WatchedTask {
            name: name.to_string(),
            camera: task.camera.clone(),
            camera_stats: cam_stats.clone(),
            queue: queue.clone(),
            progress: task_progress,
            stats: stats.clone(),
            unusable: group.loaded.as_ref().err().cloned(),
        };
        let (reconfigure_tx, reconfigure_rx) = std::sync::mpsc::channel();
        let fit = group.loaded.as_ref().ok().and_then(|m| m.fit());
        let camera = Camera {
            name: task.camera.as_str().into(),
            config: cam_cfg.clone(),
            queue,
            stats: cam_stats.clone(),
            events: events_tx.clone(),
            stop: self.stop.clone(),
            opener: opener.unwrap_or_else(|| Camera::opener_for(&cam_cfg.source, cam_cfg.timeout.get())),
            waiting,
            max_age: task.inference_timeout.get(),
            control: control.clone(),
            reconfigure: reconfigure_rx,
            fit,
        };
        let entry = TaskEntry {
            camera: task.camera.clone(),
            camera_stats: cam_stats,
            stats,
            provider: provider.to_string(),
            handshake: handshake_stats,
            control: control.clone(),
            model: model_doc.clone(),
            events_waited: events_tx.waited_counter(),
            capture: self.capture_stats.get(name).cloned(),
        };
        let reload = TaskHandles { control, settings, floor, model_doc, camera: reconfigure_tx, fit };
        Ok(BuiltTask { entry, watched, camera, gate, reload })
    }

    /// The task's way into evidence capture, when it has `capture`.
    fn keeper(
        &self,
        name: &str,
        task: &TaskConfig,
        group: &Group,
        model_doc: &Arc<RwLock<serde_json::Value>>,
    ) -> Option<Arc<dyn crate::part::view::Keeper>> {
        let capture = self.capture.clone().filter(|c| c.has(name))?;
        let model_cfg = &self.config.models[&task.model];
        let ok_classes = group
            .loaded
            .as_ref()
            .ok()
            .and_then(|l| l.class_contract(&model_cfg.ok_classes))
            .and_then(Result::ok)
            .map(|(names, ok, _)| names.into_iter().zip(ok).filter(|(_, ok)| *ok).map(|(n, _)| n).collect())
            .unwrap_or_default();
        Some(Arc::new(super::capture::TaskKeeper {
            capture,
            task: name.to_string(),
            model_doc: model_doc.clone(),
            ok_classes,
            uncertain_from: task.rules.uncertain.as_ref().map(|u| u.from),
            config_hash: self.config_hash.clone(),
        }))
    }

    /// The task's reject gate, started, and where it sits downstream.
    fn reject_plan(
        &self,
        r: &RejectConfig,
        stats: &Arc<TaskStats>,
        running: &mut Running,
    ) -> Result<RejectPlan, StartError> {
        let handle = self
            .outputs
            .get(&r.output)
            .ok_or_else(|| StartError::Other(format!("output `{}` has no device task", r.output)))?
            .clone();
        let settings = GateSettings {
            pulse: r.pulse.get(),
            on_deadline_miss: r.on_deadline_miss,
            precise: true,
            encoder: self.line.encoder.clone(),
            running: self.line.running.clone(),
            confirm: r.confirm.as_ref().and_then(|c| Some((self.line.points.subscribe(&c.point)?, c.within.get()))),
        };
        let (gate, gate_task) = Gate::start(Arc::new(handle), settings, stats.clone());
        running.gates.push(gate_task);
        Ok(RejectPlan { gate, output: r.output.clone(), encoder: self.line.encoder.clone() })
    }

    /// The result block the PLC reads this task's verdicts from, if it has one.
    fn handshake(
        &self,
        task: &TaskConfig,
        stats: Option<Arc<HandshakeStats>>,
        running: &mut Running,
    ) -> Result<Option<ResultBlock>, StartError> {
        let (Some(block), Some(hs)) = (&task.handshake, stats) else { return Ok(None) };
        let (Some(reg), Some(cfg)) = (self.outputs.result_block(block), self.config.modbus.result_blocks.get(block))
        else {
            return Err(StartError::Other(format!("result block `{block}` has no device")));
        };
        let (tx, rx) = mpsc::channel(HANDSHAKE_BUFFER);
        running.gates.push(tokio::spawn(handshake::run(
            reg.clone(),
            cfg.ack_poll.get(),
            cfg.buffer,
            rx,
            hs.clone(),
            Duration::from_secs(1),
        )));
        Ok(Some((tx, hs)))
    }

    /// Triggered tasks: the task that turns the trigger point's edges into parts.
    fn trigger(
        &self,
        task: &TaskConfig,
        events: &Announcer,
        stats: &Arc<TaskStats>,
        control: &Arc<TaskControl>,
        running: &mut Running,
    ) -> Result<Option<Waiting>, StartError> {
        let Some(t) = &task.trigger else { return Ok(None) };
        let waiting: Waiting = Default::default();
        let point = self
            .line
            .points
            .get(&t.point)
            .ok_or_else(|| StartError::Other(format!("trigger point `{}` missing", t.point)))?;
        let detector = trigger::Detector::new(t.on, point.ty);
        let encoder_ty = self.config.line.encoder.as_ref().and_then(|e| self.line.points.get(e)).map(|p| p.ty);
        let inputs = trigger::LineInputs {
            poll: point.config.poll.get(),
            encoder: self.line.encoder.clone().zip(encoder_ty),
            latch: t.latch.as_ref().and_then(|l| self.line.points.subscribe(l)),
        };
        running.triggers.push(tokio::spawn(trigger::run(
            task.camera.as_str().into(),
            point.rx.clone(),
            detector,
            inputs,
            waiting.clone(),
            events.clone(),
            stats.clone(),
            control.clone(),
        )));
        Ok(Some(waiting))
    }
}

/// The task's model as the stats message reports it.
pub fn model_doc(info: &ModelInfo) -> serde_json::Value {
    json!({
        "name": info.name,
        "version": info.version,
        "kind": info.kind,
        "sha256": info.sha256,
        "providers": info.providers,
    })
}

/// Every task's figures, by name (the results forwarder, the shadow matcher, the rollout).
pub fn task_stats(entries: &BTreeMap<String, TaskEntry>) -> BTreeMap<String, Arc<TaskStats>> {
    entries.iter().map(|(n, e)| (n.clone(), e.stats.clone())).collect()
}
