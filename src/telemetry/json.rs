//! The plain JSON dialect's documents: one part's result and the stats
//! message (both described in docs/mqtt.md). Built from the typed values the
//! pipeline hands out ([`PartResult`], [`NodeStats`]); the Sparkplug dialect
//! reads the same result document.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde_json::{json, Value};

use crate::part::result::RejectReport;
use crate::part::{PartResult, Verdict};
use crate::stats::{DeviceStats, MachineSample, ModelStats, NodeStats, TaskEntry};
use crate::util::time::rfc3339;

/// One part's result document.
pub fn result_doc(r: &PartResult) -> Value {
    let j = &r.judgement;
    let mut doc = json!({
        "task": &*r.task,
        "camera": &*j.part.camera,
        "part_id": j.part.part_id,
        "verdict": j.verdict,
        "captured_at": rfc3339(j.part.captured_wall),
        "model": &*r.model,
        "ng_threshold": round4(f64::from(j.part.stamp.threshold)),
        "config_generation": j.part.stamp.generation,
        "timings_ms": {
            "preprocess": round3(j.preprocess_ms),
            "inference": round3(j.inference_ms),
            "capture_to_decision": round3(r.capture_to_decision_ms),
        },
    });
    if !j.scores.is_empty() {
        let scores: serde_json::Map<String, Value> =
            r.classes.iter().zip(&j.scores).map(|(c, s)| (c.clone(), json!(round3(f64::from(*s))))).collect();
        doc["scores"] = Value::Object(scores);
        doc["ng_score"] = json!(round3(f64::from(j.ng_score)));
        doc["class"] = json!(r.classes.get(j.top_class));
    } else if j.error.is_none() {
        // A detector: the detections that count (none for a good part), boxes in image pixels.
        doc["detections"] = json!(j.detections);
        doc["ng_score"] = json!(round3(f64::from(j.ng_score)));
        if let Some(d) = j.detections.first() {
            doc["class"] = json!(d.class);
        }
    }
    if let Some(e) = &j.error {
        doc["error"] = json!(e);
    }
    if j.verdict == Verdict::Uncertain {
        if let Some(action) = r.uncertain_action {
            doc["uncertain_action"] = json!(action);
        }
        if r.flagged {
            doc["flagged"] = json!(true);
        }
    }
    if let Some(ack) = r.capture_to_reject_ack_ms {
        doc["timings_ms"]["capture_to_reject_ack"] = json!(round3(ack));
    }
    if let Some(reject) = &r.reject {
        doc["reject"] = reject_doc(reject);
    }
    doc
}

fn reject_doc(r: &RejectReport) -> Value {
    match r {
        RejectReport::NotConfigured => json!({"status": "not-configured"}),
        RejectReport::Fired { output, late_ms, deadline_miss } => {
            json!({"output": output, "status": "fired", "late_ms": round3(*late_ms), "deadline_miss": deadline_miss})
        }
        RejectReport::PassedUninspected { output } => {
            json!({"output": output, "status": "passed-uninspected", "deadline_miss": true})
        }
        RejectReport::Passed { output } => json!({"output": output, "status": "passed"}),
        RejectReport::Failed { output, error } => json!({"output": output, "status": "failed", "error": error}),
    }
}

/// The stats message; `last` marks the one sent at a clean stop.
pub fn stats_doc(s: &NodeStats, last: bool) -> Value {
    let tasks: serde_json::Map<String, Value> = s.tasks.iter().map(|(n, t)| (n.clone(), task_doc(t))).collect();
    let devices: serde_json::Map<String, Value> = s.devices.iter().map(|(n, d)| (n.clone(), device_doc(d))).collect();
    let mut v = json!({
        "ts": rfc3339(SystemTime::now()),
        "uptime_s": s.started.elapsed().as_secs(),
        "tasks": tasks,
        "models": s.models.iter().map(|(k, m)| (k.clone(), model_doc(m))).collect::<serde_json::Map<_, _>>(),
        "modbus": devices,
        "faults": s.faults.list(),
        "heartbeats": s.heartbeats.as_ref().map(|h| h.load(Ordering::Relaxed)),
        "config": s.reloads.doc(),
        "machine": machine_doc(&s.machine.latest()),
    });
    if let Some(q) = s.mqtt_queue.as_ref().filter(|q| q.configured.load(Ordering::Relaxed)) {
        v["mqtt_queue"] = json!({
            "waiting": q.waiting.load(Ordering::Relaxed),
            "dropped": q.dropped.load(Ordering::Relaxed),
            "live": q.live.load(Ordering::Relaxed),
            "lost": q.lost.load(Ordering::Relaxed),
            "problem": q.problem(),
        });
    }
    if s.rollout.get().is_some() {
        v["rollout"] = s.rollout_doc();
    }
    if last {
        v["final"] = json!(true);
    }
    v
}

