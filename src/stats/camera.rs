//! What a camera's capture thread counts, and its state, read by telemetry
//! and the supervisor.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use crate::util::time::monotonic_ms;

/// Camera state as telemetry reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CameraStatus {
    Connecting = 0,
    Online = 1,
    Offline = 2,
    /// A file or folder reached its end.
    Ended = 3,
    /// Connected, but no new frame for `stall_frames` frame intervals, or the
    /// same frame `stall_frames` times in a row (a frozen stream).
    Stalled = 4,
}

impl CameraStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CameraStatus::Connecting => "connecting",
            CameraStatus::Online => "online",
            CameraStatus::Offline => "offline",
            CameraStatus::Ended => "ended",
            CameraStatus::Stalled => "stalled",
        }
    }
}

/// Counters the capture thread owns and telemetry reads.
#[derive(Debug, Default)]
pub struct CameraStats {
    pub frames_in: AtomicU64,
    /// Free-running frames displaced by newer ones before inspection.
    pub dropped: AtomicU64,
    /// Part frames that found the queue full (their parts got ERROR).
    pub refused: AtomicU64,
    pub reconnects: AtomicU64,
    /// Times a reload changed the camera's settings (its source opened again with them).
    pub reconfigured: AtomicU64,
    /// Frames identical to the one before (not inspected: not a fresh image).
    pub repeated: AtomicU64,
    /// The source's frames are decoded at 1/this per side (1: full size; see `part::fit`).
    pub decode_scale: AtomicU64,
    status: AtomicU8,
    /// When the last new (not repeated) frame arrived, in ms on [`monotonic_ms`].
    last_new_ms: AtomicU64,
    /// No new frame for longer than this is a stall; 0 when the frame interval is unknown.
    stall_after_ms: AtomicU64,
    /// The same frame came `stall_frames` times in a row.
    frozen: AtomicBool,
}

impl CameraStats {
    /// The state now. `Stalled` is computed here, on every read, so that a
    /// capture thread stuck inside a driver call is still seen as stalled.
    pub fn status(&self) -> CameraStatus {
        match self.status.load(Ordering::Relaxed) {
            1 => {
                let limit = self.stall_after_ms.load(Ordering::Relaxed);
                let silent = monotonic_ms().saturating_sub(self.last_new_ms.load(Ordering::Relaxed));
                if self.frozen.load(Ordering::Relaxed) || (limit > 0 && silent > limit) {
                    CameraStatus::Stalled
                } else {
                    CameraStatus::Online
                }
            }
            2 => CameraStatus::Offline,
            3 => CameraStatus::Ended,
            _ => CameraStatus::Connecting,
        }
    }
    /// No new frame for longer than `ms` is a stall (the capture thread learns the frame interval).
    pub fn set_stall_after_ms(&self, ms: u64) {
        self.stall_after_ms.store(ms, Ordering::Relaxed);
    }

    /// The same frame came `stall_frames` times in a row (or stopped doing so); returns the previous value.
    pub fn set_frozen(&self, frozen: bool) -> bool {
        self.frozen.swap(frozen, Ordering::Relaxed)
    }

    /// A new (not repeated) frame arrived now.
    pub fn mark_new_frame(&self) {
        self.last_new_ms.store(monotonic_ms(), Ordering::Relaxed);
    }

    /// Set by the capture thread, the state's one writer.
    pub fn set_status(&self, s: CameraStatus) {
        if s == CameraStatus::Online {
            self.last_new_ms.store(monotonic_ms(), Ordering::Relaxed);
            self.frozen.store(false, Ordering::Relaxed);
        }
        self.status.store(s as u8, Ordering::Relaxed);
    }
}
