//! The line-side I/O part of the schema: Modbus devices, the points linesight
//! reads, the outputs it may write, the line's encoder and running signal,
//! and the stack light.
//!
//! Vocabulary follows the gateways plant engineers know (EMQ Neuron, EdgeX):
//! an area, an address whose numbering is stated, a type, a byte/word order,
//! scale and offset. Everything linesight may write is declared here; nothing
//! else is ever written.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::Dur;

// The `modbus` section: everything linesight reads from and writes to PLCs and I/O modules.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfig {
    /// Modbus devices by name.
    #[serde(default)]
    pub devices: BTreeMap<String, ModbusDeviceConfig>,
    /// Points linesight reads (sensors, triggers, the encoder), by name. A point marked `writable` may
    /// also be set by a remote command; no other point can be.
    #[serde(default)]
    pub points: BTreeMap<String, PointConfig>,
    /// On/off outputs linesight drives (reject gates, stack lights), by name. Together with the
    /// heartbeat, the result blocks and the writable points these are the only things linesight ever
    /// writes, whatever a remote command says.
    #[serde(default)]
    pub outputs: BTreeMap<String, OutputConfig>,
    /// An incrementing counter written to a PLC register at a fixed period, so the PLC can tell that
    /// linesight is alive and put the line into its own safe state when the counter stops.
    #[serde(default)]
    pub heartbeat: Option<HeartbeatConfig>,
    /// A holding register where linesight writes the faults it sees, one bit each (docs/modbus.md),
    /// so the PLC sees what systemd and MQTT see: camera lost, model unusable, inference stalled, a
    /// gate that did not confirm, a device unreachable.
    #[serde(default)]
    pub fault_word: Option<FaultWordConfig>,
    /// Result blocks for PLCs that read results with a handshake (see docs/modbus.md), by name.
    #[serde(default)]
    pub result_blocks: BTreeMap<String, ResultBlockConfig>,
}

/// The keys of the `modbus` section (the loader reads them one by one).
pub const MODBUS_KEYS: &[&str] = &["devices", "points", "outputs", "heartbeat", "fault_word", "result_blocks"];

// One device on the bus or network: how to reach it and how it counts and orders its data.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModbusDeviceConfig {
    /// Modbus TCP address of the device, `host:port` (the Modbus port is usually 502). Give `tcp` or `rtu`.
    #[serde(default)]
    pub tcp: Option<String>,
    /// Modbus RTU over a serial line. Devices on the same port share the bus: one request at a time.
    #[serde(default)]
    pub rtu: Option<RtuConfig>,
    /// Unit id (slave id) of the device: 1 to 247; 255 for some TCP gateways.
    #[serde(default = "default_unit")]
    pub unit: u8,
    /// Longest wait for one reply. A request that times out drops the connection, which is then rebuilt.
    #[serde(default = "default_modbus_timeout")]
    pub timeout: Dur,
    /// Whether addresses in this file count from 0 (protocol addresses) or from 1 (as many PLC manuals print them).
    #[serde(default)]
    pub addressing: Addressing,
    /// Default byte and word order of this device's multi-register values.
    #[serde(default)]
    pub order: WordOrder,
    /// Quiet time between two requests to this device. Defaults to 0 on TCP and to 3.5 character
    /// times (at least 1.75 ms) on a serial bus.
    #[serde(default)]
    pub gap: Option<Dur>,
}

fn default_unit() -> u8 {
    1
}
fn default_modbus_timeout() -> Dur {
    Dur::from_millis(200)
}

// The serial line of an RTU device; devices that share a port share one bus.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RtuConfig {
    /// The serial port, e.g. `/dev/ttyUSB0` or `/dev/ttyTHS1`.
    pub port: PathBuf,
    /// Bits per second.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Parity; the Modbus standard default is even.
    #[serde(default)]
    pub parity: Parity,
    /// Data bits: 7 or 8 (Modbus RTU uses 8).
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// Stop bits: 1 or 2 (2 is usual without parity).
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
}

fn default_baud() -> u32 {
    19200
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}

// Serial parity, as the device is set up (Modbus RTU defaults to even).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Parity {
    None,
    #[default]
    Even,
    Odd,
}

// Whether the file's addresses are protocol addresses or the 1-based ones of PLC manuals;
// per device, because manuals differ (see `wire_address`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Addressing {
    /// Address 0 is the first coil or register on the wire.
    #[default]
    ZeroBased,
    /// Address 1 is the first coil or register on the wire.
    OneBased,
}

/// Byte and word order of a value that spans registers. `ABCD` is big-endian (the Modbus
/// convention); `CDAB` swaps words (common on PLCs), `BADC` swaps bytes, `DCBA` is little-endian.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum WordOrder {
    #[default]
    ABCD,
    BADC,
    CDAB,
    DCBA,
}

