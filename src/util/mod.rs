//! Small helpers every layer may use: time formatting, backoff, percentiles, private files, log
//! throttling, the busy mark of the liveness watch, hex.
//!
//! A ground module: it imports nothing of the crate, so any layer may import it.

pub mod backoff;
pub mod busy;
pub mod hex;
pub mod percentiles;
pub mod private_fs;
pub mod throttle;
pub mod time;
