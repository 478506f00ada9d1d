//! The line as linesight sees it through Modbus: part triggers, the encoder,
//! and the node's health shown on the stack light.
//!
//! - [`trigger`]: a photo-eye edge or a part counter becomes a part.
//! - [`encoder`]: the wrapping counter becomes a position and a speed.
//! - [`health`]: faults (camera lost, inference stalled, device down), the
//!   stack light, and the safe state on fault.

pub mod encoder;
pub mod health;
pub mod trigger;
