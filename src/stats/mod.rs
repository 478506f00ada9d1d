//! Every counter type of the node: plain data that the stage owning it
//! writes and others (telemetry, the supervisor, the demo) read. Atomics and
//! short-held mutexes only, so a reader never slows a writer down.
//!
//! - [`task`]: a task's verdict counts and latency windows.
//! - [`camera`]: a camera's frame counts and state.
//! - [`model`]: a model's inference calls and batches.
//! - [`modbus`]: a device's link state, a result block's handshake.
//! - [`faults`]: the active faults, the recent reject share.
//! - [`queue`]: the MQTT disk queue.
//! - [`machine`]: machine health (CPU per thread group, memory, disk, temperatures, GPU load).
//! - [`shadow`]: a candidate model's agreement with production (shadow mode).
//! - [`liveness`]: whether the work that should end does (the watchdog's and heartbeat's rule).
//! - [`node`]: the registry of all of the above.

pub mod camera;
pub mod faults;
pub mod liveness;
pub mod machine;
pub mod modbus;
pub mod model;
pub mod node;
pub mod queue;
pub mod shadow;
pub mod task;

pub use camera::{CameraStats, CameraStatus};
pub use faults::{Faults, RejectWindow};
pub use liveness::{Busy, Liveness};
pub use machine::{Machine, MachineSample};
pub use modbus::{DeviceStats, HandshakeStats, LinkState};
pub use model::ModelStats;
pub use node::{NodeStats, TaskEntry};
pub use queue::QueueStats;
pub use shadow::{ShadowStats, TapStats};
pub use task::{CaptureStats, TaskStats};
