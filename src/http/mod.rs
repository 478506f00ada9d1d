//! The operator page and the plant's scrapers: an HTTP server on the daemon's runtime.
//!
//! # Layout
//!
//! - [`server`]: the routes, the listener and its stop. Every handler reads what the pipeline
//!   already publishes (`stats::NodeStats`, `part::view::Views`); none of them can hold up a
//!   stage: counters are atomics, the view's lock only swaps an `Arc`, and JPEG encoding runs on
//!   tokio's blocking threads.
//! - [`auth`]: the bearer token every action needs, the page's action rate limit, the audit log.
//! - [`metrics`]: `/metrics` in the Prometheus text format.
//! - [`render`]: a judged frame with what the model saw drawn on it, as JPEG.
//! - [`tls`]: HTTPS (`http.tls`): only connections whose handshake is done reach the routes.
//! - `page.html`: the page itself, served from the binary (no build step, no CDN).
//!
//! The page is a third door for commands, beside MQTT JSON and Sparkplug: a command posted here
//! is the same JSON as on MQTT, passes the same guard (time, replay, the node's command rate)
//! and the same router, and is logged under `linesight::audit` like the others.

pub mod auth;
pub mod metrics;
pub mod render;
pub mod server;
pub mod tls;

pub use server::{serve, Page, Ready, Served};
