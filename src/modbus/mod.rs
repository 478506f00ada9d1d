//! Modbus: links to PLCs and I/O, the points linesight reads, and the
//! outputs it may write.
//!
//! - [`link`]: one connection (TCP to a device, or a serial bus) with
//!   timeouts and reconnect; a trait, so unit tests use a recording double.
//! - [`bus`]: the task that owns a link (one request at a time, writes
//!   first) and the per-device handle with its telemetry.
//! - [`codec`]: values across registers: types, byte/word order, scale;
//!   merging neighbouring points into one request.
//! - [`points`]: poll groups, value quality, publish on change.
//! - [`outputs`]: the declared outputs, the only things ever written.
//! - [`heartbeat`], [`handshake`]: the alive counter and the result block
//!   for PLCs that read results with an acknowledgement.

pub mod bus;
pub mod codec;
pub mod handshake;
pub mod heartbeat;
pub mod link;
pub mod outputs;
pub mod points;

pub use bus::Device;
pub use link::{Link, LinkError, ModbusLink, Transport};
pub use outputs::{OutputHandle, Outputs, RegisterHandle};
