//! One Modbus connection: the link trait and its TCP implementation.
//!
//! tokio-modbus has no timeouts and no reconnect, and after a timeout the
//! late reply stays in the stream and desynchronises every later call. So
//! every request here has a timeout, and a timeout or transport error drops
//! the connection; the next request reconnects, after a backoff.
//! A Modbus exception is the device saying no (bad address, busy): it is
//! reported as such and the connection is kept.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::{timeout, Instant};
use tokio_modbus::client::{Context, Writer};
use tokio_modbus::Slave;

/// Why a write did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The device answered with a Modbus exception.
    #[error("device refused the request: {0}")]
    Refused(String),
    /// No answer within the timeout; the connection was dropped.
    #[error("no reply within {0} ms; connection dropped and will be rebuilt")]
    Timeout(u64),
    /// The connection is broken or could not be made.
    #[error("link down: {0}")]
    Down(String),
}

/// A Modbus peer that can be written. Small on purpose: the real one talks
/// TCP, the test double records.
pub trait ModbusLink: Send + 'static {
    fn write_coil(&mut self, address: u16, on: bool) -> impl Future<Output = Result<(), LinkError>> + Send;
    fn write_register(&mut self, address: u16, value: u16) -> impl Future<Output = Result<(), LinkError>> + Send;
    /// Whether the link is believed up (for telemetry).
    fn is_connected(&self) -> bool;
}

/// Modbus TCP with per-request timeout and reconnect with exponential backoff.
pub struct TcpLink {
    name: String,
    address: String,
    unit: u8,
    timeout: Duration,
    ctx: Option<Context>,
    /// Earliest time of the next connection attempt.
    retry_at: Instant,
    backoff: Duration,
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl TcpLink {
    pub fn new(name: &str, address: &str, unit: u8, timeout: Duration) -> Self {
        TcpLink {
            name: name.to_string(),
            address: address.to_string(),
            unit,
            timeout,
            ctx: None,
            retry_at: Instant::now(),
            backoff: BACKOFF_MIN,
        }
    }

    async fn connect(&mut self) -> Result<&mut Context, LinkError> {
        if self.ctx.is_none() {
            let now = Instant::now();
            if now < self.retry_at {
                return Err(LinkError::Down(format!(
                    "device `{}` at {} unreachable; next attempt in {} ms",
                    self.name,
                    self.address,
                    (self.retry_at - now).as_millis()
                )));
            }
            match timeout(self.timeout, open(self.address.clone(), self.unit)).await {
                Ok(Ok(ctx)) => {
                    tracing::info!(device = %self.name, address = %self.address, "Modbus device connected");
                    self.backoff = BACKOFF_MIN;
                    self.ctx = Some(ctx);
                }
                Ok(Err(e)) => return Err(self.failed(e)),
                Err(_) => return Err(self.failed(format!("connect timed out after {} ms", self.timeout.as_millis()))),
            }
        }
        Ok(self.ctx.as_mut().expect("connected above"))
    }

    fn failed(&mut self, why: String) -> LinkError {
        self.ctx = None;
        self.retry_at = Instant::now() + self.backoff;
        tracing::warn!(device = %self.name, address = %self.address, error = %why, retry_in_ms = self.backoff.as_millis() as u64, "Modbus link down");
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        LinkError::Down(format!("device `{}` at {}: {why}", self.name, self.address))
    }

    async fn request(&mut self, op: Op) -> Result<(), LinkError> {
        let limit = self.timeout;
        let ctx = self.connect().await?;
        let call = async {
            match op {
                Op::Coil(a, on) => ctx.write_single_coil(a, on).await,
                Op::Register(a, v) => ctx.write_single_register(a, v).await,
            }
        };
        match timeout(limit, call).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(exception))) => Err(LinkError::Refused(format!("{exception:?} from device `{}`", self.name))),
            Ok(Err(e)) => Err(self.failed(e.to_string())),
            Err(_) => {
                // The late reply would stay in the stream: drop the connection.
                self.failed(format!("no reply within {} ms", limit.as_millis()));
                Err(LinkError::Timeout(limit.as_millis() as u64))
            }
        }
    }
}

/// Connect; a free function so the future does not borrow the link (whose
/// context is not `Sync`).
async fn open(address: String, unit: u8) -> Result<Context, String> {
    let addrs: Vec<SocketAddr> =
        tokio::net::lookup_host(&address).await.map_err(|e| format!("cannot resolve {address}: {e}"))?.collect();
    let addr = addrs.first().ok_or_else(|| format!("{address} resolves to no address"))?;
    tokio_modbus::client::tcp::connect_slave(*addr, Slave(unit))
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}"))
}

enum Op {
    Coil(u16, bool),
    Register(u16, u16),
}

impl ModbusLink for TcpLink {
    async fn write_coil(&mut self, address: u16, on: bool) -> Result<(), LinkError> {
        self.request(Op::Coil(address, on)).await
    }

    async fn write_register(&mut self, address: u16, value: u16) -> Result<(), LinkError> {
        self.request(Op::Register(address, value)).await
    }

    fn is_connected(&self) -> bool {
        self.ctx.is_some()
    }
}
