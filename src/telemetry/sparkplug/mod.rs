//! Sparkplug B 3.0 edge node: how SCADA hosts (Ignition and the like) find
//! and read linesight.
//!
//! # Layout
//! - [`proto`]: the payload's protobuf messages.
//! - [`metrics`]: which metrics the node and its devices have, and their values.
//! - [`bdseq`]: the birth/death sequence number, kept across restarts.
//! - [`node`]: the session task: connect (one broker at a time, failover in
//!   order), wait for the primary host, births, report by exception, deaths,
//!   rebirth, commands.
//!
//! The node is `spBv1.0/<group_id>/…/<node_id>`. Its devices are the tasks
//! (camera + model; dead while the camera is offline) and the Modbus devices
//! (dead while the link is down). Part results and alarm changes are NDATA
//! that go through the disk queue (`<mqtt.queue.dir>/sparkplug`) and are
//! replayed with `is_historical`; the other metrics are reported by
//! exception, live. The metric list is in docs/mqtt.md.

pub mod bdseq;
pub mod metrics;
pub mod node;
pub mod proto;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value as Json;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::config::NodeIdentity;
use metrics::Metric;

/// Topic names of one edge node.
#[derive(Debug, Clone)]
pub struct Topics {
    pub group: String,
    pub node: String,
}

impl Topics {
    pub fn new(node: &NodeIdentity) -> Self {
        Topics { group: node.group_id.clone(), node: node.node_id.clone() }
    }
    fn node_topic(&self, kind: &str) -> String {
        format!("spBv1.0/{}/{kind}/{}", self.group, self.node)
    }
    fn device_topic(&self, kind: &str, device: &str) -> String {
        format!("spBv1.0/{}/{kind}/{}/{device}", self.group, self.node)
    }
    pub fn nbirth(&self) -> String {
        self.node_topic("NBIRTH")
    }
    pub fn ndata(&self) -> String {
        self.node_topic("NDATA")
    }
    pub fn ndeath(&self) -> String {
        self.node_topic("NDEATH")
    }
    pub fn ncmd(&self) -> String {
        self.node_topic("NCMD")
    }
    pub fn dbirth(&self, device: &str) -> String {
        self.device_topic("DBIRTH", device)
    }
    pub fn ddata(&self, device: &str) -> String {
        self.device_topic("DDATA", device)
    }
    pub fn ddeath(&self, device: &str) -> String {
        self.device_topic("DDEATH", device)
    }
    /// Every device's commands.
    pub fn dcmd_all(&self) -> String {
        self.device_topic("DCMD", "+")
    }
    /// The device a DCMD topic is for, if it is one of ours.
    pub fn dcmd_device<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic.strip_prefix(&format!("spBv1.0/{}/DCMD/{}/", self.group, self.node)).filter(|d| !d.contains('/'))
    }
    pub fn state(host: &str) -> String {
        format!("spBv1.0/STATE/{host}")
    }
    /// Never subscribed: its UNSUBSCRIBE is the disk queue's acknowledgement barrier.
    pub fn barrier(&self) -> String {
        format!("linesight/barrier/{}/{}", self.group, self.node)
    }
}

/// Commands received through NCMD/DCMD, for the node's metrics.
#[derive(Debug, Default)]
pub struct CommandCounts {
    pub executed: AtomicU64,
    pub refused: AtomicU64,
    pub last_refusal: Mutex<String>,
}

impl CommandCounts {
    pub fn last_refusal(&self) -> String {
        self.last_refusal.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn refuse(&self, why: String) {
        self.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self.last_refusal.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }
}

enum Msg {
    /// Node metrics that must not be lost: through the disk queue as NDATA.
    Data(Vec<Metric>),
    Stop(oneshot::Sender<()>),
}

/// Cheap to clone; hands results and alarms to the session without blocking.
#[derive(Clone)]
pub struct Sparkplug {
    tx: mpsc::Sender<Msg>,
    pub rebirth: Arc<Notify>,
}

/// The receiving end, until the session is started with everything it reports on.
pub struct Pending {
    rx: mpsc::Receiver<Msg>,
    rebirth: Arc<Notify>,
}

const BUFFER: usize = 8192;

impl Sparkplug {
    /// The handle now (the pipeline needs it while being built), the session later ([`Pending::start`]).
    pub fn channel() -> (Sparkplug, Pending) {
        let (tx, rx) = mpsc::channel(BUFFER);
        let rebirth = Arc::new(Notify::new());
        (Sparkplug { tx, rebirth: rebirth.clone() }, Pending { rx, rebirth })
    }

    /// One part's result. False when the buffer is full (the caller counts it).
    pub fn result(&self, task: &str, doc: &Json) -> bool {
        self.tx.try_send(Msg::Data(metrics::result(task, doc))).is_ok()
    }

    /// The alarm list changed.
    pub fn alarms(&self, doc: &Json) -> bool {
        self.tx.try_send(Msg::Data(metrics::alarms(doc))).is_ok()
    }

    /// Publish NDEATH after the queue drained (bounded), then disconnect.
    pub async fn stop(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Stop(done)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(6), rx).await;
        }
    }
}
