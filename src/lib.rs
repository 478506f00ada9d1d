//! linesight: an industrial edge controller for visual inspection.
//!
//! A camera sees every part; an ONNX Runtime model judges it OK or NG; an NG
//! (or unjudgeable) part is thrown out by a reject gate driven over Modbus,
//! timed to the part's arrival at the gate; the plant sees everything over
//! MQTT (plain JSON and Sparkplug B, through a disk queue).
//!
//! # Layout
//!
//! Modules in layers, bottom to top. Imports run one way, down: a module may
//! import only what its row names. This table is the rule itself:
//! `tests/it/layers.rs` reads it and fails on any other `crate::` import, and
//! on any import cycle between top-level modules. docs/architecture.md
//! explains it, and where a new thing goes.
//!
//! | module | layer | may import | why it sits here |
//! |---|---|---|---|
//! | [`config`] | ground | — | the YAML schema, diagnostics with line and column, validation; every other module reads its section |
//! | [`util`] | ground | — | time formatting, backoff with jitter, percentiles, files for the service's user alone |
//! | [`part`] | ground | `config`, `util` | the pipeline's vocabulary: frames, parts, model outputs, verdicts, results, point samples, the actuator trait |
//! | [`stats`] | ground | `config`, `util`, `part` | every counter type; plain data each stage writes and others read; machine health (its readers of `/proc` and `/sys`, its sampler thread) |
//! | [`store`] | devices and stores | `util` | the disk-backed segmented log behind MQTT store-and-forward, and the one thread that writes it |
//! | [`capture`] | devices and stores | `config`, `util`, `part`, `stats` | evidence capture: judged parts' images and JSON sidecars on disk, their one writer thread, review marks, export to training layouts |
//! | [`camera`] | devices and stores | `config`, `util`, `part`, `stats` | capture threads (OpenCV: files, folders, V4L2, RTSP, GStreamer) feeding a bounded queue |
//! | [`inference`] | devices and stores | `config`, `util`, `part`, `stats` | ONNX Runtime sessions, execution providers, model adapters, the worker that batches frames; reports model outputs, never verdicts |
//! | [`rollout`] | devices and stores | `config`, `util` | signed model packages: manifest, Ed25519 keys, every check before an install, per-model slots in the state directory (staged versions, the active one, the history) |
//! | [`modbus`] | devices and stores | `config`, `util`, `part`, `stats` | links (TCP, RTU), point polling and codecs, the declared outputs (the only things written), heartbeat, result blocks |
//! | [`line`] | line | `config`, `util`, `part`, `stats`, `modbus` | part triggers and the encoder, from Modbus points |
//! | [`decision`] | decision | `config`, `util`, `part`, `stats` | rules (outputs to verdicts), the part tracker, the timed reject gate; no I/O: outputs through `part::actuator`, results out on a channel |
//! | [`telemetry`] | telemetry | `config`, `util`, `part`, `stats`, `store` | MQTT sessions, JSON and Sparkplug B dialects, durable queue, command parsing; commands leave as typed requests |
//! | [`http`] | telemetry | `config`, `util`, `part`, `stats`, `telemetry` | the operator page, `/metrics`, health endpoints; a third door for commands, through telemetry's guard and router |
//! | [`service`] | support | — | systemd notify and watchdog, stop signals |
//! | [`logging`] | support | — | tracing output for terminals, journald and log shippers |
//! | [`sim`] | support | — | a simulated PLC and a throwaway broker for the demo, bench and tests |
//! | [`app`] | app | `config`, `util`, `part`, `stats`, `store`, `capture`, `camera`, `inference`, `modbus`, `line`, `decision`, `telemetry`, `http`, `service`, `rollout` | builds everything from a validated config, routes results and commands between layers, supervises, stops in order |
//! | [`cli`] | commands | `config`, `util`, `part`, `stats`, `store`, `capture`, `camera`, `inference`, `modbus`, `line`, `decision`, `telemetry`, `http`, `service`, `logging`, `sim`, `app`, `rollout` | `run`, `check-config`, `demo`, `bench`, `infer`, `eval`, `model`, `capture export` |

#![forbid(unsafe_code)]

pub mod app;
pub mod camera;
pub mod capture;
pub mod cli;
pub mod config;
pub mod decision;
pub mod http;
pub mod inference;
pub mod line;
pub mod logging;
pub mod modbus;
pub mod part;
pub mod rollout;
pub mod service;
pub mod sim;
pub mod stats;
pub mod store;
pub mod telemetry;
pub mod util;

/// Exit code for an invalid configuration (sysexits' EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;
/// Exit code when the model or ONNX Runtime cannot be used (EX_NOINPUT): restarting will not help.
pub const EXIT_MODEL: i32 = 66;
