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

use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;
use tokio::time::Instant;

use std::collections::HashMap;

use tokio::sync::{oneshot, watch};

use super::reject::{Arrival, Gate, GateOutcome};
use super::{Judgement, PartEvent, PartInfo};
use super::{UncertainAction, Verdict};
use crate::line::encoder::Position;
use crate::telemetry::rfc3339;
use crate::telemetry::stats::TaskStats;
use crate::telemetry::Telemetry;

/// Where a finished part goes: the gate, MQTT, and a local observer (the demo and tests).
pub struct Controller {
    pub task: Arc<str>,
    pub classes: Arc<[String]>,
    pub inference_timeout: Duration,
    /// Frames stand for parts (registered with a deadline) rather than being free-running samples.
    pub part_per_frame: bool,
    pub reject: Option<RejectPlan>,
    pub telemetry: Telemetry,
    pub stats: Arc<TaskStats>,
    pub model_label: String,
    /// Every finished part's result document, for in-process observers.
    pub observer: Option<tokio::sync::mpsc::UnboundedSender<Value>>,
    /// The result block the PLC reads verdicts from, if any.
    pub handshake: Option<tokio::sync::mpsc::UnboundedSender<(u64, Verdict)>>,
    /// The recent reject share the stack light shows.
    pub reject_window: Option<Arc<crate::line::health::RejectWindow>>,
    /// What happens to an UNCERTAIN part.
    pub uncertain: UncertainAction,
}

pub struct RejectPlan {
    pub gate: Gate,
    pub output: String,
    pub at: GateDistance,
    /// The line's position, for `GateDistance::Counts`.
    pub encoder: Option<watch::Receiver<Option<Position>>>,
}

/// How far downstream of the camera (or trigger) the gate is.
#[derive(Debug, Clone, Copy)]
pub enum GateDistance {
    Delay(Duration),
    Counts(u64),
}

impl RejectPlan {
    /// When a part announced at `announced` reaches the gate.
    fn arrival(&self, announced: Instant) -> Arrival {
        match self.at {
            GateDistance::Delay(d) => Arrival::Time(announced + d),
            GateDistance::Counts(n) => {
                // The encoder is read every few ms: place the part where the
                // line was at the moment it was announced, from the speed.
                let here = self.encoder.as_ref().and_then(|e| *e.borrow()).map(|p| p.at_time(announced).round() as i64);
                Arrival::Counts(here.unwrap_or(0) + n as i64)
            }
        }
    }
}

