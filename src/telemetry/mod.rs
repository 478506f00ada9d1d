//! Telemetry: how the node's results, figures and alarms reach MQTT, and
//! how commands come back. It reads the pipeline's vocabulary ([`crate::part`])
//! and figures ([`crate::stats`]); nothing below it imports it, and it
//! imports neither modbus nor decision: commands leave as typed values that
//! `app` routes.
//!
//! - [`json`]: the plain JSON documents (results, stats).
//! - [`mqtt`]: the plain JSON session (topics in docs/mqtt.md).
//! - [`sparkplug`]: the Sparkplug B edge node session.
//! - [`connection`]: what both sessions share: brokers, TLS, refusal reasons.
//! - [`durable`]: store-and-forward through the disk queue ([`crate::store`]).
//! - [`commands`]: the remote command set, and the JSON door to it.
//! - [`guard`]: what every command passes first: not stale, not a replay, not a flood.
//! - [`cameras`], [`points`]: retained camera status and point values.

pub mod cameras;
pub mod commands;
pub mod connection;
pub mod durable;
pub mod guard;
pub mod json;
pub mod mqtt;
pub mod points;
pub mod sparkplug;

use rumqttc::QoS;
use serde_json::Value;

use crate::part::PartResult;

/// Where results and alarms go: either dialect, or both. Cheap to clone.
#[derive(Clone, Default)]
pub struct Telemetry {
    pub json: Option<mqtt::Mqtt>,
    pub sparkplug: Option<sparkplug::Sparkplug>,
}

impl Telemetry {
    /// One part's result, through the disk queue where configured. Returns
    /// its document (for in-process observers) and false when a dialect's
    /// buffer was full (the caller counts it).
    pub fn result(&self, result: &PartResult) -> (Value, bool) {
        let doc = json::result_doc(result);
        let task = &*result.task;
        let mut ok = true;
        if let Some(m) = &self.json {
            ok &= m.publish_durable(m.topics.result(task), serde_json::to_vec(&doc).unwrap_or_default(), false);
        }
        if let Some(sp) = &self.sparkplug {
            ok &= sp.result(task, &doc);
        }
        (doc, ok)
    }

    /// A task's life: `warming` while its model loads (a TensorRT engine build can take
    /// minutes), then `inspecting`. Retained, so a dashboard that connects later knows.
    pub fn task_state(&self, task: &str, doc: &Value) {
        if let Some(m) = &self.json {
            m.publish(m.topics.task_state(task), serde_json::to_vec(doc).unwrap_or_default(), QoS::AtLeastOnce, true);
        }
    }

    /// The alarm list changed. JSON: retained (a dashboard that connects
    /// later sees the state) and through the disk queue; Sparkplug: NDATA
    /// through its queue.
    pub fn alarms(&self, doc: &Value) {
        if let Some(m) = &self.json {
            m.publish_durable(m.topics.alarms(), serde_json::to_vec(doc).unwrap_or_default(), true);
        }
        if let Some(sp) = &self.sparkplug {
            sp.alarms(doc);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.json.is_none() && self.sparkplug.is_none()
    }
}
