//! Simulated plant parts.
