//! The task that owns one link, and the per-device handle in front of it.
//!
//! Everything that talks to a device goes through its bus task, one request
//! at a time: a serial bus allows nothing else, and many PLCs serve one
//! request per connection at a time anyway. Writes go first: a reject pulse
//! must not wait behind a sensor poll.
//!
//! [`Device`] reads anything; its write methods are visible to the `modbus`
//! module only, whose owners of declared outputs are the only writers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_modbus::{Request, Response};

use super::link::{LinkError, ModbusLink};
use crate::config::PointArea;

struct BusRequest {
    unit: u8,
    limit: Duration,
    request: Request<'static>,
    reply: oneshot::Sender<Result<Response, LinkError>>,
}

/// A handle to a bus task.
#[derive(Clone)]
pub struct Bus {
    urgent: mpsc::Sender<BusRequest>,
    routine: mpsc::Sender<BusRequest>,
}

impl Bus {
    /// Start the task that owns `link`. It ends when every handle is dropped.
    pub fn spawn<L: ModbusLink>(link: L) -> (Bus, JoinHandle<()>) {
        let (urgent, urgent_rx) = mpsc::channel(256);
        let (routine, routine_rx) = mpsc::channel(256);
        (Bus { urgent, routine }, tokio::spawn(run(link, urgent_rx, routine_rx)))
    }

    async fn call(
        &self,
        unit: u8,
        request: Request<'static>,
        limit: Duration,
        urgent: bool,
    ) -> Result<Response, LinkError> {
        let (reply, rx) = oneshot::channel();
        let queue = if urgent { &self.urgent } else { &self.routine };
        queue
            .send(BusRequest { unit, limit, request, reply })
            .await
            .map_err(|_| LinkError::Down("the bus task has stopped".into()))?;
        rx.await.unwrap_or_else(|_| Err(LinkError::Down("the bus task has stopped".into())))
    }
}

async fn run<L: ModbusLink>(
    mut link: L,
    mut urgent: mpsc::Receiver<BusRequest>,
    mut routine: mpsc::Receiver<BusRequest>,
) {
    let (mut urgent_open, mut routine_open) = (true, true);
    while urgent_open || routine_open {
        let req = tokio::select! {
            biased;
            r = urgent.recv(), if urgent_open => match r { Some(r) => r, None => { urgent_open = false; continue } },
            r = routine.recv(), if routine_open => match r { Some(r) => r, None => { routine_open = false; continue } },
        };
        let result = link.call(req.unit, req.request, req.limit).await;
        let _ = req.reply.send(result);
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
    last_refusal: Mutex<Option<std::time::Instant>>,
}

/// A device that refused a request this recently is reported as `refusing`:
/// with other points polled every few ms, "the last request" would hide it.
pub const REFUSING_FOR: Duration = Duration::from_secs(5);

impl DeviceStats {
    /// `connected`, `refusing` (up, but a request got an exception within
    /// [`REFUSING_FOR`]) or `down`.
    pub fn state(&self) -> &'static str {
        let connected = self.connected.load(Ordering::Relaxed);
        let refusing = self.last_refusal.lock().map(|t| t.is_some_and(|t| t.elapsed() < REFUSING_FOR)).unwrap_or(false);
        match (connected, refusing) {
            (true, true) => "refusing",
            (true, false) => "connected",
            (false, _) => "down",
        }
    }

    fn record(&self, result: &Result<Response, LinkError>) {
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(_) => {
                self.connected.store(true, Ordering::Relaxed);
            }
            Err(LinkError::Refused(e)) => {
                self.connected.store(true, Ordering::Relaxed);
                self.refusals.fetch_add(1, Ordering::Relaxed);
                *last = Some(format!("refused: {e}"));
                *self.last_refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
            }
            Err(e) => {
                self.connected.store(false, Ordering::Relaxed);
                self.failures.fetch_add(1, Ordering::Relaxed);
                *last = Some(e.to_string());
            }
        }
    }
}

/// What a read returns.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadData {
    Bits(Vec<bool>),
    Words(Vec<u16>),
}

/// One configured device: its unit id on a bus.
#[derive(Clone)]
pub struct Device {
    pub name: Arc<str>,
    pub unit: u8,
    pub timeout: Duration,
    pub stats: Arc<DeviceStats>,
    bus: Bus,
}

impl Device {
    pub fn new(name: &str, unit: u8, timeout: Duration, bus: Bus) -> Self {
        Device { name: name.into(), unit, timeout, stats: Arc::new(DeviceStats::default()), bus }
    }

    async fn call(&self, request: Request<'static>, urgent: bool) -> Result<Response, LinkError> {
        let result = self.bus.call(self.unit, request, self.timeout, urgent).await;
        self.stats.record(&result);
        result
    }

    /// Read `count` items of `area` from protocol address `start`.
    pub async fn read(&self, area: PointArea, start: u16, count: u16) -> Result<ReadData, LinkError> {
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        let request = match area {
            PointArea::Coil => Request::ReadCoils(start, count),
            PointArea::DiscreteInput => Request::ReadDiscreteInputs(start, count),
            PointArea::InputRegister => Request::ReadInputRegisters(start, count),
            PointArea::HoldingRegister => Request::ReadHoldingRegisters(start, count),
        };
        let n = usize::from(count);
        match self.call(request, false).await? {
            // tokio-modbus returns whole bytes of bits: cut to what was asked.
            Response::ReadCoils(mut b) | Response::ReadDiscreteInputs(mut b) if b.len() >= n => {
                b.truncate(n);
                Ok(ReadData::Bits(b))
            }
            Response::ReadInputRegisters(w) | Response::ReadHoldingRegisters(w) if w.len() == n => {
                Ok(ReadData::Words(w))
            }
            other => Err(self.mismatch(&other)),
        }
    }

    fn mismatch(&self, response: &Response) -> LinkError {
        let e = LinkError::Down(format!(
            "device `{}` sent a reply that does not match the request: {response:?}",
            self.name
        ));
        self.stats.record(&Err(e.clone()));
        e
    }

    pub(super) async fn write_coil(&self, address: u16, on: bool) -> Result<(), LinkError> {
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        match self.call(Request::WriteSingleCoil(address, on), true).await? {
            Response::WriteSingleCoil(a, v) if a == address && v == on => Ok(()),
            other => Err(self.mismatch(&other)),
        }
    }

    pub(super) async fn write_register(&self, address: u16, value: u16) -> Result<(), LinkError> {
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        match self.call(Request::WriteSingleRegister(address, value), true).await? {
            Response::WriteSingleRegister(a, v) if a == address && v == value => Ok(()),
            other => Err(self.mismatch(&other)),
        }
    }

    pub(super) async fn write_registers(&self, address: u16, values: Vec<u16>) -> Result<(), LinkError> {
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        let n = values.len() as u16;
        match self.call(Request::WriteMultipleRegisters(address, values.into()), true).await? {
            Response::WriteMultipleRegisters(a, c) if a == address && c == n => Ok(()),
            other => Err(self.mismatch(&other)),
        }
    }
}
