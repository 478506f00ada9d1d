//! Shadow mode, the app's half: start a candidate beside a model's production worker (see
//! [`crate::inference::shadow`]), judge what it says with each task's rules, and compare it
//! with the production verdict of the same part.
//!
//! The two verdicts of one part arrive in either order (the shadow is behind production under
//! load, or ahead when production waits for a batch): whichever comes first waits in
//! [`Matcher`] for the other, a bounded number of parts deep. Parts the shadow skipped never
//! get a candidate verdict; their production side is evicted when the table is full.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::config::ModelConfig;
use crate::decision::rules::Rule;
use crate::inference::shadow::{self, ShadowOutput, Tap};
use crate::part::{Inspection, Judgement, PartResult};
use crate::stats::TaskStats;

/// Parts whose one verdict waits for the other.
const PENDING: usize = 4096;
/// Frames waiting for a shadow: a few, so a slow candidate skips frames rather than queueing.
pub const DEFAULT_QUEUE: usize = 2;

/// A candidate's way of judging one task's parts.
pub struct CandidateRule {
    pub rule: Rule,
    pub threshold: f32,
    /// `name@version` of the candidate.
    pub label: Arc<str>,
    pub classes: Arc<[String]>,
}

/// A disagreement, for the evidence capture.
pub struct Disagreement {
    pub task: Arc<str>,
    pub production: PartResult,
    pub candidate: Judgement,
    pub candidate_label: Arc<str>,
    pub image: opencv::core::Mat,
    pub scale: u32,
}

type Key = (Arc<str>, u64);

enum Side {
    Production(PartResult),
    Candidate(ShadowOutput, Judgement, Arc<str>),
}

/// Pairs the two verdicts of one part. One per node, shared by the result forwarder
/// (production) and the shadow comparator thread (candidates).
pub struct Matcher {
    /// Per task: the candidate shadowed now (absent: no shadow for this task).
    rules: Mutex<BTreeMap<String, Arc<CandidateRule>>>,
    pending: Mutex<(BTreeMap<Key, Side>, VecDeque<Key>)>,
    stats: BTreeMap<String, Arc<TaskStats>>,
    /// Where disagreements go (the evidence capture).
    on_disagreement: Box<dyn Fn(Disagreement) + Send + Sync>,
}

impl Matcher {
    pub fn new(
        stats: BTreeMap<String, Arc<TaskStats>>,
        on_disagreement: Box<dyn Fn(Disagreement) + Send + Sync>,
    ) -> Matcher {
        Matcher { rules: Mutex::default(), pending: Mutex::default(), stats, on_disagreement }
    }

    /// Start comparing `task`'s parts with a candidate (a fresh table).
    pub fn begin(&self, task: &str, rule: CandidateRule) {
        if let Some(s) = self.stats.get(task) {
            s.shadow.begin(&rule.label);
        }
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).insert(task.to_string(), Arc::new(rule));
    }

    /// Stop comparing `task`'s parts; what waits is dropped.
    pub fn end(&self, task: &str) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).remove(task);
        if let Some(s) = self.stats.get(task) {
            s.shadow.end();
        }
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *p;
        map.retain(|(t, _), _| &**t != task);
        order.retain(|(t, _)| &**t != task);
    }

    fn rule(&self, task: &str) -> Option<Arc<CandidateRule>> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).get(task).cloned()
    }

    /// A production verdict (every result passes here; only shadowed tasks' are kept).
    pub fn production(&self, result: &PartResult) {
        if self.rule(&result.task).is_none() {
            return;
        }
        let key = (result.task.clone(), result.judgement.part.part_id);
        self.meet(key, Side::Production(result.clone()));
    }

    /// What the candidate said about a part: judged with the task's candidate rule.
    pub fn candidate(&self, out: ShadowOutput) {
        let Some(rule) = self.rule(&out.task) else { return };
        let inspection = Inspection {
            part: out.part.clone(),
            output: out.output.clone(),
            threshold: rule.threshold,
            preprocess_ms: 0.0,
            inference_ms: out.inference_ms,
            image: None,
        };
        let judgement = rule.rule.judge(inspection);
        let key = (out.task.clone(), out.part.part_id);
        self.meet(key, Side::Candidate(out, judgement, rule.label.clone()));
    }

    fn meet(&self, key: Key, side: Side) {
        let other = {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let (map, order) = &mut *p;
            match map.remove(&key) {
                Some(other) => other,
                None => {
                    map.insert(key.clone(), side);
                    order.push_back(key);
                    while map.len() > PENDING {
                        match order.pop_front() {
                            Some(old) => {
                                map.remove(&old);
                            }
                            None => break,
                        }
                    }
                    return;
                }
            }
        };
        let (production, (out, candidate, label)) = match (side, other) {
            (Side::Production(p), Side::Candidate(o, j, l)) | (Side::Candidate(o, j, l), Side::Production(p)) => {
                (p, (o, j, l))
            }
            // The same part twice from one side (a restarted camera's ids): keep the newer.
            (side, _) => {
                let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                p.0.insert(key, side);
                return;
            }
        };
        let Some(stats) = self.stats.get(&*key.0) else { return };
        let agreement = stats.shadow.record(
            (production.judgement.verdict, production.judgement.ng_score),
            (candidate.verdict, candidate.ng_score),
        );
        if agreement.disagrees() {
            tracing::debug!(task = %key.0, part = key.1, production = production.judgement.verdict.as_str(), candidate = candidate.verdict.as_str(), "shadow disagrees");
            (self.on_disagreement)(Disagreement {
                task: key.0,
                production,
                candidate,
                candidate_label: label,
                image: out.image,
                scale: out.scale,
            });
        }
    }
}

