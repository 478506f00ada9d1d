//! Small helpers every layer may use: time formatting, percentiles, backoff.
//! Imports nothing of the crate.

pub mod percentiles;
pub mod time;
