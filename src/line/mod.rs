//! The line as linesight sees it through Modbus: part triggers and the
//! encoder. Built on `modbus`'s points; the node's health (faults, the stack
//! light) is `app`'s supervisor.
//!
//! - [`trigger`]: a photo-eye edge or a part counter becomes a part.
//! - [`encoder`]: the wrapping counter becomes a position and a speed.

pub mod encoder;
pub mod trigger;
