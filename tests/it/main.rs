//! The integration tests, as one test binary (`cargo test --test it`): one module per area, all
//! sharing tests/common. One binary links OpenCV, ONNX Runtime and rustls once instead of once
//! per test file.
//!
//! Run one area with a filter, e.g. `cargo test --test it pipeline::` or
//! `cargo test --test it snapshots`.

#[path = "../common/mod.rs"]
mod common;

mod anomaly_parity;
mod browser;
mod camera_bad_sources;
mod camera_health;
mod camera_rtsp;
mod camera_transform;
mod capture;
mod classifier_parity;
mod command_limits;
mod config_check;
mod crafted_models;
mod fault_word;
mod fuzz_corpus;
mod http;
mod infer_eval;
mod kill_loop;
mod layers;
mod modbus_hostile;
mod modbus_plc;
mod modbus_reconnect;
mod model_package;
mod mqtt_durable;
mod mqtt_hostile;
mod mqtt_keepalive;
mod mqtt_security;
mod pipeline;
mod purge;
mod pyplc_smoke;
mod queue_disk;
mod reduced_decode;
mod reject_line;
mod reload;
mod rollout;
mod shared_model;
mod signals;
mod snapshots;
mod soak;
mod sparkplug;
mod store_crash;
mod watchdog;
mod write_attempts;
mod yolo_parity;
mod yolo_seg_cls_parity;
