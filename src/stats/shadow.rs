//! Shadow mode's figures: how often a candidate model agrees with production, per task, and
//! how many frames the shadow had no room for, per model.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::part::Verdict;

/// Frames offered to a model's shadow, and those it had no room for (skipped, never waited for).
#[derive(Debug, Default)]
pub struct TapStats {
    pub offered: AtomicU64,
    pub skipped: AtomicU64,
}

/// One task's agreement table between production and a candidate, for the candidate shadowed now.
#[derive(Debug, Default)]
pub struct ShadowStats {
    inner: Mutex<Table>,
}

#[derive(Debug, Default, Clone)]
struct Table {
    /// `name@version` of the candidate; None when no shadow runs.
    candidate: Option<String>,
    both_ok: u64,
    both_ng: u64,
    production_only_ng: u64,
    candidate_only_ng: u64,
    /// Either side UNCERTAIN or ERROR.
    other: u64,
    /// Candidate NG score minus production's, summed (and its absolute value), over `scored` parts.
    drift_sum: f64,
    drift_abs_sum: f64,
    scored: u64,
}

/// How one part's two verdicts compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agreement {
    BothOk,
    BothNg,
    ProductionOnlyNg,
    CandidateOnlyNg,
    /// UNCERTAIN or ERROR on either side, the same on both.
    OtherSame,
    /// UNCERTAIN or ERROR on either side, not the same.
    OtherDiffer,
}

impl Agreement {
    pub fn of(production: Verdict, candidate: Verdict) -> Agreement {
        match (production, candidate) {
            (Verdict::Ok, Verdict::Ok) => Agreement::BothOk,
            (Verdict::Ng, Verdict::Ng) => Agreement::BothNg,
            (Verdict::Ng, Verdict::Ok) => Agreement::ProductionOnlyNg,
            (Verdict::Ok, Verdict::Ng) => Agreement::CandidateOnlyNg,
            (a, b) if a == b => Agreement::OtherSame,
            _ => Agreement::OtherDiffer,
        }
    }

    /// Whether the two models judged the part differently (captured as evidence).
    pub fn disagrees(self) -> bool {
        matches!(self, Agreement::ProductionOnlyNg | Agreement::CandidateOnlyNg | Agreement::OtherDiffer)
    }
}

impl ShadowStats {
    /// A new candidate: its table starts empty.
    pub fn begin(&self, candidate: &str) {
        *self.lock() = Table { candidate: Some(candidate.to_string()), ..Table::default() };
    }

    /// No shadow any more (stopped, promoted or refused); the table stays readable until the next one.
    pub fn end(&self) {
        self.lock().candidate = None;
    }

    pub fn record(&self, production: (Verdict, f32), candidate: (Verdict, f32)) -> Agreement {
        let a = Agreement::of(production.0, candidate.0);
        let mut t = self.lock();
        match a {
            Agreement::BothOk => t.both_ok += 1,
            Agreement::BothNg => t.both_ng += 1,
            Agreement::ProductionOnlyNg => t.production_only_ng += 1,
            Agreement::CandidateOnlyNg => t.candidate_only_ng += 1,
            Agreement::OtherSame | Agreement::OtherDiffer => t.other += 1,
        }
        let d = f64::from(candidate.1 - production.1);
        if d.is_finite() {
            t.drift_sum += d;
            t.drift_abs_sum += d.abs();
            t.scored += 1;
        }
        a
    }

    /// The table for the stats message (None: never shadowed).
    pub fn doc(&self) -> Option<Value> {
        let t = self.lock().clone();
        if t.candidate.is_none() && t.both_ok + t.both_ng + t.production_only_ng + t.candidate_only_ng + t.other == 0 {
            return None;
        }
        let compared = t.both_ok + t.both_ng + t.production_only_ng + t.candidate_only_ng + t.other;
        let agree = t.both_ok + t.both_ng;
        let mean = |s: f64| (t.scored > 0).then(|| s / t.scored as f64);
        Some(json!({
            "candidate": t.candidate,
            "compared": compared,
            "both_ok": t.both_ok,
            "both_ng": t.both_ng,
            "production_only_ng": t.production_only_ng,
            "candidate_only_ng": t.candidate_only_ng,
            "other": t.other,
            "agreement": (compared > 0).then(|| agree as f64 / compared as f64),
            "score_drift_mean": mean(t.drift_sum),
            "score_drift_abs_mean": mean(t.drift_abs_sum),
        }))
    }

    /// (agreement label, count) pairs for `/metrics` and Sparkplug.
    pub fn counts(&self) -> [(&'static str, u64); 5] {
        let t = self.lock();
        [
            ("both_ok", t.both_ok),
            ("both_ng", t.both_ng),
            ("production_only_ng", t.production_only_ng),
            ("candidate_only_ng", t.candidate_only_ng),
            ("other", t.other),
        ]
    }

    pub fn candidate(&self) -> Option<String> {
        self.lock().candidate.clone()
    }

    /// Mean candidate-minus-production NG score.
    pub fn drift(&self) -> Option<f64> {
        let t = self.lock();
        (t.scored > 0).then(|| t.drift_sum / t.scored as f64)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TapStats {
    pub fn doc(&self) -> Value {
        json!({"offered": self.offered.load(Ordering::Relaxed), "skipped": self.skipped.load(Ordering::Relaxed)})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_counts_each_kind_of_agreement_and_the_drift() {
        let s = ShadowStats::default();
        assert!(s.doc().is_none());
        s.begin("m@2");
        assert_eq!(s.record((Verdict::Ok, 0.1), (Verdict::Ok, 0.2)), Agreement::BothOk);
        assert_eq!(s.record((Verdict::Ng, 0.9), (Verdict::Ng, 0.8)), Agreement::BothNg);
        assert_eq!(s.record((Verdict::Ng, 0.9), (Verdict::Ok, 0.3)), Agreement::ProductionOnlyNg);
        assert_eq!(s.record((Verdict::Ok, 0.2), (Verdict::Ng, 0.7)), Agreement::CandidateOnlyNg);
        assert!(s.record((Verdict::Error, f32::NAN), (Verdict::Ok, 0.1)).disagrees());
        let d = s.doc().unwrap();
        assert_eq!(d["compared"], 5);
        assert_eq!(d["production_only_ng"], 1);
        assert_eq!(d["candidate_only_ng"], 1);
        assert_eq!(d["agreement"], 0.4);
        let drift = d["score_drift_mean"].as_f64().unwrap();
        assert!((drift - (0.1 - 0.1 - 0.6 + 0.5) / 4.0).abs() < 1e-6, "{drift}");
        s.begin("m@3");
        assert_eq!(s.doc().unwrap()["compared"], 0, "a new candidate starts a new table");
    }
}
