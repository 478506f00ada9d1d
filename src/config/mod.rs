//! Configuration: the YAML schema, the loader that reports every problem with
//! its line and column, and the JSON Schema for editors.
//!
//! `config` is the ground layer of the crate: it imports nothing else of it
//! (only `crate::config::...` and `super::`), so every other module can depend
//! on it and it can be read, tested and changed on its own. Types that the
//! rest of the crate shares with the file (e.g. [`UncertainAction`]) are
//! defined here and re-exported there, not the other way round.
//!
//! Files:
//! - `types.rs`: the schema of the file (node, MQTT, cameras, models, tasks, runtime, durations);
//! - `io.rs`: the line-side I/O part of the schema (Modbus, line, stack light);
//! - `yaml.rs`: the YAML tree with a line and column on every node, and a serde deserializer over it;
//! - `load.rs`: reading a file section by section, resolving paths; [`LoadedConfig`], made only there;
//! - `diagnostic.rs`: [`Diagnostic`], [`ConfigErrors`], and the collector and "did you mean" shared
//!   by loading and validation;
//! - `validate/`: the checks that need more than one field, one file per section
//!   (`node`, `mqtt` with TLS, Sparkplug and failover, `modbus`, `cameras`, `models` with
//!   `runtime`, `tasks`, `line` with the stack light).

mod diagnostic;
mod io;
mod load;
mod types;
mod validate;
pub mod yaml;

pub use diagnostic::{ConfigErrors, Diagnostic};
pub use load::{load_file, load_str, LoadedConfig};
pub use types::*;
pub use validate::{parse_public_key, wire_address};

/// The JSON Schema of the config file, generated from the Rust types so it cannot drift.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Config);
    let mut s = serde_json::to_string_pretty(&schema).expect("a schema always serializes");
    s.push('\n');
    s
}
