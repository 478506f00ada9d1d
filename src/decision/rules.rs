//! The verdict rule for classifiers: pure, so it is tested without a model.

use super::Verdict;

/// Turns class probabilities into a verdict.
#[derive(Debug, Clone)]
pub struct ClassifierRule {
    /// `ok[i]` is true when class `i` means a good part.
    pub ok: Vec<bool>,
    /// NG when the NG probability reaches this.
    pub ng_threshold: f32,
}

impl ClassifierRule {
    /// Returns the verdict and the NG probability. Anything that is not a
    /// proper probability vector is ERROR: a model that emits NaN must not
    /// pass parts.
    pub fn judge(&self, probs: &[f32]) -> (Verdict, f32) {
        if probs.len() != self.ok.len() || probs.iter().any(|p| !p.is_finite() || *p < -1e-4 || *p > 1.0 + 1e-4) {
            return (Verdict::Error, f32::NAN);
        }
        let ok: f32 = probs.iter().zip(&self.ok).filter(|(_, ok)| **ok).map(|(p, _)| *p).sum();
        let ng = (1.0 - ok).clamp(0.0, 1.0);
        let verdict = if ng >= self.ng_threshold { Verdict::Ng } else { Verdict::Ok };
        (verdict, ng)
    }
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(t: f32) -> ClassifierRule {
        ClassifierRule { ok: vec![true, false, false], ng_threshold: t }
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
    fn softmax_is_stable_for_large_logits() {
        let p = softmax(&[1000.0, 0.0, -1000.0]);
        assert!((p[0] - 1.0).abs() < 1e-6 && p.iter().all(|x| x.is_finite()));
        let s: f32 = softmax(&[0.3, -1.2, 2.0]).iter().sum();
        assert!((s - 1.0).abs() < 1e-6);
    }
}
