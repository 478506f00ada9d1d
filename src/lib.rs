//! linesight: an industrial edge controller for visual inspection.
//!
//! A camera sees every part; an ONNX Runtime model judges it OK or NG; an NG
//! (or unjudgeable) part is thrown out by a reject gate driven over Modbus,
//! timed to the part's arrival at the gate; the plant sees everything over
//! MQTT.
//!
//! # Layout
//!
//! - [`config`]: the YAML schema, a loader that reports every problem with
//!   its line and column, the JSON Schema for editors.
//! - [`camera`]: capture threads (OpenCV: files, image folders, V4L2, RTSP,
//!   GStreamer) and the bounded queue to inference.
//! - [`inference`]: ONNX Runtime sessions with execution providers in
//!   priority order, the classifier adapter, the inference worker thread.
//! - [`decision`]: verdict rules, the per-task part tracker that guarantees
//!   one verdict per part (ERROR when none comes in time), the reject gate.
//! - [`modbus`]: links to PLCs over TCP and RTU (timeouts, reconnect, one
//!   request at a time per bus), point polling and decoding, the declared
//!   outputs (the only things linesight ever writes), heartbeat, result block.
//! - [`line`]: part triggers, the encoder, faults and the stack light.
//! - [`telemetry`]: figures and the MQTT connection (plain JSON dialect).
//! - [`service`]: systemd notify/watchdog and stop signals.
//! - [`app`]: builds all of the above from a config, runs, stops in order.
//! - [`sim`]: a simulated PLC and a throwaway broker for the demo and tests.
//! - [`store`]: the disk-backed store-and-forward queue (a segmented log) for MQTT telemetry.
//! - [`cli`]: the `demo`, `bench`, `infer` and `eval` commands (the top layer).
//! - [`logging`]: tracing output for terminals, journald and log shippers.
//! - [`util`]: small helpers every layer may use (backoff).

#![forbid(unsafe_code)]

pub mod app;
pub mod camera;
pub mod cli;
pub mod config;
pub mod decision;
pub mod inference;
pub mod line;
pub mod logging;
pub mod modbus;
pub mod service;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod util;

/// Exit code for an invalid configuration (sysexits' EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;
/// Exit code when the model or ONNX Runtime cannot be used (EX_NOINPUT): restarting will not help.
pub const EXIT_MODEL: i32 = 66;
