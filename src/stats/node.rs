//! The one registry of every figure of the node. Built once by `app` at
//! start; the stats message, Sparkplug metrics, the supervisor and the demo's
//! status line are all views of it.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::{CameraStats, DeviceStats, Faults, HandshakeStats, ModelStats, QueueStats, TaskStats};
use crate::part::control::TaskControl;

/// What the node reports about one task.
pub struct TaskEntry {
    pub camera: String,
    pub camera_stats: Arc<CameraStats>,
    pub stats: Arc<TaskStats>,
    pub provider: String,
    pub model: Value,
    pub handshake: Option<Arc<HandshakeStats>>,
    /// Enabled and threshold, as commands set them.
    pub control: Arc<TaskControl>,
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
}
