//! The one registry of every figure of the node. Built once by `app` at
//! start; the stats message, Sparkplug metrics, the supervisor and the demo's
//! status line are all views of it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use serde_json::Value;

use super::{CameraStats, DeviceStats, Faults, HandshakeStats, Machine, ModelStats, QueueStats, TaskStats};
use crate::part::control::TaskControl;

/// What the node reports about one task.
pub struct TaskEntry {
    pub camera: String,
    pub camera_stats: Arc<CameraStats>,
    pub stats: Arc<TaskStats>,
    pub provider: String,
    /// The task's model as the stats report it; replaced by a reload that changes the model.
    pub model: Arc<RwLock<Value>>,
    pub handshake: Option<Arc<HandshakeStats>>,
    /// Enabled and threshold, as commands set them.
    pub control: Arc<TaskControl>,
    /// Announcements that waited for room in the controller's queue (`part::announce`).
    pub events_waited: Arc<AtomicU64>,
    /// Evidence capture, when the task has `capture` configured.
    pub capture: Option<Arc<super::CaptureStats>>,
}

impl TaskEntry {
    pub fn model(&self) -> Value {
        self.model.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Config reloads: how many were applied and refused, and the last one's outcome.
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// The config generation parts are stamped with now: 0 at start, one more per applied reload.
    pub generation: AtomicU64,
    pub applied: AtomicU64,
    pub refused: AtomicU64,
    /// `{"at", "result": "applied" | "refused" | "unchanged", "source", "changes" | "problems"}`.
    pub last: Mutex<Option<Value>>,
}

impl ReloadStats {
    pub fn doc(&self) -> Value {
        serde_json::json!({
            "generation": self.generation.load(Ordering::Relaxed),
            "applied": self.applied.load(Ordering::Relaxed),
            "refused": self.refused.load(Ordering::Relaxed),
            "last": self.last.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        })
    }
}

/// Every figure of the node.
pub struct NodeStats {
    pub started: Instant,
    pub tasks: BTreeMap<String, TaskEntry>,
    /// Per Modbus device: its link state and counters.
    pub devices: BTreeMap<String, Arc<DeviceStats>>,
    pub faults: Arc<Faults>,
    /// Heartbeat writes acknowledged, when a heartbeat is configured.
    pub heartbeats: Option<Arc<AtomicU64>>,
    /// The MQTT disk queue, when MQTT is configured.
    pub mqtt_queue: Option<Arc<QueueStats>>,
    /// Per model: its inference calls and the frames they held.
    pub models: BTreeMap<String, Arc<ModelStats>>,
    /// Config reloads.
    pub reloads: Arc<ReloadStats>,
    /// Machine health (CPU, memory, disk, temperatures, GPU), sampled every few seconds.
    pub machine: Arc<Machine>,
    /// Per model, its rollout state (active version, installed, shadow, last event), when
    /// `rollout` is configured; set once at start.
    pub rollout: std::sync::OnceLock<Arc<Mutex<BTreeMap<String, Value>>>>,
}

impl NodeStats {
    /// The rollout state of every model (empty without `rollout`).
    pub fn rollout_doc(&self) -> Value {
        match self.rollout.get() {
            Some(d) => serde_json::to_value(&*d.lock().unwrap_or_else(|p| p.into_inner())).unwrap_or(Value::Null),
            None => Value::Null,
        }
    }
}
