//! Verdict rules: pure functions from a model's output to a verdict, so
//! they are tested without a model. One [`Rule`] per task (tasks that share
//! a model each keep their own zones, thresholds and uncertain band).

use super::Band;
use crate::part::output::ScoreFloor;
use crate::part::{Inspection, Judgement, ModelOutput, Verdict};

/// How one task turns a model's output into its verdict.
#[derive(Debug, Clone)]
pub enum Rule {
    Classifier(ClassifierRule),
    Detector(DetectionRule),
    /// The anomaly score against the task's threshold, with an optional uncertain band.
    Anomaly {
        band: Option<Band>,
    },
}

impl Rule {
    /// The lowest score this task needs the model to report (detectors filter by it).
    pub fn score_floor(&self) -> ScoreFloor {
        match self {
            Rule::Classifier(_) | Rule::Anomaly { .. } => ScoreFloor::All,
            Rule::Detector(r) => ScoreFloor::Threshold { band_from: r.band.map(|b| b.from) },
        }
    }

    /// The verdict on one inspected frame, against the threshold it was inferred with.
    pub fn judge(&self, i: Inspection) -> Judgement {
        let mut j = Judgement::error(i.part, String::new());
        match i.output {
            Ok(out) => {
                self.apply(out, i.threshold, &mut j);
                j.preprocess_ms = i.preprocess_ms;
                j.inference_ms = i.inference_ms;
            }
            Err(why) => j.error = Some(why),
        }
        j
    }

    fn apply(&self, out: ModelOutput, threshold: f32, j: &mut Judgement) {
        j.error = None;
        match (self, out) {
            (Rule::Classifier(rule), ModelOutput::Probs(probs)) => {
                let (verdict, ng) = rule.judge_at(&probs, threshold);
                j.verdict = verdict;
                j.ng_score = ng;
                j.top_class = probs.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0);
                if verdict == Verdict::Error {
                    j.error = Some(format!("the model returned unusable scores {probs:?}"));
                }
                j.scores = probs;
            }
            (Rule::Detector(rule), ModelOutput::Detections(dets)) => {
                let raw: Vec<(usize, f32, [f32; 4])> = dets.iter().map(|d| (d.class_id, d.score, d.bbox)).collect();
                let (verdict, ng, kept) = rule.judge(&raw, threshold);
                j.verdict = verdict;
                j.ng_score = ng;
                j.top_class = kept.first().map_or(0, |&i| dets[i].class_id);
                j.detections = kept.into_iter().map(|i| dets[i].clone()).collect();
            }
            (Rule::Anomaly { band }, ModelOutput::Anomaly(a)) => {
                j.verdict = Band::verdict(*band, a.score, threshold);
                j.ng_score = a.score;
                j.scores = vec![a.score];
                j.heat = a.map;
                if j.verdict == Verdict::Error {
                    j.error = Some(format!("the model returned an unusable anomaly score {}", a.score));
                }
            }
            (_, out) => {
                j.verdict = Verdict::Error;
                j.error = Some(format!("the model's output does not fit the task's rule: {out:?}"));
            }
        }
    }
}

/// Turns class probabilities into a verdict.
#[derive(Debug, Clone)]
pub struct ClassifierRule {
    /// `ok[i]` is true when class `i` means a good part.
    pub ok: Vec<bool>,
    /// NG when the NG probability reaches this.
    pub ng_threshold: f32,
    /// UNCERTAIN between `band.from` and the threshold.
    pub band: Option<Band>,
}

impl ClassifierRule {
    /// Returns the verdict and the NG probability. Anything that is not a
    /// proper probability vector is ERROR: a model that emits NaN must not
    /// pass parts.
    pub fn judge(&self, probs: &[f32]) -> (Verdict, f32) {
        self.judge_at(probs, self.ng_threshold)
    }

    /// The same, against `threshold` instead of the rule's own (a command may have changed it).
    pub fn judge_at(&self, probs: &[f32], threshold: f32) -> (Verdict, f32) {
        if probs.len() != self.ok.len() || probs.iter().any(|p| !p.is_finite() || *p < -1e-4 || *p > 1.0 + 1e-4) {
            return (Verdict::Error, f32::NAN);
        }
        let ok: f32 = probs.iter().zip(&self.ok).filter(|(_, ok)| **ok).map(|(p, _)| *p).sum();
        let ng = (1.0 - ok).clamp(0.0, 1.0);
        (Band::verdict(self.band, ng, threshold), ng)
    }
}