/// The Modbus table a point lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PointArea {
    /// Coils (0x): read/write bits.
    Coil,
    /// Discrete inputs (1x): read-only bits.
    DiscreteInput,
    /// Input registers (3x): read-only 16-bit words.
    InputRegister,
    /// Holding registers (4x): read/write 16-bit words.
    HoldingRegister,
}

impl PointArea {
    pub fn is_bits(self) -> bool {
        matches!(self, PointArea::Coil | PointArea::DiscreteInput)
    }
    pub fn is_writable(self) -> bool {
        matches!(self, PointArea::Coil | PointArea::HoldingRegister)
    }
}

/// A point's value type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PointType {
    /// A coil, a discrete input, or one bit (`bit:`) of a register.
    Bool,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    /// ASCII text, two characters per register (`length:` registers), trailing NULs and spaces trimmed.
    String,
}

impl PointType {
    /// Registers one value occupies (strings: their `length`).
    pub fn registers(self, length: Option<u16>) -> u16 {
        match self {
            PointType::Bool | PointType::U16 | PointType::I16 => 1,
            PointType::U32 | PointType::I32 | PointType::F32 => 2,
            PointType::U64 | PointType::I64 | PointType::F64 => 4,
            PointType::String => length.unwrap_or(0),
        }
    }
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            PointType::U16 | PointType::I16 | PointType::U32 | PointType::I32 | PointType::U64 | PointType::I64
        )
    }
}

// A value linesight reads (a trigger, the encoder, a sensor) and publishes; the only
// kind of entry a remote command may write, and only when `writable`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PointConfig {
    /// The device (a key of `modbus.devices`) that holds the point.
    pub device: String,
    /// Which Modbus table the point lives in.
    pub area: PointArea,
    /// First address, counted as the device's `addressing` says.
    pub address: u32,
    /// Value type. Defaults to `bool` for coils and discrete inputs; required for registers.
    #[serde(default, rename = "type")]
    pub kind: Option<PointType>,
    /// For `type: bool` on a register: the bit, 0 (least significant) to 15.
    #[serde(default)]
    pub bit: Option<u8>,
    /// For `type: string`: the number of registers.
    #[serde(default)]
    pub length: Option<u16>,
    /// Byte/word order; defaults to the device's `order`.
    #[serde(default)]
    pub order: Option<WordOrder>,
    /// Engineering value = raw * scale + offset (inverted on write).
    #[serde(default)]
    pub scale: Option<f64>,
    /// Engineering value = raw * scale + offset (inverted on write).
    #[serde(default)]
    pub offset: Option<f64>,
    /// Engineering unit, for reports, e.g. `°C` or `bar`.
    #[serde(default)]
    pub unit: Option<String>,
    /// How often the point is read. Points of one device with the same interval form a poll group and
    /// neighbouring addresses are read in one request.
    pub poll: Dur,
    /// Publish a change only when the value moved by more than this (numbers only).
    #[serde(default)]
    pub deadband: Option<f64>,
    /// Publish the value at least this often even when it does not change.
    #[serde(default = "default_publish_every")]
    pub publish_every: Dur,
    /// Whether a remote command may set this point. Only coils and holding registers can be writable;
    /// a writable number needs `min` and `max`.
    #[serde(default)]
    pub writable: bool,
    /// Writable numbers: the lowest engineering value (after scale and offset) a command may write.
    /// A command below it is refused and never reaches the device.
    #[serde(default)]
    pub min: Option<f64>,
    /// Writable numbers: the highest engineering value (after scale and offset) a command may write.
    /// A command above it is refused and never reaches the device.
    #[serde(default)]
    pub max: Option<f64>,
}

fn default_publish_every() -> Dur {
    Dur::from_secs(10)
}

impl PointConfig {
    pub fn value_type(&self) -> PointType {
        self.kind.unwrap_or(PointType::Bool)
    }
}

// The table an output lives in: outputs are single on/off signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OutputArea {
    /// A coil (0x): one bit, written with function 5.
    Coil,
    /// A holding register (4x): one 16-bit word, written with function 6; `on` writes 1, `off` writes 0.
    HoldingRegister,
}

// The two states of an on/off output: used for an output's safe state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    Off,
    On,
}

impl Level {
    pub fn is_on(self) -> bool {
        self == Level::On
    }
}

// An on/off signal linesight drives (a reject gate, a stack-light lamp), with the
// safe state it is driven to at start, on shutdown and on any fault.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// The Modbus device (a key of `modbus.devices`) that holds this output.
    pub device: String,
    /// Which Modbus table the output lives in.
    pub area: OutputArea,
    /// Address within the area, counted as the device's `addressing` says.
    pub address: u32,
    /// The level this output is driven to at start, on shutdown and on any fault.
    pub safe_state: Level,
}

