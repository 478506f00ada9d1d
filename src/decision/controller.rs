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

use tokio::sync::mpsc::{self, Receiver};
use tokio::task::JoinSet;
use tokio::time::Instant;

use std::collections::HashMap;

use tokio::sync::{oneshot, watch};

use super::reject::{Arrival, Gate, GateOutcome};
use super::rules::Rule;
use crate::config::UncertainAction;
use crate::part::control::Versions;
use crate::part::result::RejectReport;
use crate::part::sample::Position;
use crate::part::view::{Keeper, Lent, Shot, Views};
use crate::part::{Judgement, PartEvent, PartInfo, PartResult, Verdict};
use crate::stats::{HandshakeStats, RejectWindow, TaskStats};

/// What a reload may replace in a task's decisions. A part is judged and timed by the settings
/// of the generation it was announced in ([`crate::part::control::Stamp`]).
pub struct TaskSettings {
    /// How the task turns model outputs into verdicts.
    pub rule: Rule,
    pub classes: Arc<[String]>,
    /// `name@version` of the task's model.
    pub model_label: Arc<str>,
    /// What happens to an UNCERTAIN part.
    pub uncertain: UncertainAction,
    /// How far downstream the gate is, when the task has one.
    pub gate_at: GateDistance,
}

/// One task's decisions: judges each inspected frame by the task's rule,
/// sends the part to the gate, and hands the finished part out as a
/// [`PartResult`].
pub struct Controller {
    pub task: Arc<str>,
    /// The task's settings by config generation.
    pub settings: Arc<Versions<TaskSettings>>,
    pub inference_timeout: Duration,
    /// Frames stand for parts (registered with a deadline) rather than being free-running samples.
    pub part_per_frame: bool,
    pub reject: Option<RejectPlan>,
    /// Where finished parts go (telemetry, observers). Never waited on: a full channel
    /// counts the result as `telemetry_dropped` rather than holding up the next part.
    pub results: mpsc::Sender<PartResult>,
    pub stats: Arc<TaskStats>,
    /// The result block the PLC reads verdicts from, if any.
    /// Bounded; a full queue (the block's task stuck) counts the verdict as `lost`, never waits.
    pub handshake: Option<ResultBlock>,
    /// The recent reject share the stack light shows.
    pub reject_window: Option<Arc<RejectWindow>>,
    /// The operator page's view of judged parts, when one is configured.
    pub views: Option<Arc<Views>>,
    /// Evidence capture, when the task has it: judged frames to keep on disk.
    pub keeper: Option<Arc<dyn Keeper>>,
}

/// Where a task's verdicts go for the PLC's result block, and its figures.
pub type ResultBlock = (mpsc::Sender<(u64, Verdict)>, Arc<HandshakeStats>);

pub struct RejectPlan {
    pub gate: Gate,
    pub output: String,
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
    /// When a part announced at `announced` (at encoder `position`, when the trigger knows it)
    /// reaches a gate `at` downstream.
    pub fn arrival(&self, at: GateDistance, announced: Instant, position: Option<i64>) -> Arrival {
        match at {
            GateDistance::Delay(d) => Arrival::Time(announced + d),
            GateDistance::Counts(n) => {
                // The trigger's position (latched by the PLC, or the encoder at the edge); else
                // where the line was at the moment the part was announced, from the last reading
                // and the speed (the encoder is read every few ms).
                let here = position.or_else(|| {
                    self.encoder.as_ref().and_then(|e| *e.borrow()).map(|p| p.at_time(announced).round() as i64)
                });
                Arrival::Counts(here.unwrap_or(0) + n as i64)
            }
        }
    }
}

