//! One Modbus connection: a TCP socket to one device, or a serial bus shared
//! by the devices wired to it.
//!
//! tokio-modbus has no timeouts and no reconnect, and after a timeout the
//! late reply stays in the stream and desynchronises every later call (a
//! transaction-id mismatch on TCP, garbage on RTU). So every request here has
//! a timeout, and a timeout or a transport/protocol error drops the
//! connection; the next request reconnects, after a backoff.
//! A Modbus exception is the device saying no (bad address, busy): it is
//! reported as [`LinkError::Refused`] and the connection is kept.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::{sleep_until, timeout, Instant};
use tokio_modbus::client::{Client, Context};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{Request, Response, Slave};

use crate::config::{Parity, RtuConfig};
use crate::util::backoff::Backoff;
use crate::util::throttle::{Report, Throttle};

/// Why a request did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The device answered with a Modbus exception: it is there, and said no.
    #[error("device refused the request: {0}")]
    Refused(String),
    /// No answer within the timeout; the connection was dropped.
    #[error("no reply within {0} ms; connection dropped and will be rebuilt")]
    Timeout(u64),
    /// The connection is broken or could not be made.
    #[error("link down: {0}")]
    Down(String),
}

impl LinkError {
    /// Whether the link itself failed (as opposed to the device refusing).
    pub fn is_link_failure(&self) -> bool {
        !matches!(self, LinkError::Refused(_))
    }
}

/// A Modbus transport. Small on purpose: the real one talks TCP or RTU, the
/// test double in `outputs::testing` records.
pub trait ModbusLink: Send + 'static {
    /// Send one request to `unit` and wait at most `limit` for the answer.
    fn call(
        &mut self,
        unit: u8,
        request: Request<'static>,
        limit: Duration,
    ) -> impl Future<Output = Result<Response, LinkError>> + Send;
    /// Whether the link is believed up (for telemetry).
    fn is_connected(&self) -> bool;
}

/// Where a [`Link`] connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Tcp(String),
    Rtu(RtuConfig),
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Tcp(a) => write!(f, "tcp {a}"),
            Transport::Rtu(r) => {
                let p = match r.parity {
                    Parity::None => 'N',
                    Parity::Even => 'E',
                    Parity::Odd => 'O',
                };
                write!(f, "rtu {} {} {}{}{}", r.port.display(), r.baud, r.data_bits, p, r.stop_bits)
            }
        }
    }
}

impl Transport {
    /// The quiet time a serial bus needs between frames: 3.5 character times,
    /// at least 1.75 ms above 19200 baud (the Modbus over serial line spec).
    pub fn default_gap(&self) -> Duration {
        match self {
            Transport::Tcp(_) => Duration::ZERO,
            Transport::Rtu(r) => {
                let bits_per_char =
                    1 + u32::from(r.data_bits) + u32::from(r.parity != Parity::None) + u32::from(r.stop_bits);
                let t = Duration::from_secs_f64(3.5 * f64::from(bits_per_char) / f64::from(r.baud.max(1)));
                t.max(Duration::from_micros(1750))
            }
        }
    }
}

/// A supervised connection with per-request timeout, reconnect with
/// exponential backoff (with jitter), and a quiet gap between requests.
pub struct Link {
    /// Used in messages: the device name, or the serial port for a shared bus.
    name: String,
    transport: Transport,
    connect_timeout: Duration,
    gap: Duration,
    ctx: Option<Context>,
    /// Earliest time of the next connection attempt.
    retry_at: Instant,
    backoff: Backoff,
    /// When the last request ended, for the gap.
    quiet_since: Instant,
    /// The link-down log of a device that stays away: at its start, once a minute, at its end.
    down_log: Throttle,
}

/// Reconnect delays: 100 ms doubling to 5 s, ±25 % jitter (so that the links
/// of a node, or many nodes, do not retry a returning PLC in lockstep).
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Link {
    pub fn new(name: &str, transport: Transport, connect_timeout: Duration, gap: Duration) -> Self {
        let now = Instant::now();
        Link {
            name: name.to_string(),
            transport,
            connect_timeout,
            gap,
            ctx: None,
            retry_at: now,
            backoff: Backoff::new(BACKOFF_MIN, BACKOFF_MAX),
            quiet_since: now,
            down_log: Throttle::default(),
        }
    }

    /// A TCP link to one device (the former `TcpLink::new`).
    pub fn tcp(name: &str, address: &str, connect_timeout: Duration) -> Self {
        Self::new(name, Transport::Tcp(address.to_string()), connect_timeout, Duration::ZERO)
    }

    async fn connect(&mut self) -> Result<&mut Context, LinkError> {
        if self.ctx.is_none() {
            let now = Instant::now();
            if now < self.retry_at {
                return Err(LinkError::Down(format!(
                    "`{}` ({}) unreachable; next attempt in {} ms",
                    self.name,
                    self.transport,
                    (self.retry_at - now).as_millis()
                )));
            }
            match timeout(self.connect_timeout, open(self.transport.clone())).await {
                Ok(Ok(ctx)) => {
                    match self.down_log.recovered(std::time::Instant::now()) {
                        Some((down, attempts)) => tracing::info!(
                            device = %self.name, link = %self.transport, down_s = down.as_secs(), attempts,
                            "Modbus link connected again"
                        ),
                        None => tracing::info!(device = %self.name, link = %self.transport, "Modbus link connected"),
                    }
                    // The backoff is reset by a good answer, not by the connect:
                    // a device that accepts TCP but answers garbage must not get
                    // a fresh connection every 100 ms (PLCs have few slots).
                    self.ctx = Some(ctx);
                }
                Ok(Err(e)) => return Err(self.failed(e)),
                Err(_) => {
                    return Err(self.failed(format!("connect timed out after {} ms", self.connect_timeout.as_millis())))
                }
            }
        }
        Ok(self.ctx.as_mut().expect("connected above"))
    }

    fn failed(&mut self, why: String) -> LinkError {
        self.ctx = None;
        let wait = self.backoff.delay();
        self.retry_at = Instant::now() + wait;
        match self.down_log.failed(std::time::Instant::now(), &why) {
            Some(Report::First) => {
                tracing::warn!(device = %self.name, link = %self.transport, error = %why, retry_in_ms = wait.as_millis() as u64, "Modbus link down")
            }
            Some(Report::Still { repeats, total, for_s }) => {
                tracing::warn!(device = %self.name, link = %self.transport, error = %why, repeats, total, for_s, "Modbus link still down (logged once a minute)")
            }
            None => {}
        }
        LinkError::Down(format!("`{}` ({}): {why}", self.name, self.transport))
    }
}

