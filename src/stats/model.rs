//! What one model's inference worker did.

use std::sync::atomic::AtomicU64;

/// What one model's inference worker did.
#[derive(Debug, Default)]
pub struct ModelStats {
    /// Inference calls (batches).
    pub calls: AtomicU64,
    /// Frames judged in them.
    pub frames: AtomicU64,
    /// The most frames one call held.
    pub largest_batch: AtomicU64,
    pub provider: std::sync::OnceLock<&'static str>,
    pub threads: AtomicU64,
    /// Frames offered to a candidate in shadow mode, and skipped for want of room.
    pub shadow: std::sync::Arc<super::TapStats>,
}
