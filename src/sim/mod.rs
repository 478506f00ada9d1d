//! Simulated plant parts for the demo and tests: a PLC (tokio-modbus's own
//! server) and a throwaway mosquitto broker. The camera side needs no
//! simulator: a file source paced at the line rate is one.

pub mod broker;
pub mod plc;