fn task_doc(t: &TaskEntry) -> Value {
    let s = &t.stats;
    let c = &t.camera_stats;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let handshake = t.handshake.as_ref().map(|h| {
        json!({
            "written": get(&h.written),
            "acknowledged": get(&h.acknowledged),
            "lost": get(&h.lost),
            "write_failures": get(&h.write_failures),
        })
    });
    let mut doc = json!({
        "triggers": get(&s.triggers),
        "triggers_from_latch": get(&s.triggers_from_latch),
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
        "camera_reconfigured": get(&c.reconfigured),
        "camera_decode_scale": get(&c.decode_scale).max(1),
        "ok": get(&s.ok),
        "ng": get(&s.ng),
        "error": get(&s.error),
        "uncertain": get(&s.uncertain),
        "flagged": get(&s.flagged),
        "late_verdicts": get(&s.late_verdicts),
        "rejects_fired": get(&s.rejects_fired),
        "rejects_failed": get(&s.rejects_failed),
        "telemetry_dropped": get(&s.telemetry_dropped),
        "purges": get(&s.purges),
        "waiting_dropped": get(&s.waiting_dropped),
        "gate_overflows": get(&s.gate_overflows),
        "events_waited": get(&t.events_waited),
        "capture": t.capture.as_ref().map(|c| c.doc()),
        "inference_ms": s.inference_ms.percentiles(),
        "capture_to_decision_ms": s.capture_to_decision_ms.percentiles(),
        "capture_to_reject_ack_ms": s.capture_to_reject_ack_ms.percentiles(),
        "provider": t.provider,
        "model": t.model(),
        "enabled": t.control.enabled(),
        "ng_threshold": round4(f64::from(t.control.threshold())),
    });
    // Only once a candidate was shadowed: the agreement table of the latest one.
    if let Some(shadow) = s.shadow.doc() {
        doc["shadow"] = shadow;
    }
    doc
}

fn device_doc(s: &DeviceStats) -> Value {
    json!({
        "state": s.state().as_str(),
        "connected": s.connected.load(Ordering::Relaxed),
        "reads": s.reads.load(Ordering::Relaxed),
        "writes": s.writes.load(Ordering::Relaxed),
        "failures": s.failures.load(Ordering::Relaxed),
        "refusals": s.refusals.load(Ordering::Relaxed),
        "last_error": *s.last_error.lock().unwrap_or_else(|e| e.into_inner()),
    })
}

/// One model's figures in the stats message.
pub fn model_doc(m: &ModelStats) -> Value {
    let calls = m.calls.load(Ordering::Relaxed);
    let frames = m.frames.load(Ordering::Relaxed);
    let mut doc = json!({
        "calls": calls,
        "frames": frames,
        "mean_batch": if calls == 0 { 0.0 } else { (frames as f64 / calls as f64 * 100.0).round() / 100.0 },
        "largest_batch": m.largest_batch.load(Ordering::Relaxed),
        "provider": m.provider.get(),
        "threads": m.threads.load(Ordering::Relaxed),
    });
    if m.shadow.offered.load(Ordering::Relaxed) > 0 {
        doc["shadow"] = m.shadow.doc();
    }
    doc
}

/// The machine health section of the stats message: CPU in cores (fractions of one core, over
/// `interval_s`), sizes in MiB, temperatures in degrees C, the GPU's load 0..1; null where the
/// machine does not say.
pub fn machine_doc(m: &MachineSample) -> Value {
    let mib = |b: Option<u64>| b.map(|b| b >> 20);
    let mut cpu = serde_json::Map::new();
    cpu.insert("process".into(), json!(m.cpu_process.map(round2)));
    for (stage, cores) in m.cpu_by_stage() {
        cpu.insert(stage.as_str().into(), json!(cores.map(round2)));
    }
    let threads: serde_json::Map<String, Value> =
        m.threads.iter().map(|(n, t)| (n.clone(), json!({"threads": t.threads, "cores": round2(t.cores)}))).collect();
    let disks: serde_json::Map<String, Value> = m
        .disks
        .iter()
        .map(|(role, d)| {
            (role.clone(), json!({"path": d.path, "free_mb": mib(d.free_bytes), "total_mb": mib(d.total_bytes)}))
        })
        .collect();
    let temps: serde_json::Map<String, Value> =
        m.temperatures_c.iter().map(|(z, t)| (z.clone(), json!(t.map(|t| (t * 10.0).round() / 10.0)))).collect();
    json!({
        "sampled_at": rfc3339(m.taken),
        "interval_s": m.interval.map(|i| round3(i.as_secs_f64())),
        "cpu_cores": cpu,
        "threads": threads,
        "memory_mb": {
            "total": mib(m.memory_total_bytes),
            "available": mib(m.memory_available_bytes),
            "process_rss": mib(m.rss_bytes),
        },
        "disks": disks,
        "temperatures_c": temps,
        "gpu_load": m.gpu_load.map(round3),
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Thresholds at 4 decimals, as the task's stats show them.
fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}
