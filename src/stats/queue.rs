//! The MQTT disk queue's figures.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Mutex;

/// The disk queue as telemetry sees it; the MQTT task owns the queue and updates these.
#[derive(Debug, Default)]
pub struct QueueStats {
    pub configured: AtomicBool,
    /// Messages stored and not yet acknowledged by the broker.
    pub waiting: AtomicU64,
    /// Messages the queue did not keep: dropped by the full-queue policy, refused by a disk that
    /// failed (or a queue directory that cannot be opened), or refused because the queue's
    /// writer was too far behind.
    pub dropped: AtomicU64,
    /// Of `dropped`, the messages sent live instead (a broker was connected): delivered, but
    /// not kept across an outage or a restart, and without a queue id.
    pub live: AtomicU64,
    /// Messages lost to damage found on disk at start or while reading.
    pub lost: AtomicU64,
    /// Why the queue cannot be used now (it names the directory and what to do); None while it works.
    pub problem: Mutex<Option<String>>,
}

impl QueueStats {
    pub fn problem(&self) -> Option<String> {
        self.problem.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