impl Controller {
    /// Run until every sender of `events` is gone (camera and worker
    /// finished), then until every reject in flight has been written.
    pub async fn run(self, mut events: Receiver<PartEvent>) {
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
                            // A part whose settings are gone (see `Versions`) is thrown out where the
                            // newest settings put the gate: it will be judged ERROR.
                            let s = this.settings_of(&p);
                            let arrival = plan.arrival(s.gate_at, Instant::from_std(p.captured), p.position);
                            at_gate.insert(p.part_id, plan.gate.enter(p.part_id, arrival));
                        }
                        pending.insert(p.part_id, p);
                    }
                    Some(PartEvent::Inspected(mut inspection)) => {
                        // The frame leaves the inspection here: the gate's wait never holds it.
                        let image = inspection.image.take();
                        let j = match this.settings.at(inspection.part.stamp.generation) {
                            Some(s) => s.rule.judge(inspection),
                            None => Judgement::error(inspection.part, "its settings were replaced by reloads while it waited".into()),
                        };
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
                        this.show(&j, image);
                        this.finish(j, &mut in_flight, &mut at_gate).await;
                    }
                    Some(PartEvent::Unjudged(p, why)) => {
                        if pending.remove(&p.part_id).is_some() {
                            deadlines.remove(&(Instant::from_std(p.captured) + this.inference_timeout, p.part_id));
                        }
                        let j = Judgement::error(p, why);
                        this.show(&j, None);
                        this.finish(j, &mut in_flight, &mut at_gate).await;
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
                            let j = Judgement::error(p, why);
                            this.show(&j, None);
                            this.finish(j, &mut in_flight, &mut at_gate).await;
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

    /// Hand a judged part and its frame to the operator page's view and to evidence capture,
    /// to each if it wants it. The frame is copied only when both take it.
    fn show(&self, j: &Judgement, image: Option<Lent>) {
        let page = self.views.as_ref().filter(|v| v.wants(&j.part.camera, j.verdict));
        // A part without a frame (ERROR before inference) has nothing to keep; asking would
        // spend an OK part's sampling turn on nothing.
        let keep = self.keeper.as_ref().filter(|k| image.is_some() && k.wants(j.verdict));
        if page.is_none() && keep.is_none() {
            return;
        }
        let (image, image_scale) = match image.map(Lent::into_image) {
            Some((m, scale)) => (Some(m), scale),
            None => (None, 1),
        };
        match (page, keep) {
            (Some(views), Some(keeper)) => {
                let copy = image.as_ref().and_then(|m| opencv::prelude::MatTraitConst::try_clone(m).ok());
                keeper.keep(self.shot(j, image, image_scale));
                views.offer(self.shot(j, copy, image_scale));
            }
            (Some(views), None) => views.offer(self.shot(j, image, image_scale)),
            (None, Some(keeper)) => keeper.keep(self.shot(j, image, image_scale)),
            (None, None) => {}
        }
    }

    fn shot(&self, j: &Judgement, image: Option<opencv::core::Mat>, image_scale: u32) -> Shot {
        let s = self.settings_of(&j.part);
        Shot {
            seq: 0,
            task: self.task.clone(),
            camera: j.part.camera.clone(),
            part_id: j.part.part_id,
            captured: j.part.captured_wall,
            verdict: j.verdict,
            model: s.model_label.clone(),
            classes: s.classes.clone(),
            scores: j.scores.clone(),
            ng_score: j.ng_score,
            threshold: j.part.stamp.threshold,
            detections: j.detections.clone(),
            heat: j.heat.clone(),
            error: j.error.clone(),
            image,
            image_scale,
        }
    }

    /// The settings `p` is judged and timed by; the newest when its own are gone.
    fn settings_of(&self, p: &PartInfo) -> Arc<TaskSettings> {
        self.settings.at(p.stamp.generation).unwrap_or_else(|| self.settings.latest())
    }

    async fn finish(
        self: &Arc<Self>,
        j: Judgement,
        in_flight: &mut JoinSet<()>,
        at_gate: &mut HashMap<u64, oneshot::Receiver<GateOutcome>>,
    ) {
        let s = self.settings_of(&j.part);
        let decided = Instant::now();
        let captured = Instant::from_std(j.part.captured);
        let to_decision = decided.saturating_duration_since(captured);
        self.stats.processed.fetch_add(1, Ordering::Relaxed);
        self.stats.count(j.verdict);
        if j.error.is_none() {
            self.stats.inference_ms.record(j.inference_ms);
        }
        self.stats.capture_to_decision_ms.record(ms(to_decision));
        self.stats.decision_seconds.record(ms(to_decision));
        let rejects = j.verdict.rejects(s.uncertain);
        if let Some(w) = &self.reject_window {
            w.record(rejects);
        }
        if let Some((h, stats)) = &self.handshake {
            if let Err(mpsc::error::TrySendError::Full(_)) = h.try_send((j.part.part_id, j.verdict)) {
                stats.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut result = PartResult {
            task: self.task.clone(),
            classes: s.classes.clone(),
            model: s.model_label.clone(),
            capture_to_decision_ms: ms(to_decision),
            capture_to_reject_ack_ms: None,
            uncertain_action: (j.verdict == Verdict::Uncertain).then_some(s.uncertain),
            flagged: false,
            reject: None,
            judgement: j,
        };
        if result.judgement.verdict == Verdict::Uncertain && s.uncertain == UncertainAction::Flag {
            self.stats.flagged.fetch_add(1, Ordering::Relaxed);
            result.flagged = true;
        }
        let Some(plan) = &self.reject else {
            if rejects {
                result.reject = Some(RejectReport::NotConfigured);
            }
            self.emit(result);
            return;
        };
        let id = result.judgement.part.part_id;
        // Part frames entered the gate at capture; a free-running frame
        // enters now, and only if it must be thrown out.
        let outcome = match at_gate.remove(&id) {
            Some(rx) => Some(rx),
            None if rejects => {
                Some(plan.gate.enter(id, plan.arrival(s.gate_at, captured, result.judgement.part.position)))
            }
            None => None,
        };
        plan.gate.verdict(id, rejects);
        let Some(mut rx) = outcome else {
            self.emit(result); // a good free-running frame: nothing entered the gate
            return;
        };
        if !rejects {
            // A good part: report now, the gate has nothing to do for it...
            // unless it already went by without its verdict.
            if let Ok(o) = rx.try_recv() {
                self.record_outcome(o, captured, &plan.output, &mut result);
            }
            self.emit(result);
            return;
        }
        let this = self.clone();
        let output = plan.output.clone();
        in_flight.spawn(async move {
            let outcome = (&mut rx).await.unwrap_or(GateOutcome::Failed("reject gate task has stopped".into()));
            this.record_outcome(outcome, captured, &output, &mut result);
            this.emit(result);
        });
    }

    /// What the gate did with the part, and the figures the outcome feeds.
    fn record_outcome(&self, outcome: GateOutcome, captured: Instant, output: &str, result: &mut PartResult) {
        let output = output.to_string();
        result.reject = Some(match outcome {
            GateOutcome::Fired { acked_at, late, deadline_miss } => {
                self.stats.rejects_fired.fetch_add(1, Ordering::Relaxed);
                let ack = ms(acked_at.saturating_duration_since(captured));
                self.stats.capture_to_reject_ack_ms.record(ack);
                result.capture_to_reject_ack_ms = Some(ack);
                RejectReport::Fired { output, late_ms: ms(late), deadline_miss }
            }
            GateOutcome::PassedUninspected => RejectReport::PassedUninspected { output },
            GateOutcome::Passed => RejectReport::Passed { output },
            GateOutcome::Failed(error) => {
                self.stats.rejects_failed.fetch_add(1, Ordering::Relaxed);
                RejectReport::Failed { output, error }
            }
        });
    }

    /// Hand the finished part out. Never waits: the verdict and the gate come first.
    fn emit(&self, result: PartResult) {
        if self.results.try_send(result).is_err() {
            self.stats.telemetry_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::rules::ClassifierRule;
    use crate::decision::Band;
    use crate::part::actuator::testing::Recording;
    use crate::part::{Inspection, ModelOutput};

    fn part(id: u64) -> PartInfo {
        PartInfo::for_test("cam", id)
    }

    /// OK below `band`, UNCERTAIN from it, NG from `threshold`; the gate `delay_ms` downstream.
    fn settings(threshold: f32, band: f32, delay_ms: u64, uncertain: UncertainAction) -> TaskSettings {
        TaskSettings {
            rule: Rule::Classifier(ClassifierRule {
                ok: vec![true, false],
                ng_threshold: threshold,
                band: Some(Band { from: band }),
            }),
            classes: vec!["good".to_string(), "bad".to_string()].into(),
            model_label: format!("m@{threshold}").into(),
            uncertain,
            gate_at: GateDistance::Delay(Duration::from_millis(delay_ms)),
        }
    }

    /// A frame the model scored P(NG) = `ng`: OK below 0.3, UNCERTAIN from 0.3, NG from 0.5.
    fn inspected(p: PartInfo, ng: f32) -> Inspection {
        Inspection {
            threshold: p.stamp.threshold,
            part: p,
            output: Ok(ModelOutput::Probs(vec![1.0 - ng, ng])),
            preprocess_ms: 1.0,
            inference_ms: 2.0,
            image: None,
        }
    }

    /// A controller with a recording gate 100 ms downstream and a 50 ms inference timeout.
    fn controller() -> (Controller, Arc<Recording>, mpsc::Receiver<PartResult>, Arc<TaskStats>) {
        let rec = Recording::new();
        let stats = Arc::new(TaskStats::default());
        let (gate, _task) = Gate::start(
            rec.clone(),
            super::super::reject::GateSettings::timed(Duration::from_millis(10)),
            stats.clone(),
        );
        let (results, rx) = mpsc::channel(16);
        let c = Controller {
            task: "t".into(),
            settings: Arc::new(Versions::new(settings(0.5, 0.3, 100, UncertainAction::Reject))),
            inference_timeout: Duration::from_millis(50),
            part_per_frame: true,
            reject: Some(RejectPlan { gate, output: "gate".into(), encoder: None }),
            handshake: None,
            reject_window: None,
            views: None,
            keeper: None,
            results,
            stats: stats.clone(),
        };
        (c, rec, rx, stats)
    }

    #[tokio::test(start_paused = true)]
    async fn a_part_without_a_verdict_gets_error_and_is_rejected_on_time() {
        let (c, rec, mut results, stats) = controller();
        let (tx, rx) = mpsc::channel(64);
        let run = tokio::spawn(c.run(rx));
        let t0 = tokio::time::Instant::now();
        let p1 = part(1);
        tx.try_send(PartEvent::Captured(p1.clone())).unwrap();
        tx.try_send(PartEvent::Captured(part(2))).unwrap();
        // Part 2 is judged OK in time; part 1 never is (a stalled inference).
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.try_send(PartEvent::Inspected(inspected(part(2), 0.1))).unwrap();
        let first = results.recv().await.unwrap().judgement;
        assert_eq!((first.part.part_id, first.verdict), (2, Verdict::Ok));
        let second = results.recv().await.unwrap();
        assert_eq!(second.judgement.part.part_id, 1);
        assert_eq!(second.judgement.verdict, Verdict::Error);
        assert!(second.judgement.error.as_deref().unwrap().contains("inference timeout"));
        assert!(matches!(second.reject, Some(RejectReport::Fired { .. })), "{:?}", second.reject);
        // The gate fired at capture + delay, not at the moment of the timeout.
        let writes = rec.writes();
        assert_eq!(writes[0].0 - t0, Duration::from_millis(100));
        assert!(writes[0].1);
        // The verdict that finally comes is ignored and counted.
        tx.try_send(PartEvent::Inspected(inspected(p1, 0.1))).unwrap();
        drop(tx);
        run.await.unwrap();
        assert_eq!(stats.late_verdicts.load(Ordering::Relaxed), 1);
        assert_eq!(stats.error.load(Ordering::Relaxed), 1);
        assert_eq!(stats.ok.load(Ordering::Relaxed), 1);
    }

    /// A keeper that keeps every part that is not OK and every second OK part; records what it
    /// was asked and given.
    #[derive(Default)]
    struct Keeping {
        asked: std::sync::Mutex<Vec<Verdict>>,
        kept: std::sync::Mutex<Vec<(u64, Verdict, bool)>>,
    }

    impl Keeper for Keeping {
        fn wants(&self, verdict: Verdict) -> bool {
            let mut asked = self.asked.lock().unwrap();
            asked.push(verdict);
            verdict != Verdict::Ok || asked.iter().filter(|v| **v == Verdict::Ok).count() % 2 == 0
        }
        fn keep(&self, shot: Shot) {
            self.kept.lock().unwrap().push((shot.part_id, shot.verdict, shot.image.is_some()));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn capture_is_asked_only_for_parts_with_a_frame_and_gets_the_frame_it_keeps() {
        let (mut c, _rec, mut results, _stats) = controller();
        let keeper = Arc::new(Keeping::default());
        c.keeper = Some(keeper.clone());
        let views = Arc::new(Views::lend_only());
        let (tx, rx) = mpsc::channel(64);
        let run = tokio::spawn(c.run(rx));
        // Parts 1..=4 with frames: OK, NG, OK, OK; part 5 never reaches the model (no frame).
        for (id, ng) in [(1, 0.1), (2, 0.9), (3, 0.1), (4, 0.1)] {
            tx.try_send(PartEvent::Captured(part(id))).unwrap();
            let frame = views.lend(opencv::core::Mat::default(), 1).expect("room");
            tx.try_send(PartEvent::Inspected(inspected(part(id), ng).with_image(Some(frame)))).unwrap();
        }
        tx.try_send(PartEvent::Captured(part(5))).unwrap();
        tx.try_send(PartEvent::Unjudged(part(5), "inspection queue full".into())).unwrap();
        drop(tx);
        for _ in 0..5 {
            results.recv().await.unwrap();
        }
        run.await.unwrap();
        assert_eq!(
            *keeper.asked.lock().unwrap(),
            vec![Verdict::Ok, Verdict::Ng, Verdict::Ok, Verdict::Ok],
            "one sampling question per OK part with a frame; none for the part without one"
        );
        assert_eq!(
            *keeper.kept.lock().unwrap(),
            vec![(2, Verdict::Ng, true), (3, Verdict::Ok, true)],
            "the NG part and the sampled OK part, each with its frame"
        );
        assert!(views.lend(opencv::core::Mat::default(), 1).is_some(), "every lent frame was given back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_part_that_found_the_queue_full_is_rejected() {
        let (c, rec, mut results, _stats) = controller();
        let (tx, rx) = mpsc::channel(64);
        let run = tokio::spawn(c.run(rx));
        let p = part(7);
        tx.try_send(PartEvent::Captured(p.clone())).unwrap();
        tx.try_send(PartEvent::Unjudged(p, "inspection queue full".into())).unwrap();
        drop(tx);
        let r = results.recv().await.unwrap();
        assert_eq!(r.judgement.verdict, Verdict::Error);
        run.await.unwrap();
        assert!(results.recv().await.is_none(), "one result per part, no second one from the deadline");
        assert_eq!(rec.writes().iter().filter(|w| w.1).count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_uncertain_part_follows_its_tasks_action() {
        for (action, fires) in
            [(UncertainAction::Reject, true), (UncertainAction::Pass, false), (UncertainAction::Flag, false)]
        {
            let (mut c, rec, mut results, stats) = controller();
            c.settings = Arc::new(Versions::new(settings(0.5, 0.3, 100, action)));
            let (tx, rx) = mpsc::channel(64);
            let run = tokio::spawn(c.run(rx));
            tx.try_send(PartEvent::Captured(part(1))).unwrap();
            tx.try_send(PartEvent::Inspected(inspected(part(1), 0.4))).unwrap();
            drop(tx);
            let r = results.recv().await.unwrap();
            run.await.unwrap();
            assert_eq!(r.judgement.verdict, Verdict::Uncertain, "{action:?}");
            assert_eq!(r.uncertain_action, Some(action));
            assert_eq!(r.flagged, action == UncertainAction::Flag);
            assert_eq!(rec.writes().iter().any(|w| w.1), fires, "{action:?}: gate fired?");
            assert_eq!(stats.uncertain.load(Ordering::Relaxed), 1);
            assert_eq!(stats.flagged.load(Ordering::Relaxed), u64::from(action == UncertainAction::Flag));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_applies_to_parts_announced_after_it_and_never_to_earlier_ones() {
        let (mut c, rec, mut results, _stats) = controller();
        let versions = Arc::new(Versions::new(settings(0.5, 0.3, 100, UncertainAction::Pass)));
        c.settings = versions.clone();
        let (tx, rx) = mpsc::channel(64);
        let run = tokio::spawn(c.run(rx));
        let t0 = tokio::time::Instant::now();
        let old = part(1);
        tx.try_send(PartEvent::Captured(old.clone())).unwrap();
        // The reload: a lower threshold and the gate further away, for generation 1 on.
        versions.push(1, settings(0.35, 0.2, 200, UncertainAction::Pass));
        let mut new = part(2);
        new.stamp = crate::part::control::Stamp { generation: 1, threshold: 0.35 };
        tx.try_send(PartEvent::Captured(new.clone())).unwrap();
        tx.try_send(PartEvent::Inspected(inspected(old, 0.4))).unwrap();
        tx.try_send(PartEvent::Inspected(inspected(new, 0.4))).unwrap();
        let a = results.recv().await.unwrap();
        let b = results.recv().await.unwrap();
        drop(tx);
        run.await.unwrap();
        assert_eq!((a.judgement.part.part_id, a.judgement.verdict, &*a.model), (1, Verdict::Uncertain, "m@0.5"));
        assert_eq!((b.judgement.part.part_id, b.judgement.verdict, &*b.model), (2, Verdict::Ng, "m@0.35"));
        let on: Vec<_> = rec.writes().iter().filter(|w| w.1).map(|w| w.0 - t0).collect();
        assert_eq!(on, vec![Duration::from_millis(200)], "only the new part is thrown out, at the new distance");
    }

    #[tokio::test(start_paused = true)]
    async fn a_part_older_than_every_kept_setting_is_rejected() {
        let (c, rec, mut results, _stats) = controller();
        for g in 1..=crate::part::control::KEPT_GENERATIONS as u64 {
            c.settings.push(g, settings(0.5, 0.3, 100, UncertainAction::Reject));
        }
        let (tx, rx) = mpsc::channel(64);
        let run = tokio::spawn(c.run(rx));
        let p = part(1); // generation 0: its settings are gone
        tx.try_send(PartEvent::Captured(p.clone())).unwrap();
        tx.try_send(PartEvent::Inspected(inspected(p, 0.0))).unwrap();
        let r = results.recv().await.unwrap();
        drop(tx);
        run.await.unwrap();
        assert_eq!(r.judgement.verdict, Verdict::Error);
        assert!(r.judgement.error.unwrap().contains("replaced by reloads"));
        assert_eq!(rec.writes().iter().filter(|w| w.1).count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_result_block_that_takes_nothing_costs_counted_verdicts_not_a_wait() {
        let (mut c, _rec, mut results, _stats) = controller();
        let (block, _stuck) = mpsc::channel(1);
        let hs = Arc::new(HandshakeStats::default());
        c.handshake = Some((block, hs.clone()));
        let (tx, rx) = mpsc::channel(64);
        let run = tokio::spawn(c.run(rx));
        for id in 1..=3 {
            tx.try_send(PartEvent::Captured(part(id))).unwrap();
            tx.try_send(PartEvent::Inspected(inspected(part(id), 0.1))).unwrap();
        }
        for _ in 1..=3 {
            assert_eq!(results.recv().await.unwrap().judgement.verdict, Verdict::Ok, "every part judged");
        }
        drop(tx);
        run.await.unwrap();
        assert_eq!(hs.lost.load(Ordering::Relaxed), 2, "one verdict fits the block's queue; two are lost, counted");
    }
}