/// A candidate running beside one model's production worker.
pub struct Running {
    pub label: Arc<str>,
    pub version: u64,
    pub tasks: Vec<String>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Start `cfg` as the shadow of the model whose worker offers frames to `tap`, judged for each
/// of `rules`' tasks. Returns once the candidate is loaded and attached.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    model: &str,
    cfg: &ModelConfig,
    version: u64,
    label: Arc<str>,
    rules: Vec<(String, CandidateRule)>,
    env: &'static ort::environment::Environment,
    tap: Arc<Tap>,
    matcher: Arc<Matcher>,
    outputs: flume::Sender<ShadowOutput>,
    queue: usize,
) -> Result<Running, String> {
    let conf = rules.iter().map(|(_, r)| r.rule.score_floor().at(r.threshold)).fold(1.0_f32, f32::min);
    let tasks: Vec<String> = rules.iter().map(|(t, _)| t.clone()).collect();
    for (task, rule) in rules {
        matcher.begin(&task, rule);
    }
    let (model_name, cfg2) = (model.to_string(), cfg.clone());
    let started =
        tokio::task::spawn_blocking(move || shadow::start(&model_name, &cfg2, env, &tap, queue, conf, outputs))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
    match started {
        Ok(thread) => {
            tracing::info!(target: "linesight::audit", model, candidate = %label, tasks = ?tasks, "shadow started: the candidate judges the same frames, never drives an output");
            Ok(Running { label, version, tasks, thread: Some(thread) })
        }
        Err(e) => {
            for t in &tasks {
                matcher.end(t);
            }
            Err(e)
        }
    }
}

impl Running {
    /// Detach from the tap and end the comparison; the thread finishes what it holds.
    pub fn stop(mut self, tap: &Tap, matcher: &Matcher) {
        tap.detach();
        for t in &self.tasks {
            matcher.end(t);
        }
        if let Some(t) = self.thread.take() {
            // Not joined on the runtime: it may be in the middle of an inference.
            std::thread::spawn(move || {
                let _ = t.join();
            });
        }
    }
}

/// The comparator: what every shadow said, judged and matched, on a thread of its own (judging
/// is cheap, but a detector's rule over many boxes is not nothing, and none of it belongs on
/// the async runtime).
pub fn spawn_comparator(
    rx: flume::Receiver<ShadowOutput>,
    matcher: Arc<Matcher>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("shadow-compare".into()).spawn(move || {
        while let Ok(out) = rx.recv() {
            matcher.candidate(out);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::rules::ClassifierRule;
    use crate::part::{ModelOutput, PartInfo, Verdict};
    use opencv::core::Mat;

    fn part(id: u64) -> PartInfo {
        PartInfo::for_test("top", id)
    }

    fn result(id: u64, verdict: Verdict, ng: f32) -> PartResult {
        let mut j = Judgement::error(part(id), String::new());
        j.verdict = verdict;
        j.ng_score = ng;
        j.error = None;
        PartResult {
            task: "t".into(),
            judgement: j,
            classes: vec!["good".to_string(), "crack".to_string()].into(),
            model: "m@1".into(),
            capture_to_decision_ms: 1.0,
            capture_to_reject_ack_ms: None,
            uncertain_action: None,
            flagged: false,
            reject: None,
        }
    }

    fn shadow_out(id: u64, ng: f32) -> ShadowOutput {
        ShadowOutput {
            task: "t".into(),
            part: part(id),
            output: Ok(ModelOutput::Probs(vec![1.0 - ng, ng])),
            threshold: 0.5,
            inference_ms: 1.0,
            image: Mat::default(),
            scale: 1,
        }
    }

    #[test]
    fn verdicts_meet_in_either_order_and_disagreements_are_handed_on() {
        let stats = Arc::new(TaskStats::default());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let m = Matcher::new(
            [("t".to_string(), stats.clone())].into(),
            Box::new(move |d: Disagreement| seen2.lock().unwrap().push(d.production.judgement.part.part_id)),
        );
        m.production(&result(1, Verdict::Ok, 0.1)); // no shadow yet: ignored
        let rule = Rule::Classifier(ClassifierRule { ok: vec![true, false], ng_threshold: 0.5, band: None });
        m.begin("t", CandidateRule { rule, threshold: 0.5, label: "m@2".into(), classes: vec![].into() });
        m.production(&result(2, Verdict::Ok, 0.1));
        m.candidate(shadow_out(2, 0.2)); // both OK
        m.candidate(shadow_out(3, 0.9)); // candidate first
        m.production(&result(3, Verdict::Ok, 0.1)); // candidate-only NG
        m.production(&result(4, Verdict::Ng, 0.9));
        m.candidate(shadow_out(4, 0.95)); // both NG
        let d = stats.shadow.doc().unwrap();
        assert_eq!((d["both_ok"].as_u64(), d["both_ng"].as_u64()), (Some(1), Some(1)));
        assert_eq!(d["candidate_only_ng"], 1);
        assert_eq!(*seen.lock().unwrap(), vec![3]);
        m.end("t");
        m.production(&result(5, Verdict::Ok, 0.1));
        assert!(m.pending.lock().unwrap().0.is_empty(), "no shadow: nothing waits");
    }
}