// The counter a PLC watches to know linesight is alive.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// The device (a key of `modbus.devices`) whose holding register receives the counter.
    pub device: String,
    /// Holding register address, counted as the device's `addressing` says.
    pub address: u32,
    /// Write period. The PLC should fault the line when the counter has not changed for 3 periods.
    #[serde(default = "default_heartbeat_period")]
    pub period: Dur,
}

// The register the PLC reads linesight's faults from.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultWordConfig {
    /// The device (a key of `modbus.devices`) whose holding register receives the fault bits.
    pub device: String,
    /// Holding register address, counted as the device's `addressing` says.
    pub address: u32,
}

fn default_heartbeat_period() -> Dur {
    Dur::from_millis(500)
}

/// Registers a result block occupies (see docs/modbus.md for the map).
pub const RESULT_BLOCK_REGISTERS: u32 = 8;

// A block of registers where a task hands its verdicts to a PLC with a handshake,
// for PLCs that must not miss a result.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResultBlockConfig {
    /// The device (a key of `modbus.devices`) whose holding registers hold the block.
    pub device: String,
    /// First holding register of the 8-register block, counted as the device's `addressing` says.
    pub address: u32,
    /// How often linesight reads the result-ready register to see the PLC's acknowledgement.
    #[serde(default = "default_ack_poll")]
    pub ack_poll: Dur,
    /// Results kept while the PLC has not acknowledged the previous one. When more pile up, the
    /// oldest unread is lost, the overrun flag is set and the loss is counted.
    #[serde(default = "default_result_buffer")]
    pub buffer: usize,
}

fn default_ack_poll() -> Dur {
    Dur::from_millis(10)
}
fn default_result_buffer() -> usize {
    4
}

/// The conveyor, as linesight sees it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    /// A bool point that is on while the conveyor moves. While it is off, rejects scheduled by time
    /// freeze and resume with the line (encoder-scheduled rejects follow the encoder anyway).
    #[serde(default)]
    pub running: Option<String>,
    /// An integer point (u16 or u32 register) counting encoder pulses; wrap-around is handled.
    #[serde(default)]
    pub encoder: Option<String>,
}

/// Stack-light outputs (keys of `modbus.outputs`) and the states they show.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StackLightConfig {
    /// On while every task inspects and nothing is in fault.
    #[serde(default)]
    pub running: Option<String>,
    /// On while the share of rejected parts (NG and ERROR) over the last parts is above a limit.
    #[serde(default)]
    pub ng_rate: Option<NgRateLight>,
    /// On while a camera, a model or a Modbus device is in fault.
    #[serde(default)]
    pub fault: Option<String>,
}

// A stack-light lamp that shows too many rejects in a recent window of parts.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NgRateLight {
    /// The output (a key of `modbus.outputs`).
    pub output: String,
    /// Share of rejected parts, 0..1, above which the light is on.
    pub above: f64,
    /// Number of most recent parts the share is taken over.
    #[serde(default = "default_ng_window")]
    pub window: usize,
}

fn default_ng_window() -> usize {
    100
}

/// What makes a task take a frame for a part.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    /// The point (a key of `modbus.points`): a bool such as a photo-eye, or an integer counter that the
    /// PLC increments per part.
    pub point: String,
    /// What counts as a part.
    #[serde(default)]
    pub on: TriggerOn,
    /// A register (a key of `modbus.points`, a raw u16 or u32 like `line.encoder`) where the PLC's
    /// high-speed counter latches the encoder count at the photo-eye's edge. The part's position is
    /// then that count, exact whatever the poll interval; without it, the edge is placed midway
    /// between the reading that showed it and the one before (about half a poll interval early).
    /// Needs `line.encoder` and an edge trigger, and is read in the trigger's poll cycle (same
    /// device and `poll` as the trigger point).
    #[serde(default)]
    pub latch: Option<String>,
}

// Which change of the trigger point means "a part is here".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TriggerOn {
    /// The bool point goes from off to on.
    #[default]
    RisingEdge,
    /// The bool point goes from on to off.
    FallingEdge,
    /// The integer point increases; each step is one part (a jump of 3 is 3 parts).
    Increment,
}

/// What the gate does for a part whose verdict is not ready when it arrives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MissAction {
    /// Throw the part out (nothing passes uninspected).
    #[default]
    Reject,
    /// Let the part pass (only where a later station inspects it again).
    Pass,
}

// Proof that the reject gate really moved, so a jammed gate raises a fault.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmConfig {
    /// A bool point that goes on when the gate has really acted (a flap sensor, a cylinder end switch).
    pub point: String,
    /// How long after the pulse starts the confirmation must be seen.
    pub within: Dur,
}