/// Open a connection; a free function so the future does not borrow the
/// link (whose context is not `Sync`).
async fn open(transport: Transport) -> Result<Context, String> {
    match transport {
        Transport::Tcp(address) => {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&address)
                .await
                .map_err(|e| format!("cannot resolve {address}: {e}"))?
                .collect();
            let addr = addrs.first().ok_or_else(|| format!("{address} resolves to no address"))?;
            tokio_modbus::client::tcp::connect(*addr).await.map_err(|e| format!("cannot connect to {address}: {e}"))
        }
        Transport::Rtu(r) => {
            let parity = match r.parity {
                Parity::None => tokio_serial::Parity::None,
                Parity::Even => tokio_serial::Parity::Even,
                Parity::Odd => tokio_serial::Parity::Odd,
            };
            let data_bits =
                if r.data_bits == 7 { tokio_serial::DataBits::Seven } else { tokio_serial::DataBits::Eight };
            let stop_bits = if r.stop_bits == 2 { tokio_serial::StopBits::Two } else { tokio_serial::StopBits::One };
            let port = r.port.to_string_lossy().into_owned();
            let builder = tokio_serial::new(&port, r.baud).parity(parity).data_bits(data_bits).stop_bits(stop_bits);
            let stream = tokio_serial::SerialStream::open(&builder).map_err(|e| {
                format!(
                    "serial port {port} cannot be opened ({e}); check the device path, that the adapter is plugged in, \
                     and that the service user is in group `dialout`"
                )
            })?;
            Ok(tokio_modbus::client::rtu::attach(stream))
        }
    }
}

impl ModbusLink for Link {
    async fn call(&mut self, unit: u8, request: Request<'static>, limit: Duration) -> Result<Response, LinkError> {
        // Serial buses need silence between frames; TCP gets a gap only if configured.
        if !self.gap.is_zero() {
            sleep_until(self.quiet_since + self.gap).await;
        }
        let ctx = self.connect().await?;
        ctx.set_slave(Slave(unit));
        let result = timeout(limit, ctx.call(request)).await;
        self.quiet_since = Instant::now();
        match result {
            Ok(Ok(Ok(response))) => {
                self.backoff.reset();
                Ok(response)
            }
            Ok(Ok(Err(exception))) => {
                self.backoff.reset();
                Err(LinkError::Refused(format!("{exception}")))
            }
            // Transport errors and protocol errors (a transaction-id or unit
            // mismatch, a malformed frame) leave the stream in an unknown state.
            Ok(Err(e)) => Err(self.failed(e.to_string())),
            Err(_) => {
                // The late reply would stay in the stream: drop the connection.
                self.failed(format!("no reply from unit {unit} within {} ms", limit.as_millis()));
                Err(LinkError::Timeout(limit.as_millis() as u64))
            }
        }
    }

    fn is_connected(&self) -> bool {
        self.ctx.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_gap_is_three_and_a_half_characters() {
        let rtu = |baud| {
            Transport::Rtu(RtuConfig {
                port: "/dev/ttyUSB0".into(),
                baud,
                parity: Parity::Even,
                data_bits: 8,
                stop_bits: 1,
            })
        };
        // 9600 8E1: 11 bits per character, 3.5 characters = 4.01 ms.
        let g = rtu(9600).default_gap();
        assert!((g.as_secs_f64() - 3.5 * 11.0 / 9600.0).abs() < 1e-6, "{g:?}");
        // Above 19200 baud the spec fixes 1.75 ms.
        assert_eq!(rtu(115200).default_gap(), Duration::from_micros(1750));
        assert_eq!(Transport::Tcp("h:502".into()).default_gap(), Duration::ZERO);
        assert_eq!(rtu(19200).to_string(), "rtu /dev/ttyUSB0 19200 8E1");
    }
}
