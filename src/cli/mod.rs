//! The commands beside `run` and `check-config`:
//!
//! - [`demo`]: `linesight demo`, the whole daemon on a simulated line;
//! - [`bench`]: `linesight bench`, each stage alone and the whole pipeline on this machine;
//! - [`infer`]: `linesight infer`, a model on image files;
//! - [`eval`]: `linesight eval`, a model on a labelled folder;
//! - [`model`]: `linesight model keygen|pack|sign|verify`, signed model packages;
//! - [`capture`]: `linesight capture export`, captured parts for training and labelling tools.
//!
//! cli is the top layer: it may import everything, and nothing imports it
//! (only `main.rs` and the tests).

pub mod bench;
pub mod capture;
pub mod demo;
pub mod eval;
pub mod infer;
pub mod model;
