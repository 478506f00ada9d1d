//! A simulated PLC: tokio-modbus's own TCP server over an in-memory image of
//! coils and holding registers, recording every write with its arrival time.
//! The demo and tests use it as the reject gate's controller.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::TcpListener;
use tokio_modbus::server::tcp::{accept_tcp_connection, Server};
use tokio_modbus::{ExceptionCode, Request, Response};

/// One write the PLC received.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WriteEvent {
    pub at: Instant,
    pub address: u16,
    /// Coil state, or register value != 0.
    pub on: bool,
    pub coil: bool,
}

/// The PLC's memory: 10,000 coils and registers, like a small PLC.
const SIZE: usize = 10_000;

struct Image {
    coils: Vec<bool>,
    registers: Vec<u16>,
    writes: Vec<WriteEvent>,
}

#[derive(Clone)]
pub struct SimPlc {
    pub addr: SocketAddr,
    image: Arc<Mutex<Image>>,
}

impl SimPlc {
    /// Listen on `bind` (use port 0 for a free port) and serve until the runtime ends.
    pub async fn start(bind: &str) -> std::io::Result<SimPlc> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let image =
            Arc::new(Mutex::new(Image { coils: vec![false; SIZE], registers: vec![0; SIZE], writes: Vec::new() }));
        let plc = SimPlc { addr, image: image.clone() };
        let server = Server::new(listener);
        tokio::spawn(async move {
            let on_connected = |stream, socket_addr| {
                let image = image.clone();
                async move {
                    accept_tcp_connection(stream, socket_addr, move |_| Ok(Some(Service { image: image.clone() })))
                }
            };
            if let Err(e) =
                server.serve(&on_connected, |e| tracing::debug!(error = %e, "simulated PLC connection ended")).await
            {
                tracing::error!(error = %e, "simulated PLC stopped");
            }
        });
        Ok(plc)
    }

    /// Every write so far.
    pub fn writes(&self) -> Vec<WriteEvent> {
        self.lock().writes.clone()
    }

    pub fn coil(&self, address: u16) -> bool {
        self.lock().coils.get(address as usize).copied().unwrap_or(false)
    }

    /// Rising edges of one coil: the reject pulses it saw.
    pub fn pulses(&self, address: u16) -> usize {
        let w = self.lock();
        let mut on = false;
        let mut n = 0;
        for e in w.writes.iter().filter(|e| e.coil && e.address == address) {
            if e.on && !on {
                n += 1;
            }
            on = e.on;
        }
        n
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Image> {
        self.image.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Service {
    image: Arc<Mutex<Image>>,
}

impl tokio_modbus::server::Service for Service {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let mut img = self.image.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let range = |a: u16, n: u16| -> Result<std::ops::Range<usize>, ExceptionCode> {
            let (a, n) = (a as usize, n as usize);
            if n == 0 || a + n > SIZE {
                Err(ExceptionCode::IllegalDataAddress)
            } else {
                Ok(a..a + n)
            }
        };
        let res = match req {
            Request::ReadCoils(a, n) => range(a, n).map(|r| Response::ReadCoils(img.coils[r].to_vec())),
            Request::ReadHoldingRegisters(a, n) => {
                range(a, n).map(|r| Response::ReadHoldingRegisters(img.registers[r].to_vec()))
            }
            // The simulated PLC has no inputs wired: they read as off / zero.
            Request::ReadDiscreteInputs(a, n) => {
                range(a, n).map(|r| Response::ReadDiscreteInputs(vec![false; r.len()]))
            }
            Request::ReadInputRegisters(a, n) => range(a, n).map(|r| Response::ReadInputRegisters(vec![0; r.len()])),
            Request::WriteMultipleRegisters(a, v) => range(a, v.len() as u16).map(|r| {
                for (i, x) in r.clone().zip(v.iter()) {
                    img.registers[i] = *x;
                }
                img.writes.push(WriteEvent { at: now, address: a, on: v.iter().any(|x| *x != 0), coil: false });
                Response::WriteMultipleRegisters(a, v.len() as u16)
            }),
            Request::WriteSingleCoil(a, v) => range(a, 1).map(|_| {
                img.coils[a as usize] = v;
                img.writes.push(WriteEvent { at: now, address: a, on: v, coil: true });
                Response::WriteSingleCoil(a, v)
            }),
            Request::WriteSingleRegister(a, v) => range(a, 1).map(|_| {
                img.registers[a as usize] = v;
                img.writes.push(WriteEvent { at: now, address: a, on: v != 0, coil: false });
                Response::WriteSingleRegister(a, v)
            }),
            _ => Err(ExceptionCode::IllegalFunction),
        };
        std::future::ready(res)
    }
}
