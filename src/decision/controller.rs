//! One task's part tracker: the single owner of "which parts are waiting for
//! a verdict".
//!
//! Every captured part is registered with a deadline (capture time plus the
//! inference timeout). A part gets exactly one verdict: the worker's, or
//! ERROR when the deadline passes first, when its frame could not be queued,
//! or when the pipeline ends without judging it. ERROR rejects like NG.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::QoS;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::reject::{Gate, RejectOutcome};
use super::{Judgement, PartEvent, PartInfo};
use crate::telemetry::mqtt::Mqtt;
use crate::telemetry::rfc3339;
use crate::telemetry::stats::TaskStats;

/// Where a finished part goes: the gate, MQTT, and a local observer (the demo and tests).
pub struct Controller {
    pub task: Arc<str>,
    pub classes: Arc<[String]>,
    pub inference_timeout: Duration,
    /// Frames stand for parts (registered with a deadline) rather than being free-running samples.
    pub part_per_frame: bool,
    pub reject: Option<RejectPlan>,
    pub mqtt: Option<Mqtt>,
    pub stats: Arc<TaskStats>,
    pub model_label: String,
    /// Every finished part's result document, for in-process observers.
    pub observer: Option<tokio::sync::mpsc::UnboundedSender<Value>>,
}

pub struct RejectPlan {
    pub gate: Gate,
    pub output: String,
    pub delay: Duration,
    pub pulse: Duration,
}

impl Controller {
    /// Run until every sender of `events` is gone (camera and worker
    /// finished), then until every reject in flight has been written.
    pub async fn run(self, mut events: UnboundedReceiver<PartEvent>) {
        let this = Arc::new(self);
        let mut pending: BTreeMap<u64, PartInfo> = BTreeMap::new();
        let mut deadlines: BTreeMap<(Instant, u64), ()> = BTreeMap::new();
        let mut in_flight = JoinSet::new();
        loop {
            let next_deadline = deadlines.keys().next().map(|k| k.0);
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(PartEvent::Captured(p)) => {
                        let due = Instant::from_std(p.captured) + this.inference_timeout;
                        deadlines.insert((due, p.part_id), ());
                        pending.insert(p.part_id, p);
                    }
                    Some(PartEvent::Judged(j)) => {
                        let tracked = pending.remove(&j.part.part_id);
                        if let Some(p) = &tracked {
                            deadlines.remove(&(Instant::from_std(p.captured) + this.inference_timeout, p.part_id));
                        }
                        // A free-running frame is never registered; a part
                        // frame that is no longer pending already got ERROR.
                        if tracked.is_none() && this.part_per_frame {
                            this.stats.late_verdicts.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(task = %this.task, part = j.part.part_id, "verdict came after its part was given ERROR; ignored");
                            continue;
                        }
                        this.finish(j, &mut in_flight).await;
                    }
                    Some(PartEvent::Unjudged(p, why)) => {
                        if pending.remove(&p.part_id).is_some() {
                            deadlines.remove(&(Instant::from_std(p.captured) + this.inference_timeout, p.part_id));
                        }
                        this.finish(Judgement::error(p, why), &mut in_flight).await;
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(next_deadline.unwrap_or_else(Instant::now)), if next_deadline.is_some() => {
                    let now = Instant::now();
                    while let Some(entry) = deadlines.first_entry() {
                        if entry.key().0 > now {
                            break;
                        }
                        let (_, id) = *entry.key();
                        entry.remove();
                        if let Some(p) = pending.remove(&id) {
                            let why = format!("no verdict within the inference timeout ({} ms)", this.inference_timeout.as_millis());
                            tracing::error!(task = %this.task, part = id, "{why}; part gets ERROR");
                            this.finish(Judgement::error(p, why), &mut in_flight).await;
                        }
                    }
                }
            }
            // Reap finished reject waits as we go so the set stays small.
            while in_flight.try_join_next().is_some() {}
        }
        for (_, p) in std::mem::take(&mut pending) {
            this.finish(Judgement::error(p, "pipeline stopped before the part was judged".into()), &mut in_flight)
                .await;
        }
        while in_flight.join_next().await.is_some() {}
    }

    async fn finish(self: &Arc<Self>, j: Judgement, in_flight: &mut JoinSet<()>) {
        let decided = Instant::now();
        let captured = Instant::from_std(j.part.captured);
        let to_decision = decided.saturating_duration_since(captured);
        self.stats.processed.fetch_add(1, Ordering::Relaxed);
        self.stats.count(j.verdict);
        if j.error.is_none() {
            self.stats.inference_ms.record(j.inference_ms);
        }
        self.stats.capture_to_decision_ms.record(ms(to_decision));
        let mut doc = self.result_doc(&j, to_decision);
        match (&self.reject, j.verdict.rejects()) {
            (Some(plan), true) => {
                let fire_at = captured + plan.delay;
                let rx = plan.gate.schedule(j.part.part_id, fire_at, plan.pulse).await;
                let this = self.clone();
                let output = plan.output.clone();
                in_flight.spawn(async move {
                    let outcome = rx.await.unwrap_or(RejectOutcome::Failed("reject gate task has stopped".into()));
                    let reject = match outcome {
                        RejectOutcome::Fired { acked_at, late } => {
                            this.stats.rejects_fired.fetch_add(1, Ordering::Relaxed);
                            let ack = acked_at.saturating_duration_since(captured);
                            this.stats.capture_to_reject_ack_ms.record(ms(ack));
                            doc["timings_ms"]["capture_to_reject_ack"] = json!(round3(ms(ack)));
                            json!({"output": output, "status": "fired", "late_ms": round3(ms(late))})
                        }
                        RejectOutcome::Failed(e) => {
                            this.stats.rejects_failed.fetch_add(1, Ordering::Relaxed);
                            json!({"output": output, "status": "failed", "error": e})
                        }
                    };
                    doc["reject"] = reject;
                    this.emit(doc);
                });
            }
            _ => {
                if j.verdict.rejects() {
                    doc["reject"] = json!({"status": "not-configured"});
                }
                self.emit(doc);
            }
        }
    }

    fn result_doc(&self, j: &Judgement, to_decision: Duration) -> Value {
        let scores: serde_json::Map<String, Value> =
            self.classes.iter().zip(&j.scores).map(|(c, s)| (c.clone(), json!(round3(f64::from(*s))))).collect();
        let mut doc = json!({
            "task": &*self.task,
            "camera": &*j.part.camera,
            "part_id": j.part.part_id,
            "verdict": j.verdict,
            "captured_at": rfc3339(j.part.captured_wall),
            "model": self.model_label,
            "timings_ms": {
                "preprocess": round3(j.preprocess_ms),
                "inference": round3(j.inference_ms),
                "capture_to_decision": round3(ms(to_decision)),
            },
        });
        if !j.scores.is_empty() {
            doc["scores"] = Value::Object(scores);
            doc["ng_score"] = json!(round3(f64::from(j.ng_score)));
            doc["class"] = json!(self.classes.get(j.top_class));
        }
        if let Some(e) = &j.error {
            doc["error"] = json!(e);
        }
        doc
    }

    fn emit(&self, doc: Value) {
        if let Some(mqtt) = &self.mqtt {
            let payload = serde_json::to_vec(&doc).unwrap_or_default();
            if !mqtt.publish(mqtt.topics.result(&self.task), payload, QoS::AtLeastOnce, false) {
                self.stats.telemetry_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(obs) = &self.observer {
            let _ = obs.send(doc);
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
