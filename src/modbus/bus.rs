//! The task that owns one link, and the per-device handle in front of it.
//!
//! Everything that talks to a device goes through its bus task, one request
//! at a time: a serial bus allows nothing else, and many PLCs serve one
//! request per connection at a time anyway. Writes go first: a reject pulse
//! must not wait behind a sensor poll.
//!
//! [`Device`] reads anything; its write methods are visible to the `modbus`
//! module only, whose owners of declared outputs are the only writers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_modbus::{Request, Response};

use super::link::{LinkError, ModbusLink};
use crate::config::PointArea;
use crate::stats::DeviceStats;

struct BusRequest {
    unit: u8,
    limit: Duration,
    request: Request<'static>,
    reply: oneshot::Sender<Answer>,
}

/// A request's result, and when the device most likely handled it: midway through the exchange on
/// the wire (measured around the link's call, so the time spent queued behind other requests does
/// not count).
type Answer = (Result<Response, LinkError>, Option<Instant>);

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

    async fn call(&self, unit: u8, request: Request<'static>, limit: Duration, urgent: bool) -> Answer {
        let (reply, rx) = oneshot::channel();
        let queue = if urgent { &self.urgent } else { &self.routine };
        let stopped = || (Err(LinkError::Down("the bus task has stopped".into())), None);
        if queue.send(BusRequest { unit, limit, request, reply }).await.is_err() {
            return stopped();
        }
        rx.await.unwrap_or_else(|_| stopped())
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
        let sent = Instant::now();
        let result = link.call(req.unit, req.request, req.limit).await;
        let answered = Instant::now();
        let _ = req.reply.send((result, Some(sent + (answered - sent) / 2)));
    }
}

/// What a read returns.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadData {
    Bits(Vec<bool>),
    Words(Vec<u16>),
}

/// The data of a read of `count` items, if `response` is one: bits (tokio-modbus returns whole
/// bytes of them, cut here to what was asked) or exactly `count` registers. Anything else is
/// handed back, for the error that names it.
pub fn read_reply(count: u16, response: Response) -> Result<ReadData, Response> {
    let n = usize::from(count);
    match response {
        Response::ReadCoils(mut b) | Response::ReadDiscreteInputs(mut b) if b.len() >= n => {
            b.truncate(n);
            Ok(ReadData::Bits(b))
        }
        Response::ReadInputRegisters(w) | Response::ReadHoldingRegisters(w) if w.len() == n => Ok(ReadData::Words(w)),
        other => Err(other),
    }
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
        self.call_timed(request, urgent).await.0
    }

    async fn call_timed(&self, request: Request<'static>, urgent: bool) -> Answer {
        let (result, at) = self.bus.call(self.unit, request, self.timeout, urgent).await;
        match &result {
            Ok(_) => self.stats.record_answer(),
            Err(LinkError::Refused(e)) => self.stats.record_refusal(format!("refused: {e}")),
            Err(e) => self.stats.record_failure(e.to_string()),
        }
        (result, at)
    }

    /// Read `count` items of `area` from protocol address `start`.
    pub async fn read(&self, area: PointArea, start: u16, count: u16) -> Result<ReadData, LinkError> {
        self.read_timed(area, start, count).await.0
    }

    /// [`Device::read`], and when the device most likely read its values: midway through the
    /// request's exchange on the wire (the time it waited behind other requests not counted).
    pub async fn read_timed(
        &self,
        area: PointArea,
        start: u16,
        count: u16,
    ) -> (Result<ReadData, LinkError>, Option<Instant>) {
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        let request = match area {
            PointArea::Coil => Request::ReadCoils(start, count),
            PointArea::DiscreteInput => Request::ReadDiscreteInputs(start, count),
            PointArea::InputRegister => Request::ReadInputRegisters(start, count),
            PointArea::HoldingRegister => Request::ReadHoldingRegisters(start, count),
        };
        let (response, at) = self.call_timed(request, false).await;
        (response.and_then(|r| read_reply(count, r).map_err(|other| self.mismatch(&other))), at)
    }

    fn mismatch(&self, response: &Response) -> LinkError {
        let e = LinkError::Down(format!(
            "device `{}` sent a reply that does not match the request: {response:?}",
            self.name
        ));
        self.stats.record_failure(e.to_string());
        e
    }

    pub(super) async fn write_coil(&self, address: u16, on: bool) -> Result<(), LinkError> {
        self.write_coil_timed(address, on).await.0
    }

    /// [`Device::write_coil`], and when the device most likely acted on it (see [`Device::read_timed`]).
    pub(super) async fn write_coil_timed(&self, address: u16, on: bool) -> (Result<(), LinkError>, Option<Instant>) {
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        let (r, at) = self.call_timed(Request::WriteSingleCoil(address, on), true).await;
        let r = r.and_then(|resp| match resp {
            Response::WriteSingleCoil(a, v) if a == address && v == on => Ok(()),
            other => Err(self.mismatch(&other)),
        });
        (r, at)
    }

    pub(super) async fn write_register(&self, address: u16, value: u16) -> Result<(), LinkError> {
        self.write_register_timed(address, value).await.0
    }

    /// [`Device::write_register`], and when the device most likely acted on it.
    pub(super) async fn write_register_timed(
        &self,
        address: u16,
        value: u16,
    ) -> (Result<(), LinkError>, Option<Instant>) {
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        let (r, at) = self.call_timed(Request::WriteSingleRegister(address, value), true).await;
        let r = r.and_then(|resp| match resp {
            Response::WriteSingleRegister(a, v) if a == address && v == value => Ok(()),
            other => Err(self.mismatch(&other)),
        });
        (r, at)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_reply_is_taken_only_when_it_holds_what_was_asked() {
        // Bits come in whole bytes: cut to the count.
        let bits = vec![true, false, true, true, false, false, false, false];
        assert_eq!(read_reply(3, Response::ReadCoils(bits.clone())), Ok(ReadData::Bits(vec![true, false, true])));
        assert_eq!(read_reply(8, Response::ReadDiscreteInputs(bits.clone())), Ok(ReadData::Bits(bits.clone())));
        assert_eq!(read_reply(9, Response::ReadCoils(bits.clone())), Err(Response::ReadCoils(bits)));
        // Registers: exactly the count.
        assert_eq!(read_reply(2, Response::ReadHoldingRegisters(vec![1, 2])), Ok(ReadData::Words(vec![1, 2])));
        assert_eq!(read_reply(2, Response::ReadInputRegisters(vec![1, 2])), Ok(ReadData::Words(vec![1, 2])));
        assert!(read_reply(2, Response::ReadHoldingRegisters(vec![1, 2, 3])).is_err());
        assert!(read_reply(2, Response::ReadHoldingRegisters(vec![1])).is_err());
        assert!(read_reply(1, Response::WriteSingleRegister(1, 2)).is_err());
    }
}
