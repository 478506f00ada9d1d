//! The MQTT disk queue's figures.

use std::sync::atomic::{AtomicBool, AtomicU64};

/// The disk queue as telemetry sees it; the MQTT task owns the queue and updates these.
#[derive(Debug, Default)]
pub struct QueueStats {
    pub configured: AtomicBool,
    /// Messages stored and not yet acknowledged by the broker.
    pub waiting: AtomicU64,
    /// Messages the full queue dropped.
    pub dropped: AtomicU64,
    /// Messages lost to damage found on disk at start or while reading.
    pub lost: AtomicU64,
}
