//! Telemetry: figures the pipeline keeps, and how they reach MQTT.
//!
//! - [`stats`]: counters and latency windows.
//! - [`mqtt`]: the plain JSON session (topics in docs/mqtt.md).
//! - [`sparkplug`]: the Sparkplug B edge node session.
//! - [`connection`]: what both sessions share: brokers, TLS, backoff, refusal reasons.
//! - [`durable`]: store-and-forward through the disk queue ([`crate::store`]).
//! - [`commands`]: the remote command set, and the JSON door to it.
//! - [`cameras`]: retained camera status messages.
//!
//! [`NodeStats`] is the one registry of every figure; the stats message and
//! the demo's status line are both views of it.

pub mod cameras;
pub mod commands;
pub mod connection;
pub mod durable;
pub mod mqtt;
pub mod points;
pub mod sparkplug;
pub mod stats;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rumqttc::QoS;
use serde_json::{json, Value};

use crate::camera::CameraStats;
use crate::decision::control::TaskControl;
use crate::line::health::Faults;
use crate::modbus::handshake::HandshakeStats;
use crate::modbus::Device;
use stats::TaskStats;

/// What telemetry knows about one task.
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

/// Where results and alarms go: either dialect, or both. Cheap to clone.
#[derive(Clone, Default)]
pub struct Telemetry {
    pub json: Option<mqtt::Mqtt>,
    pub sparkplug: Option<sparkplug::Sparkplug>,
}

impl Telemetry {
    /// One part's result, through the disk queue where configured. False
    /// when a dialect's buffer was full (the caller counts it).
    pub fn result(&self, task: &str, doc: &Value) -> bool {
        let mut ok = true;
        if let Some(m) = &self.json {
            ok &= m.publish_durable(m.topics.result(task), serde_json::to_vec(doc).unwrap_or_default(), false);
        }
        if let Some(sp) = &self.sparkplug {
            ok &= sp.result(task, doc);
        }
        ok
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

/// Every figure of the node.
pub struct NodeStats {
    pub started: Instant,
    pub tasks: BTreeMap<String, TaskEntry>,
    pub devices: BTreeMap<String, Device>,
    pub faults: Arc<Faults>,
    /// Heartbeat writes acknowledged, when a heartbeat is configured.
    pub heartbeats: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// The MQTT disk queue, when MQTT is configured.
    pub mqtt_queue: Option<Arc<mqtt::QueueStats>>,
    /// Per model: its inference calls and the frames they held.
    pub models: BTreeMap<String, Arc<ModelStats>>,
}

/// What one model's inference worker did.
#[derive(Debug, Default)]
pub struct ModelStats {
    /// Inference calls (batches).
    pub calls: AtomicU64,
    /// Frames judged in them.
    pub frames: AtomicU64,
    /// The most frames one call held.
    pub largest_batch: AtomicU64,
    pub provider: std::sync::OnceLock<&'static str>,
    pub threads: AtomicU64,
}

impl ModelStats {
    pub fn to_json(&self) -> Value {
        let calls = self.calls.load(Ordering::Relaxed);
        let frames = self.frames.load(Ordering::Relaxed);
        json!({
            "calls": calls,
            "frames": frames,
            "mean_batch": if calls == 0 { 0.0 } else { (frames as f64 / calls as f64 * 100.0).round() / 100.0 },
            "largest_batch": self.largest_batch.load(Ordering::Relaxed),
            "provider": self.provider.get(),
            "threads": self.threads.load(Ordering::Relaxed),
        })
    }
}

impl NodeStats {
    /// The stats message.
    pub fn to_json(&self, last: bool) -> Value {
        let tasks: serde_json::Map<String, Value> = self
            .tasks
            .iter()
            .map(|(name, t)| {
                let s = &t.stats;
                let c = &t.camera_stats;
                let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
                let handshake = t.handshake.as_ref().map(|h| {
                    json!({
                        "written": get(&h.written),
                        "acknowledged": get(&h.acknowledged),
                        "lost": get(&h.lost),
                        "write_failures": get(&h.write_failures),
                    })
                });
                (
                    name.clone(),
                    json!({
                        "triggers": get(&s.triggers),
                        "deadline_misses": get(&s.deadline_misses),
                        "confirm_missing": get(&s.confirm_missing),
                        "handshake": handshake,
                        "camera": t.camera,
                        "camera_status": c.status().as_str(),
                        "frames_in": get(&c.frames_in),
                        "processed": get(&s.processed),
                        "dropped": get(&c.dropped),
                        "refused": get(&c.refused),
                        "camera_reconnects": get(&c.reconnects),
                        "ok": get(&s.ok),
                        "ng": get(&s.ng),
                        "error": get(&s.error),
                        "uncertain": get(&s.uncertain),
                        "flagged": get(&s.flagged),
                        "late_verdicts": get(&s.late_verdicts),
                        "rejects_fired": get(&s.rejects_fired),
                        "rejects_failed": get(&s.rejects_failed),
                        "telemetry_dropped": get(&s.telemetry_dropped),
                        "inference_ms": s.inference_ms.percentiles(),
                        "capture_to_decision_ms": s.capture_to_decision_ms.percentiles(),
                        "capture_to_reject_ack_ms": s.capture_to_reject_ack_ms.percentiles(),
                        "provider": t.provider,
                        "model": t.model,
                        "enabled": t.control.enabled(),
                        "ng_threshold": (f64::from(t.control.threshold()) * 1e4).round() / 1e4,
                    }),
                )
            })
            .collect();
        let devices: serde_json::Map<String, Value> = self
            .devices
            .iter()
            .map(|(name, d)| {
                let s = &d.stats;
                (
                    name.clone(),
                    json!({
                        "state": s.state(),
                        "connected": s.connected.load(Ordering::Relaxed),
                        "reads": s.reads.load(Ordering::Relaxed),
                        "writes": s.writes.load(Ordering::Relaxed),
                        "failures": s.failures.load(Ordering::Relaxed),
                        "refusals": s.refusals.load(Ordering::Relaxed),
                        "last_error": *s.last_error.lock().unwrap_or_else(|e| e.into_inner()),
                    }),
                )
            })
            .collect();
        let mut v = json!({
            "ts": rfc3339(SystemTime::now()),
            "uptime_s": self.started.elapsed().as_secs(),
            "tasks": tasks,
            "models": self.models.iter().map(|(k, m)| (k.clone(), m.to_json())).collect::<serde_json::Map<_, _>>(),
            "modbus": devices,
            "faults": self.faults.list(),
            "heartbeats": self.heartbeats.as_ref().map(|h| h.load(Ordering::Relaxed)),
        });
        if let Some(q) = self.mqtt_queue.as_ref().filter(|q| q.configured.load(Ordering::Relaxed)) {
            v["mqtt_queue"] = json!({
                "waiting": q.waiting.load(Ordering::Relaxed),
                "dropped": q.dropped.load(Ordering::Relaxed),
                "lost": q.lost.load(Ordering::Relaxed),
            });
        }
        if last {
            v["final"] = json!(true);
        }
        v
    }
}

/// `2026-11-28T04:30:00.123Z`, without pulling in a date crate.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_840_496_789);
        assert_eq!(rfc3339(t), "2026-11-28T04:34:56.789Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
