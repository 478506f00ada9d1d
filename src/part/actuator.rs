//! The output a reject gate drives, as a small trait.
//!
//! Decision times pulses but does no I/O: it holds an `Arc<dyn Actuator>`.
//! `modbus` implements it for a declared output (rate-limited, written and
//! acknowledged by the device); tests use [`Recording`], which keeps every
//! write with its time on tokio's (paused) clock.

use std::future::Future;
use std::pin::Pin;

/// What a write returns: done, or why not (the device refused, the link broke).
pub type Written<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// An on/off output.
pub trait Actuator: Send + Sync + 'static {
    /// The output's name in the config, for logs.
    fn name(&self) -> &str;
    /// Drive the output on or off; resolves when the device acknowledged the write.
    fn set(&self, on: bool) -> Written<'_>;
    /// How long before its effect is due a write should be sent: the typical time from the call
    /// to the device acting on it, as measured on the last writes. The reject gate sends each
    /// "on" this much early, so that it reaches the device when the part reaches the gate.
    fn lead(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// A test double: records every write on tokio's clock, and fails them on demand.
#[cfg(test)]
pub mod testing {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use tokio::time::Instant;

    use super::{Actuator, Written};

    #[derive(Default)]
    pub struct Recording {
        writes: Mutex<Vec<(Instant, bool)>>,
        /// While set, every write fails (a broken link).
        pub fail: AtomicBool,
    }

    impl Recording {
        pub fn new() -> Arc<Self> {
            Arc::new(Self::default())
        }

        /// Every accepted write: when, and on or off.
        pub fn writes(&self) -> Vec<(Instant, bool)> {
            self.writes.lock().unwrap().clone()
        }
    }

    impl Actuator for Recording {
        fn name(&self) -> &str {
            "gate"
        }

        fn set(&self, on: bool) -> Written<'_> {
            Box::pin(async move {
                if self.fail.load(Ordering::Relaxed) {
                    return Err("simulated link failure".to_string());
                }
                self.writes.lock().unwrap().push((Instant::now(), on));
                Ok(())
            })
        }
    }
}
