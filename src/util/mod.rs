//! Small helpers every layer may use: time formatting, backoff, percentiles.
//!
//! A ground module: it imports nothing of the crate, so any layer may import it.

pub mod backoff;
pub mod percentiles;
pub mod time;
