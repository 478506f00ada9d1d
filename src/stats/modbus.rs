//! Modbus figures: each device's link state and counters (written by the
//! device's bus task) and each result block's handshake counters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A device's link as telemetry and the supervisor report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// The last request was answered.
    Connected,
    /// Up, but a request got a Modbus exception within [`REFUSING_FOR`].
    Refusing,
    /// The last request failed at the link (timeout, connection lost), or none succeeded yet.
    Down,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Connected => "connected",
            LinkState::Refusing => "refusing",
            LinkState::Down => "down",
        }
    }
}

/// Per-device link state and counters, read by telemetry.
#[derive(Debug, Default)]
pub struct DeviceStats {
    pub connected: AtomicBool,
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    /// Requests that failed because the link failed (timeout, connection lost).
    pub failures: AtomicU64,
    /// Requests the device answered with a Modbus exception.
    pub refusals: AtomicU64,
    /// The most recent error, kept after later successes so a dashboard can see what happened.
    pub last_error: Mutex<Option<String>>,
    /// When the device last refused a request.
    last_refusal: Mutex<Option<Instant>>,
}

/// A device that refused a request this recently is reported as `refusing`:
/// with other points polled every few ms, "the last request" would hide it.
pub const REFUSING_FOR: Duration = Duration::from_secs(5);

impl DeviceStats {
    pub fn state(&self) -> LinkState {
        let connected = self.connected.load(Ordering::Relaxed);
        let refusing = self.last_refusal.lock().map(|t| t.is_some_and(|t| t.elapsed() < REFUSING_FOR)).unwrap_or(false);
        match (connected, refusing) {
            (true, true) => LinkState::Refusing,
            (true, false) => LinkState::Connected,
            (false, _) => LinkState::Down,
        }
    }

    /// A link seen down after it was used: an unreachable device (a device never used has no state).
    pub fn unreachable(&self) -> bool {
        self.state() == LinkState::Down && self.failures.load(Ordering::Relaxed) > 0
    }

    /// The device answered.
    pub fn record_answer(&self) {
        self.connected.store(true, Ordering::Relaxed);
    }

    /// The device answered with a Modbus exception: the link is up, the request was refused.
    pub fn record_refusal(&self, why: String) {
        self.connected.store(true, Ordering::Relaxed);
        self.refusals.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        *self.last_refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// The link failed.
    pub fn record_failure(&self, why: String) {
        self.connected.store(false, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }
}

/// A result block's handshake counters.
#[derive(Debug, Default)]
pub struct HandshakeStats {
    pub written: AtomicU64,
    pub acknowledged: AtomicU64,
    pub lost: AtomicU64,
    pub write_failures: AtomicU64,
}
