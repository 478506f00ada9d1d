//! Small helpers every layer may use: time formatting, backoff, percentiles, private files, log
//! throttling, the busy mark of the liveness watch, hex, a greatest common divisor.
//!
//! A ground module: it imports nothing of the crate, so any layer may import it.

pub mod backoff;
pub mod busy;
pub mod hex;
pub mod percentiles;
pub mod private_fs;
pub mod throttle;
pub mod time;

/// The greatest common divisor (`gcd(0, 0)` is 0).
pub fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gcd_of_pairs() {
        assert_eq!(super::gcd(30000, 1001), 1);
        assert_eq!(super::gcd(12500, 1000), 500);
        assert_eq!(super::gcd(4, 6), 2);
        assert_eq!(super::gcd(4, 0), 4);
        assert_eq!(super::gcd(0, 0), 0);
    }
}