impl Controller {
    /// Run until every sender of `events` is gone (camera and worker
    /// finished), then until every reject in flight has been written.
    pub async fn run(self, mut events: UnboundedReceiver<PartEvent>) {
        let this = Arc::new(self);
        let mut pending: BTreeMap<u64, PartInfo> = BTreeMap::new();
        let mut deadlines: BTreeMap<(Instant, u64), ()> = BTreeMap::new();
        let mut in_flight = JoinSet::new();
        // What the gate did with each part: filled in when the part reaches it.
        let mut at_gate: HashMap<u64, oneshot::Receiver<GateOutcome>> = HashMap::new();
        loop {
            let next_deadline = deadlines.keys().next().map(|k| k.0);
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(PartEvent::Captured(p)) => {
                        let due = Instant::from_std(p.captured) + this.inference_timeout;
                        deadlines.insert((due, p.part_id), ());
                        if let Some(plan) = &this.reject {
                            at_gate.insert(p.part_id, plan.gate.enter(p.part_id, plan.arrival(Instant::from_std(p.captured))));
                        }
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
                        this.finish(j, &mut in_flight, &mut at_gate).await;
                    }
                    Some(PartEvent::Unjudged(p, why)) => {
                        if pending.remove(&p.part_id).is_some() {
                            deadlines.remove(&(Instant::from_std(p.captured) + this.inference_timeout, p.part_id));
                        }
                        this.finish(Judgement::error(p, why), &mut in_flight, &mut at_gate).await;
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
                            this.finish(Judgement::error(p, why), &mut in_flight, &mut at_gate).await;
                        }
                    }
                }
            }
            // Reap finished reject waits as we go so the set stays small.
            while in_flight.try_join_next().is_some() {}
        }
        for (_, p) in std::mem::take(&mut pending) {
            this.finish(
                Judgement::error(p, "pipeline stopped before the part was judged".into()),
                &mut in_flight,
                &mut at_gate,
            )
            .await;
        }
        while in_flight.join_next().await.is_some() {}
    }

    async fn finish(
        self: &Arc<Self>,
        j: Judgement,
        in_flight: &mut JoinSet<()>,
        at_gate: &mut HashMap<u64, oneshot::Receiver<GateOutcome>>,
    ) {
        let decided = Instant::now();
        let captured = Instant::from_std(j.part.captured);
        let to_decision = decided.saturating_duration_since(captured);
        self.stats.processed.fetch_add(1, Ordering::Relaxed);
        self.stats.count(j.verdict);
        if j.error.is_none() {
            self.stats.inference_ms.record(j.inference_ms);
        }
        self.stats.capture_to_decision_ms.record(ms(to_decision));
        let rejects = j.verdict.rejects(self.uncertain);
        if let Some(w) = &self.reject_window {
            w.record(rejects);
        }
        if let Some(h) = &self.handshake {
            let _ = h.send((j.part.part_id, j.verdict));
        }
        let mut doc = self.result_doc(&j, to_decision);
        if j.verdict == Verdict::Uncertain {
            doc["uncertain_action"] = json!(self.uncertain);
            if self.uncertain == UncertainAction::Flag {
                self.stats.flagged.fetch_add(1, Ordering::Relaxed);
                doc["flagged"] = json!(true);
            }
        }
        let Some(plan) = &self.reject else {
            if rejects {
                doc["reject"] = json!({"status": "not-configured"});
            }
            self.emit(doc);
            return;
        };
        let id = j.part.part_id;
        // Part frames entered the gate at capture; a free-running frame
        // enters now, and only if it must be thrown out.
        let outcome = match at_gate.remove(&id) {
            Some(rx) => Some(rx),
            None if rejects => Some(plan.gate.enter(id, plan.arrival(captured))),
            None => None,
        };
        plan.gate.verdict(id, rejects);
        let Some(mut rx) = outcome else {
            self.emit(doc); // a good free-running frame: nothing entered the gate
            return;
        };
        if !rejects {
            // A good part: report now, the gate has nothing to do for it...
            // unless it already went by without its verdict.
            if let Ok(o) = rx.try_recv() {
                doc["reject"] = self.outcome_json(o, captured, &plan.output, &mut doc);
            }
            self.emit(doc);
            return;
        }
        let this = self.clone();
        let output = plan.output.clone();
        in_flight.spawn(async move {
            let outcome = (&mut rx).await.unwrap_or(GateOutcome::Failed("reject gate task has stopped".into()));
            doc["reject"] = this.outcome_json(outcome, captured, &output, &mut doc);
            this.emit(doc);
        });
    }

    /// The `reject` member of a result, and the figures the outcome feeds.
    fn outcome_json(&self, outcome: GateOutcome, captured: Instant, output: &str, doc: &mut Value) -> Value {
        match outcome {
            GateOutcome::Fired { acked_at, late, deadline_miss } => {
                self.stats.rejects_fired.fetch_add(1, Ordering::Relaxed);
                let ack = acked_at.saturating_duration_since(captured);
                self.stats.capture_to_reject_ack_ms.record(ms(ack));
                doc["timings_ms"]["capture_to_reject_ack"] = json!(round3(ms(ack)));
                json!({"output": output, "status": "fired", "late_ms": round3(ms(late)), "deadline_miss": deadline_miss})
            }
            GateOutcome::PassedUninspected => {
                json!({"output": output, "status": "passed-uninspected", "deadline_miss": true})
            }
            GateOutcome::Passed => json!({"output": output, "status": "passed"}),
            GateOutcome::Failed(e) => {
                self.stats.rejects_failed.fetch_add(1, Ordering::Relaxed);
                json!({"output": output, "status": "failed", "error": e})
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
        doc
    }

    fn emit(&self, doc: Value) {
        if !self.telemetry.result(&self.task, &doc) {
            self.stats.telemetry_dropped.fetch_add(1, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::outputs::testing::{recorded, Recorder};
    use std::time::SystemTime;
    use tokio::sync::mpsc;

    fn part(id: u64) -> PartInfo {
        PartInfo {
            camera: "cam".into(),
            part_id: id,
            captured: tokio::time::Instant::now().into_std(),
            captured_wall: SystemTime::now(),
        }
    }

    fn judged(p: PartInfo, verdict: super::super::Verdict) -> Judgement {
        Judgement { verdict, scores: vec![0.9, 0.1], ng_score: 0.1, error: None, ..Judgement::error(p, String::new()) }
    }

    /// A controller with a recording gate 100 ms downstream and a 50 ms inference timeout.
    fn controller() -> (Controller, Recorder, mpsc::UnboundedReceiver<Value>, Arc<TaskStats>) {
        let (rec, outputs) = recorded(
            "  devices: { plc: { tcp: \"127.0.0.1:502\" } }\n  outputs: { gate: { device: plc, area: coil, address: 3, safe_state: off } }",
        );
        let stats = Arc::new(TaskStats::default());
        let (gate, _task) = Gate::start(
            outputs.get("gate").unwrap().clone(),
            super::super::reject::GateSettings::timed(Duration::from_millis(10)),
            stats.clone(),
        );
        let (obs, rx) = mpsc::unbounded_channel();
        let c = Controller {
            task: "t".into(),
            classes: vec!["good".to_string(), "bad".to_string()].into(),
            inference_timeout: Duration::from_millis(50),
            part_per_frame: true,
            reject: Some(RejectPlan {
                gate,
                output: "gate".into(),
                at: GateDistance::Delay(Duration::from_millis(100)),
                encoder: None,
            }),
            handshake: None,
            reject_window: None,
            uncertain: UncertainAction::Reject,
            telemetry: Default::default(),
            stats: stats.clone(),
            model_label: "m@1".into(),
            observer: Some(obs),
        };
        (c, rec, rx, stats)
    }

    #[tokio::test(start_paused = true)]
    async fn a_part_without_a_verdict_gets_error_and_is_rejected_on_time() {
        let (c, rec, mut results, stats) = controller();
        let (tx, rx) = mpsc::unbounded_channel();
        let run = tokio::spawn(c.run(rx));
        let t0 = tokio::time::Instant::now();
        let p1 = part(1);
        tx.send(PartEvent::Captured(p1.clone())).unwrap();
        tx.send(PartEvent::Captured(part(2))).unwrap();
        // Part 2 is judged OK in time; part 1 never is (a stalled inference).
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.send(PartEvent::Judged(judged(part(2), super::super::Verdict::Ok))).unwrap();
        let first = results.recv().await.unwrap();
        assert_eq!((first["part_id"].as_u64(), first["verdict"].as_str()), (Some(2), Some("OK")));
        let second = results.recv().await.unwrap();
        assert_eq!(second["part_id"], 1);
        assert_eq!(second["verdict"], "ERROR");
        assert!(second["error"].as_str().unwrap().contains("inference timeout"));
        assert_eq!(second["reject"]["status"], "fired");
        // The gate fired at capture + delay, not at the moment of the timeout.
        let writes = rec.coil_writes();
        assert_eq!(writes[0].0 - t0, Duration::from_millis(100));
        assert!(writes[0].2);
        // The verdict that finally comes is ignored and counted.
        tx.send(PartEvent::Judged(judged(p1, super::super::Verdict::Ok))).unwrap();
        drop(tx);
        run.await.unwrap();
        assert_eq!(stats.late_verdicts.load(Ordering::Relaxed), 1);
        assert_eq!(stats.error.load(Ordering::Relaxed), 1);
        assert_eq!(stats.ok.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_part_that_found_the_queue_full_is_rejected() {
        let (c, rec, mut results, _stats) = controller();
        let (tx, rx) = mpsc::unbounded_channel();
        let run = tokio::spawn(c.run(rx));
        let p = part(7);
        tx.send(PartEvent::Captured(p.clone())).unwrap();
        tx.send(PartEvent::Unjudged(p, "inspection queue full".into())).unwrap();
        drop(tx);
        let doc = results.recv().await.unwrap();
        assert_eq!(doc["verdict"], "ERROR");
        run.await.unwrap();
        assert!(results.recv().await.is_none(), "one result per part, no second one from the deadline");
        assert_eq!(rec.coil_writes().iter().filter(|w| w.2).count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_uncertain_part_follows_its_tasks_action() {
        use super::super::Verdict::Uncertain;
        for (action, fires) in
            [(UncertainAction::Reject, true), (UncertainAction::Pass, false), (UncertainAction::Flag, false)]
        {
            let (mut c, rec, mut results, stats) = controller();
            c.uncertain = action;
            let (tx, rx) = mpsc::unbounded_channel();
            let run = tokio::spawn(c.run(rx));
            tx.send(PartEvent::Captured(part(1))).unwrap();
            tx.send(PartEvent::Judged(judged(part(1), Uncertain))).unwrap();
            drop(tx);
            let doc = results.recv().await.unwrap();
            run.await.unwrap();
            assert_eq!(doc["verdict"], "UNCERTAIN", "{action:?}");
            assert_eq!(doc["uncertain_action"], json!(action));
            assert_eq!(doc["flagged"] == json!(true), action == UncertainAction::Flag);
            assert_eq!(rec.coil_writes().iter().any(|w| w.2), fires, "{action:?}: gate fired?");
            assert_eq!(stats.uncertain.load(Ordering::Relaxed), 1);
            assert_eq!(stats.flagged.load(Ordering::Relaxed), u64::from(action == UncertainAction::Flag));
        }
    }
}
