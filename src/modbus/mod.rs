//! Modbus: the links to PLCs and I/O, and the declared outputs.
//!
//! - [`link`]: one connection, with timeouts and reconnect (a trait with a TCP
//!   implementation; tests use a recording double).
//! - [`outputs`]: the outputs the config declares, written by one task per device.

pub mod link;
pub mod outputs;

pub use link::{LinkError, ModbusLink, TcpLink};
pub use outputs::{OutputHandle, Outputs};
