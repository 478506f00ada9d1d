//! Configuration: the YAML schema, the loader that reports every problem with
//! its line and column, and the JSON Schema for editors.

mod diagnostic;
mod io;
mod load;
mod types;
mod validate;
pub mod yaml;

pub use diagnostic::{ConfigErrors, Diagnostic};
pub use load::{load_file, load_str, LoadedConfig};
pub use types::*;
pub use validate::wire_address;

/// The JSON Schema of the config file, generated from the Rust types so it cannot drift.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Config);
    let mut s = serde_json::to_string_pretty(&schema).expect("a schema always serializes");
    s.push('\n');
    s
}
