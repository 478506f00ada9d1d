//! Checks that need more than one field: cross-references, ranges, timing.
//! Runs on whatever deserialized, so one broken entry does not hide the
//! problems of the others.
//!
//! One file per section of the config file, so the checks of a section are
//! found where its keys are: [`node`], [`mqtt`] (with TLS, Sparkplug B and
//! failover brokers), [`modbus`], [`cameras`], [`models`] (with `runtime`),
//! [`tasks`], [`line`] (with the stack light), [`http`], [`health`] and [`rollout`].

mod cameras;
mod health;
mod http;
mod line;
mod modbus;
mod models;
mod mqtt;
mod node;
mod rollout;
mod tasks;

pub use modbus::wire_address;
pub use rollout::parse_public_key;

use super::diagnostic::{suggest, Broken, Collector};
use super::types::Config;

/// Check everything that deserialized, section by section, reporting into `c`.
pub(crate) fn validate(config: &Config, broken: &Broken, c: &mut Collector) {
    node::identity(config, c);
    if let Some(mqtt) = &config.mqtt {
        mqtt::check(config, mqtt, c);
    }
    modbus::check(config, broken, c);
    line::line(config, broken, c);
    line::stack_light(config, broken, c);
    cameras::check(config, c);
    models::check(config, c);
    tasks::check(config, broken, c);
    models::runtime(config, c);
    if let Some(h) = &config.http {
        http::check(h, c);
    }
    health::check(config, c);
    rollout::check(&config.rollout, c);
}

/// The hint for a reference to a `name` that is not defined under `section`:
/// the nearest known name, else all of them, else where to define it.
fn hint_known(name: &str, known: &[&str], section: &str) -> String {
    if known.is_empty() {
        return format!("define `{name}` under `{section}`");
    }
    let s = suggest(name, known);
    if s.starts_with("did you mean") {
        s
    } else {
        format!("use one of: {}", known.join(", "))
    }
}

/// `path` extended by `tail`: the place of a key below an entry.
fn join<'a>(path: &[&'a str], tail: &[&'a str]) -> Vec<&'a str> {
    [path, tail].concat()
}
