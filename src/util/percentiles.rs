//! Nearest-rank percentiles, for latency windows and benchmarks.

use serde::Serialize;

/// p50, p99 and the maximum of a set of samples (ms), rounded to µs.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub n: usize,
}

/// Nearest-rank percentiles of `v` (sorted in place).
pub fn percentiles(v: &mut [f64]) -> Percentiles {
    if v.is_empty() {
        return Percentiles::default();
    }
    v.sort_by(f64::total_cmp);
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Percentiles { p50: round3(rank(0.50)), p99: round3(rank(0.99)), max: round3(v[v.len() - 1]), n: v.len() }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = percentiles(&mut v);
        assert_eq!((p.p50, p.p99, p.max, p.n), (50.0, 99.0, 100.0, 100));
        assert_eq!(percentiles(&mut []).n, 0);
    }
}
