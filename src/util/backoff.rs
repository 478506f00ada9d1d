//! Reconnect delays: exponential from a first delay to a cap, with jitter.
//!
//! One implementation for everything linesight reconnects to: the MQTT
//! brokers, Modbus devices, cameras. The delay doubles after each failure so
//! that a dead peer is not hammered, stops growing at a cap so that service
//! resumes soon after the peer returns, and is spread by ± jitter so that many
//! nodes (or many links of one node) do not retry in lockstep after an outage.
//!
//! The jitter comes from a small generator seeded per `Backoff` (from the
//! clock and a counter); tests pass a seed with [`Backoff::with_seed`] and
//! get the same delays every run. No `rand` needed: nothing here is secret.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Exponential backoff with ± jitter. [`delay`](Backoff::delay) gives the
/// wait before the next attempt and advances; [`reset`](Backoff::reset)
/// starts over after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    /// The next delay before jitter.
    next: Duration,
    /// Delays are spread over `next * (1 ± jitter)`.
    jitter: f64,
    /// State of the jitter generator (SplitMix64).
    state: u64,
}

impl Backoff {
    /// The jitter of [`Backoff::new`]: ±25 % of the delay.
    pub const JITTER: f64 = 0.25;

    /// Delays from `first`, doubling up to `cap`, each spread by ±25 %.
    pub fn new(first: Duration, cap: Duration) -> Self {
        Self::with_seed(first, cap, fresh_seed())
    }

    /// As [`Backoff::new`], with the jitter generator seeded by `seed`: the
    /// same seed gives the same delays (for tests).
    pub fn with_seed(first: Duration, cap: Duration, seed: u64) -> Self {
        Backoff { first, cap: cap.max(first), next: first, jitter: Self::JITTER, state: seed }
    }

    /// The same backoff with delays spread by ±`fraction` (clamped to 0..=1;
    /// 0 gives plain doubling).
    pub fn with_jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_nan() { 0.0 } else { fraction.clamp(0.0, 1.0) };
        self
    }

    /// The next delay before jitter (what [`delay`](Backoff::delay) spreads).
    pub fn current(&self) -> Duration {
        self.next
    }

    /// The wait before the next attempt; the one after it is twice as long (up to the cap).
    pub fn delay(&mut self) -> Duration {
        let spread = 1.0 - self.jitter + 2.0 * self.jitter * self.unit();
        let d = self.next.mul_f64(spread);
        self.next = (self.next * 2).min(self.cap);
        d
    }

    /// Start over from the first delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// A number in [0, 1) from the generator (SplitMix64, top 53 bits).
    fn unit(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A seed that differs between processes (clock, process id) and between
/// backoffs made in the same instant (a counter), so that the links of one
/// node created together do not share their jitter.
fn fresh_seed() -> u64 {
    static MADE: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.as_nanos() as u64).unwrap_or(0);
    let count = MADE.fetch_add(1, Ordering::Relaxed);
    nanos ^ (u64::from(std::process::id()) << 32) ^ count.wrapping_mul(0xD1B5_4A32_D192_ED03)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn without_jitter_it_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::with_seed(ms(100), ms(1000), 7).with_jitter(0.0);
        let got: Vec<Duration> = (0..6).map(|_| b.delay()).collect();
        assert_eq!(got, [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]);
        assert_eq!(b.current(), ms(1000));
        b.reset();
        assert_eq!(b.current(), ms(100));
        assert_eq!(b.delay(), ms(100));
    }

    #[test]
    fn jitter_stays_within_its_bounds_around_the_doubling_delay() {
        for seed in 0..200 {
            let mut b = Backoff::with_seed(ms(250), Duration::from_secs(4), seed);
            for _ in 0..10 {
                let base = b.current();
                let d = b.delay();
                assert!(d >= base.mul_f64(0.75) && d < base.mul_f64(1.25), "seed {seed}: {d:?} around {base:?}");
            }
            assert_eq!(b.current(), Duration::from_secs(4), "capped");
        }
    }

    #[test]
    fn jitter_is_spread_and_the_seed_decides_it() {
        let firsts: Vec<Duration> =
            (0..1000).map(|seed| Backoff::with_seed(ms(1000), ms(1000), seed).delay()).collect();
        let (lo, hi) = (firsts.iter().min().unwrap(), firsts.iter().max().unwrap());
        assert!(*lo < ms(800) && *hi > ms(1200), "spread over most of ±25 %: {lo:?}..{hi:?}");
        let run = |seed| {
            let mut b = Backoff::with_seed(ms(100), ms(5000), seed);
            (0..8).map(|_| b.delay()).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42), "the same seed, the same delays");
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn fresh_backoffs_do_not_share_their_jitter() {
        let a: Vec<Duration> = {
            let mut b = Backoff::new(ms(1000), ms(1000));
            (0..4).map(|_| b.delay()).collect()
        };
        let b: Vec<Duration> = {
            let mut b = Backoff::new(ms(1000), ms(1000));
            (0..4).map(|_| b.delay()).collect()
        };
        assert_ne!(a, b);
    }

    #[test]
    fn a_cap_below_the_first_delay_is_the_first_delay() {
        let mut b = Backoff::with_seed(ms(500), ms(100), 1).with_jitter(0.0);
        assert_eq!((b.delay(), b.delay()), (ms(500), ms(500)));
    }
}