/// The verdict rule for detectors: a part is NG when one detection counts.
/// A detection counts when its score reaches its class's minimum confidence,
/// its box is at least `min_area` square pixels, and its centre lies in the
/// region of interest (when one is set): what the plant agreed is a defect.
#[derive(Debug, Clone)]
pub struct DetectionRule {
    /// Minimum confidence per class (class id order).
    pub class_min: Vec<f32>,
    pub min_area: f32,
    /// `[x1, y1, x2, y2]` in image pixels.
    pub roi: Option<[f32; 4]>,
    /// Polygons in image pixels; when any, a box counts only with its centre in one of them.
    pub zones: Vec<Vec<[f32; 2]>>,
    /// UNCERTAIN when no detection counts at the threshold but one counts from `band.from` on.
    pub band: Option<Band>,
}

/// Even-odd rule: whether `(x, y)` lies inside the polygon.
fn in_polygon(poly: &[[f32; 2]], x: f32, y: f32) -> bool {
    let mut inside = false;
    let mut j = poly.len().wrapping_sub(1);
    for i in 0..poly.len() {
        let ([xi, yi], [xj, yj]) = (poly[i], poly[j]);
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

impl DetectionRule {
    /// Whether one detection counts; `floor` raises every class's minimum (the task's threshold).
    pub fn counts(&self, class: usize, score: f32, b: &[f32; 4], floor: f32) -> bool {
        let min = self.class_min.get(class).map_or(f32::INFINITY, |m| m.max(floor));
        let area = (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0);
        let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
        let inside = self.roi.is_none_or_inside(cx, cy)
            && (self.zones.is_empty() || self.zones.iter().any(|z| in_polygon(z, cx, cy)));
        score.is_finite() && score >= min && area >= self.min_area && inside
    }

    /// The verdict, the NG score (the best counting detection's score, 0 for none) and the
    /// indices of the detections that count. With a band, a part with no detection that counts
    /// at `floor` but one that would count at `band.from` is UNCERTAIN, and those are returned.
    pub fn judge(&self, dets: &[(usize, f32, [f32; 4])], floor: f32) -> (Verdict, f32, Vec<usize>) {
        let kept_at = |floor: f32| -> Vec<usize> {
            dets.iter().enumerate().filter(|(_, (c, s, b))| self.counts(*c, *s, b, floor)).map(|(i, _)| i).collect()
        };
        let best = |kept: &[usize]| kept.iter().map(|&i| dets[i].1).fold(0.0_f32, f32::max);
        let kept = kept_at(floor);
        if !kept.is_empty() {
            return (Verdict::Ng, best(&kept), kept);
        }
        match self.band.map(|b| kept_at(b.from.min(floor))) {
            Some(doubtful) if !doubtful.is_empty() => (Verdict::Uncertain, best(&doubtful), doubtful),
            _ => (Verdict::Ok, 0.0, kept),
        }
    }
}

trait Roi {
    fn is_none_or_inside(&self, x: f32, y: f32) -> bool;
}

impl Roi for Option<[f32; 4]> {
    fn is_none_or_inside(&self, x: f32, y: f32) -> bool {
        match self {
            None => true,
            Some(r) => x >= r[0] && x <= r[2] && y >= r[1] && y <= r[3],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(t: f32) -> ClassifierRule {
        ClassifierRule { ok: vec![true, false, false], ng_threshold: t, band: None }
    }

    #[test]
    fn threshold_is_inclusive_and_sums_defect_classes() {
        assert_eq!(rule(0.5).judge(&[0.6, 0.2, 0.2]).0, Verdict::Ok);
        assert_eq!(rule(0.5).judge(&[0.5, 0.3, 0.2]).0, Verdict::Ng);
        // No single defect class reaches the threshold, their sum does.
        assert_eq!(rule(0.5).judge(&[0.4, 0.3, 0.3]).0, Verdict::Ng);
    }

    #[test]
    fn garbage_is_error_never_ok() {
        assert_eq!(rule(0.5).judge(&[f32::NAN, 0.0, 0.0]).0, Verdict::Error);
        assert_eq!(rule(0.5).judge(&[1.0, 0.0]).0, Verdict::Error);
        assert_eq!(rule(0.5).judge(&[3.0, 0.0, 0.0]).0, Verdict::Error);
    }

    #[test]
    fn a_detection_counts_by_class_confidence_area_and_region() {
        let rule = DetectionRule {
            class_min: vec![0.5, 0.8],
            min_area: 100.0,
            roi: Some([0.0, 0.0, 200.0, 200.0]),
            zones: vec![],
            band: None,
        };
        let d = |c, s, b| (c, s, b);
        assert_eq!(rule.judge(&[], 0.0).0, Verdict::Ok);
        let (v, ng, kept) =
            rule.judge(&[d(0, 0.6, [10.0, 10.0, 30.0, 30.0]), d(1, 0.7, [10.0, 10.0, 30.0, 30.0])], 0.0);
        assert_eq!((v, kept), (Verdict::Ng, vec![0]), "class 1 needs 0.8");
        assert_eq!(ng, 0.6);
        assert_eq!(
            rule.judge(&[d(0, 0.9, [10.0, 10.0, 15.0, 15.0])], 0.0).0,
            Verdict::Ok,
            "25 px² is below the minimum area"
        );
        assert_eq!(rule.judge(&[d(0, 0.9, [300.0, 10.0, 330.0, 40.0])], 0.0).0, Verdict::Ok, "outside the region");
        assert_eq!(
            rule.judge(&[d(5, 0.99, [10.0, 10.0, 30.0, 30.0])], 0.0).0,
            Verdict::Ok,
            "unknown class never counts"
        );
        assert_eq!(rule.judge(&[d(0, f32::NAN, [10.0, 10.0, 30.0, 30.0])], 0.0).0, Verdict::Ok);
    }

    #[test]
    fn zones_are_polygons_and_a_box_counts_by_its_centre() {
        // An L-shaped zone: the square 0..100 without its top-right quarter.
        let l = vec![[0.0, 0.0], [50.0, 0.0], [50.0, 50.0], [100.0, 50.0], [100.0, 100.0], [0.0, 100.0]];
        let rule = DetectionRule { class_min: vec![0.5], min_area: 0.0, roi: None, zones: vec![l], band: None };
        assert_eq!(rule.judge(&[(0, 0.9, [10.0, 10.0, 20.0, 20.0])], 0.0).0, Verdict::Ng);
        assert_eq!(rule.judge(&[(0, 0.9, [70.0, 10.0, 80.0, 20.0])], 0.0).0, Verdict::Ok, "the cut-out corner");
        assert_eq!(rule.judge(&[(0, 0.9, [70.0, 70.0, 80.0, 80.0])], 0.0).0, Verdict::Ng);
        assert_eq!(rule.judge(&[(0, 0.9, [170.0, 70.0, 180.0, 80.0])], 0.0).0, Verdict::Ok);
    }

    #[test]
    fn the_uncertain_band_lies_below_the_threshold() {
        let band = Some(Band { from: 0.3 });
        let r = ClassifierRule { band, ..rule(0.6) };
        assert_eq!(r.judge(&[0.75, 0.25, 0.0]).0, Verdict::Ok);
        assert_eq!(r.judge(&[0.7, 0.3, 0.0]).0, Verdict::Uncertain, "the band's lower edge is inclusive");
        assert_eq!(r.judge(&[0.41, 0.59, 0.0]).0, Verdict::Uncertain);
        assert_eq!(r.judge(&[0.4, 0.3, 0.3]).0, Verdict::Ng, "the threshold wins over the band");
        assert_eq!(r.judge(&[f32::NAN, 0.5, 0.0]).0, Verdict::Error);
        // A band that starts at or above the threshold is empty.
        assert_eq!(
            ClassifierRule { band: Some(Band { from: 0.7 }), ..rule(0.6) }.judge(&[0.35, 0.65, 0.0]).0,
            Verdict::Ng
        );

        let d = DetectionRule { class_min: vec![0.0, 0.8], min_area: 0.0, roi: None, zones: vec![], band };
        let b = [10.0, 10.0, 30.0, 30.0];
        let (v, ng, kept) = d.judge(&[(0, 0.35, b), (0, 0.2, b)], 0.5);
        assert_eq!((v, ng, kept), (Verdict::Uncertain, 0.35, vec![0]));
        assert_eq!(d.judge(&[(0, 0.35, b), (0, 0.55, b)], 0.5).0, Verdict::Ng);
        assert_eq!(d.judge(&[(0, 0.25, b)], 0.5).0, Verdict::Ok);
        assert_eq!(d.judge(&[(1, 0.7, b)], 0.5).0, Verdict::Ok, "a class minimum above the band still holds");
        assert_eq!(DetectionRule { band: None, ..d }.judge(&[(0, 0.35, b)], 0.5).0, Verdict::Ok);
    }
}
