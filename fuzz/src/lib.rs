//! The bodies of the fuzz targets: one function per parser of outside input, each taking the raw
//! bytes an attacker (or a damaged disk) could hand linesight.
//!
//! Shared on purpose: `fuzz/fuzz_targets/<name>.rs` calls the function of the same name under
//! libFuzzer, and `tests/it/fuzz_corpus.rs` includes this file and feeds every committed corpus
//! and regression file through the same function on the stable toolchain, so a parser that
//! panics on any of them fails the ordinary test suite.
//!
//! A function returns normally for any input. It panics only when linesight panics, or when an
//! invariant stated here does not hold (those are bugs too).
//!
//! Every target and the input it reads:
//!
//! | target | outside input | entry points |
//! |---|---|---|
//! | `config_yaml` | the config file (at start, reload, check-config) | `config::load_str` |
//! | `json_command` | a JSON command payload on `<base>/commands` | `telemetry::commands::parse_json` |
//! | `sparkplug_command` | an NCMD/DCMD payload (protobuf) and its topic | `telemetry::sparkplug::node::parse_command` |
//! | `mqtt_packet` | bytes from the broker | rumqttc's packet reader (as configured), then the command doors |
//! | `modbus_values` | register and bit replies, a set-point's value | `modbus::bus::read_reply`, `modbus::points::decode_in_block`, `modbus::codec` |
//! | `modbus_frame` | a Modbus TCP or RTU reply frame | tokio-modbus's client codec, then the above |
//! | `pyliteral` | a Python literal from ONNX metadata | `inference::pyliteral::parse` |
//! | `model_metadata` | an Ultralytics export's metadata map | `inference::yolo::YoloMeta::from_metadata` |
//! | `model_sidecar` | a model's contract (metadata or `<model>.json`) | `inference::classifier::Contract`, `inference::anomaly::parse_contract` |
//! | `queue_segment` | a queue segment file | `store::segment::scan`, `decode_at` |
//! | `queue_dir` | a whole queue directory (ledger, segments) | `store::Store::open`, the dialects' stamps |
//! | `state_files` | the command id file and the bdSeq file | `telemetry::guard::Guard`, `telemetry::sparkplug::bdseq::BdSeq` |

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A target's body: any bytes in, a panic only for a bug.
pub type Target = fn(&[u8]);

/// Every target, by name (the corpus folder `fuzz/corpus/<name>/`, the binary `fuzz_targets/<name>.rs`).
pub const TARGETS: &[(&str, Target)] = &[
    ("config_yaml", config_yaml),
    ("json_command", json_command),
    ("sparkplug_command", sparkplug_command),
    ("mqtt_packet", mqtt_packet),
    ("modbus_values", modbus_values),
    ("modbus_frame", modbus_frame),
    ("pyliteral", pyliteral),
    ("model_metadata", model_metadata),
    ("model_sidecar", model_sidecar),
    ("queue_segment", queue_segment),
    ("queue_dir", queue_dir),
    ("state_files", state_files),
];

/// Reads the structured part of an input: numbers and choices, then the rest as bytes.
/// Past the end every read gives zero, so any input is a valid one.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u16()) | u64::from(self.u16()) << 16 | u64::from(self.u16()) << 32 | u64::from(self.u16()) << 48
    }
    pub fn f64(&mut self) -> f64 {
        f64::from_bits(self.u64())
    }
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    /// One of `n` choices.
    pub fn choice(&mut self, n: usize) -> usize {
        usize::from(self.u8()) % n
    }
    /// `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }
    /// A length-prefixed (u16) chunk.
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.u16());
        self.bytes(n)
    }
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// Config

/// Where relative paths of a fuzzed config resolve: `firmware-config/`, as for the shipped configs
/// (so that their models and videos exist and a config can pass validation whole).
fn config_base() -> &'static Path {
    static BASE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        // The fuzz crate's manifest is in fuzz/, the integration tests' in the repository root.
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        [here.join("firmware-config"), here.join("../firmware-config")]
            .into_iter()
            .find(|p| p.is_dir())
            .unwrap_or_else(|| here.to_path_buf())
    })
}

/// The config file: parse, deserialize, validate; the diagnostics rendered as check-config does.
pub fn config_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match linesight::config::load_str(text, "fuzz.yaml", config_base()) {
        Ok(loaded) => {
            let _ = format!("{:?}", loaded.config());
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "a rejected config names at least one problem");
            for d in &errors.0 {
                assert!(d.line >= 1 && d.col >= 1, "diagnostic without a place: {d}");
            }
            let _ = errors.to_string();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// MQTT: commands and packets

/// A JSON command payload.
pub fn json_command(data: &[u8]) {
    use linesight::telemetry::commands::{parse_json, MAX_COMMAND_BYTES};
    use linesight::telemetry::guard::CommandId;
    let (id, parsed) = parse_json(data);
    if let Ok(c) = &parsed {
        assert!(data.len() <= MAX_COMMAND_BYTES);
        let _ = CommandId::json(&id).to_string();
        let _ = format!("{:?}", c.command);
    }
    // The answer is always serializable.
    let reply = match parsed {
        Ok(_) => serde_json::json!({"id": id, "ok": true}),
        Err(e) => serde_json::json!({"id": id, "ok": false, "error": e}),
    };
    serde_json::to_vec(&reply).expect("the reply serializes");
}

/// The node the Sparkplug targets pretend to be: group `line`, node `cell`, a task `inspect`
/// and a Modbus device `plc` with the points `speed` and `on`.
pub struct FuzzNode;

impl linesight::telemetry::sparkplug::node::Addressable for FuzzNode {
    fn is_task(&self, device: &str) -> bool {
        device == "inspect"
    }
    fn is_modbus(&self, device: &str) -> bool {
        device == "plc"
    }
    fn has_point(&self, device: &str, point: &str) -> bool {
        device == "plc" && matches!(point, "speed" | "on")
    }
}

fn sparkplug_topics() -> linesight::telemetry::sparkplug::Topics {
    linesight::telemetry::sparkplug::Topics { group: "line".into(), node: "cell".into() }
}

fn json_topics() -> linesight::telemetry::mqtt::Topics {
    let node = linesight::config::NodeIdentity { group_id: "line".into(), node_id: "cell".into() };
    linesight::telemetry::mqtt::Topics::new("linesight", &node)
}

/// What a session does with an incoming PUBLISH: a topic MQTT forbids ends the connection; the
/// JSON door takes the command topic, the Sparkplug door NCMD and DCMD topics and the primary
/// host's STATE (`scada-01` here); anything else is ignored.
pub fn incoming_publish(topic: &str, payload: &[u8], retain: bool) {
    use linesight::telemetry::sparkplug::node::parse_command;
    // An empty topic, a wildcard or a NUL drops the connection before any door sees the message.
    if linesight::telemetry::connection::bad_topic(topic).is_some() {
        return;
    }
    if topic == json_topics().commands() {
        json_command(payload);
    }
    let sp = sparkplug_topics();
    if topic == linesight::telemetry::sparkplug::Topics::state("scada-01") {
        let _ = linesight::telemetry::sparkplug::node::parse_host_state(payload);
    }
    if topic == sp.ncmd() || sp.dcmd_device(topic).is_some() {
        if let Ok(parsed) = parse_command(&sp, &FuzzNode, topic, payload, retain) {
            assert_eq!(parsed.origin.source, topic);
            for c in &parsed.commands {
                let _ = format!("{c:?}");
            }
        }
    }
}

/// An NCMD or DCMD payload: the first byte picks the topic (node, the task, the Modbus device,
/// an unknown device, a device with a `/`, the primary host's STATE, another node) and whether it
/// was retained.
pub fn sparkplug_command(data: &[u8]) {
    let mut input = Input::new(data);
    let pick = input.u8();
    let sp = sparkplug_topics();
    let topic = match pick % 7 {
        0 => sp.ncmd(),
        1 => sp.dcmd_all().replace('+', "inspect"),
        2 => sp.dcmd_all().replace('+', "plc"),
        3 => sp.dcmd_all().replace('+', "nobody"),
        4 => sp.dcmd_all().replace('+', "plc/extra"),
        5 => linesight::telemetry::sparkplug::Topics::state("scada-01"),
        _ => "spBv1.0/line/DCMD/other-node/plc".to_string(),
    };
    let retain = pick & 0x80 != 0;
    let payload = input.rest();
    incoming_publish(&topic, payload, retain);
    // Also the same payload as the JSON door would see it (a misrouted message).
    if pick % 7 == 0 {
        json_command(payload);
    }
}

/// Bytes from the broker, read packet by packet the way rumqttc's event loop does (with
/// linesight's incoming size limit); every PUBLISH goes to the command doors.
pub fn mqtt_packet(data: &[u8]) {
    use linesight::telemetry::connection::MAX_INCOMING_PACKET;
    use rumqttc::{Error, Packet};
    let mut stream = bytes::BytesMut::from(data);
    loop {
        let before = stream.len();
        match Packet::read(&mut stream, MAX_INCOMING_PACKET) {
            Ok(packet) => {
                assert!(stream.len() < before, "a packet was read without consuming bytes");
                if let Packet::Publish(p) = packet {
                    incoming_publish(&p.topic, &p.payload, p.retain);
                }
            }
            // Wait for more bytes: the end of this input.
            Err(Error::InsufficientBytes(_)) => return,
            // Anything else ends the connection.
            Err(e) => {
                let _ = e.to_string();
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Modbus

fn point_spec(input: &mut Input) -> linesight::modbus::codec::PointSpec {
    use linesight::config::{PointArea, PointType, WordOrder};
    const AREAS: [PointArea; 4] =
        [PointArea::Coil, PointArea::DiscreteInput, PointArea::InputRegister, PointArea::HoldingRegister];
    const TYPES: [PointType; 10] = [
        PointType::Bool,
        PointType::U16,
        PointType::I16,
        PointType::U32,
        PointType::I32,
        PointType::U64,
        PointType::I64,
        PointType::F32,
        PointType::F64,
        PointType::String,
    ];
    const ORDERS: [WordOrder; 4] = [WordOrder::ABCD, WordOrder::BADC, WordOrder::CDAB, WordOrder::DCBA];
    let flags = input.u8();
    let area = AREAS[usize::from(flags & 3)];
    let ty = if area.is_bits() { PointType::Bool } else { TYPES[input.choice(TYPES.len())] };
    let order = ORDERS[usize::from(flags >> 2 & 3)];
    let address = input.u16();
    let length = if ty == PointType::String { Some(u16::from(input.u8())) } else { None };
    let bit = (flags & 0x10 != 0).then(|| input.u8());
    // As `PointSpec::from_config` makes it: a bit area holds one bit, a register area the type's registers.
    let count = if area.is_bits() { 1 } else { ty.registers(length).max(1) };
    let (scale, offset) = if flags & 0x20 != 0 { (input.f64(), input.f64()) } else { (1.0, 0.0) };
    let limits = (flags & 0x40 != 0).then(|| (input.f64(), input.f64()));
    linesight::modbus::codec::PointSpec { area, address, ty, bit, count, order, scale, offset, limits }
}

fn json_value(input: &mut Input) -> serde_json::Value {
    match input.choice(6) {
        0 => serde_json::Value::Bool(input.bool()),
        1 => serde_json::Value::from(input.u64() as i64),
        2 => serde_json::Value::from(input.u64()),
        3 => serde_json::Number::from_f64(input.f64()).map_or(serde_json::Value::Null, serde_json::Value::Number),
        4 => serde_json::Value::String(String::from_utf8_lossy(input.chunk()).into_owned()),
        _ => serde_json::Value::Null,
    }
}

/// The points of one poll group (specs from the input), the reads `plan_reads` makes of them,
/// a reply of any length for each (registers or bits from the input), and each point decoded
/// from it as the poller does; then a set-point value encoded for one of them, and decoded back.
pub fn modbus_values(data: &[u8]) {
    use linesight::modbus::bus::{read_reply, ReadData};
    use linesight::modbus::codec::{self, plan_reads, MAX_READ_BITS, MAX_READ_REGISTERS};
    use linesight::modbus::points::decode_in_block;
    use tokio_modbus::Response;
    let mut input = Input::new(data);
    let n = 1 + input.choice(8);
    let specs: Vec<_> = (0..n).map(|_| point_spec(&mut input)).collect();
    let max_gap = u16::from(input.u8());
    let blocks = plan_reads(&specs, max_gap);
    let mut planned: Vec<usize> = blocks.iter().flat_map(|b| b.points.iter().copied()).collect();
    planned.sort_unstable();
    assert_eq!(planned, (0..n).collect::<Vec<_>>(), "every point is read by exactly one block");
    for block in &blocks {
        let limit = if block.area.is_bits() { MAX_READ_BITS } else { MAX_READ_REGISTERS };
        for &i in &block.points {
            let p = &specs[i];
            assert!(p.address >= block.start, "point {i} starts before its block: {p:?} {block:?}");
            let fits = u32::from(p.address) + u32::from(p.count) <= 0x1_0000 && p.count <= limit;
            if fits {
                assert!(block.count <= limit, "a block is larger than one request: {block:?}");
                assert!(
                    u32::from(p.address) + u32::from(p.count) <= u32::from(block.start) + u32::from(block.count),
                    "point {i} ends after its block: {p:?} {block:?}"
                );
            }
        }
        // The reply: usually the right length, sometimes not (a device that answers wrongly).
        let wrong = input.u8();
        let len = match wrong & 3 {
            0 => usize::from(block.count),
            1 => usize::from(block.count).saturating_sub(usize::from(wrong >> 2)),
            2 => usize::from(block.count) + usize::from(wrong >> 2),
            _ => usize::from(input.u16()) % 4096,
        };
        let response = if block.area.is_bits() {
            let bits: Vec<bool> = (0..len).map(|k| input.u8() >> (k % 8) & 1 == 1).collect();
            if wrong & 0x80 != 0 {
                Response::ReadDiscreteInputs(bits)
            } else {
                Response::ReadCoils(bits)
            }
        } else {
            let words: Vec<u16> = (0..len).map(|_| input.u16()).collect();
            match wrong & 0xC0 {
                0x40 => Response::ReadCoils(words.iter().map(|w| w & 1 == 1).collect()),
                0x80 => Response::ReadInputRegisters(words),
                _ => Response::ReadHoldingRegisters(words),
            }
        };
        let Ok(data) = read_reply(block.count, response) else { continue };
        // What the poller accepts has the block's length, of the block's kind.
        match &data {
            ReadData::Words(w) => {
                if !block.area.is_bits() {
                    assert_eq!(w.len(), usize::from(block.count));
                }
            }
            ReadData::Bits(b) => assert_eq!(b.len(), usize::from(block.count)),
        }
        // A bit reply to a register read (or the reverse) is refused by `read_reply` only by
        // length; the poller decodes what matches the area.
        let matches_area =
            matches!((&data, block.area.is_bits()), (ReadData::Bits(_), true) | (ReadData::Words(_), false));
        if !matches_area {
            continue;
        }
        for &i in &block.points {
            if let Ok(v) = decode_in_block(&specs[i], block, &data) {
                let _ = v.to_json();
                let _ = v.as_f64();
            }
        }
    }
    // A set-point command's value for the first point.
    let spec = &specs[0];
    let value = json_value(&mut input);
    if spec.area.is_bits() {
        let _ = codec::encode_bit(&value);
        return;
    }
    let Ok(words) = codec::encode_registers(spec, &value) else { return };
    assert_eq!(words.len(), usize::from(spec.ty.registers(Some(spec.count)).max(1)), "{spec:?} {value}");
    let back = codec::decode_registers(spec, &words);
    let unscaled = spec.scale == 1.0 && spec.offset == 0.0;
    use linesight::part::sample::Value as V;
    match (&back, &value) {
        (Ok(V::Int(i)), v) if unscaled && v.is_i64() => assert_eq!(Some(*i), v.as_i64(), "{spec:?}"),
        (Ok(V::UInt(u)), v) if unscaled && v.is_u64() => assert_eq!(Some(*u), v.as_u64(), "{spec:?}"),
        (Ok(V::Text(t)), serde_json::Value::String(s)) => assert_eq!(t.as_str(), s.trim_end_matches(' '), "{spec:?}"),
        _ => {}
    }
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
}

/// A Modbus reply frame as tokio-modbus's client reads it (TCP with the MBAP header, or RTU
/// with its CRC), for a read or a write request linesight makes; then what `Device` does with
/// the response. The first bytes pick the transport and the request, the rest is the reply.
pub fn modbus_frame(data: &[u8]) {
    use linesight::modbus::bus::read_reply;
    use tokio::io::AsyncWriteExt;
    use tokio_modbus::client::{rtu, tcp, Client};
    use tokio_modbus::{Request, Response, Slave};
    let mut input = Input::new(data);
    let pick = input.u8();
    let address = u16::from(input.u8());
    let count = 1 + u16::from(input.u8() % 125);
    let request = match pick >> 1 & 7 {
        0 => Request::ReadCoils(address, count),
        1 => Request::ReadDiscreteInputs(address, count),
        2 => Request::ReadInputRegisters(address, count),
        3 => Request::ReadHoldingRegisters(address, count),
        4 => Request::WriteSingleCoil(address, pick & 0x80 != 0),
        5 => Request::WriteSingleRegister(address, count),
        _ => Request::WriteMultipleRegisters(address, vec![count; usize::from(count % 8) + 1].into()),
    };
    let is_read = pick >> 1 & 7 < 4;
    let reply = input.rest().to_vec();
    RUNTIME.with(|rt| {
        rt.block_on(async move {
            let (client_io, mut server_io) = tokio::io::duplex(1 << 16);
            let mut ctx = if pick & 1 == 0 {
                tcp::attach_slave(client_io, Slave(1))
            } else {
                rtu::attach_slave(client_io, Slave(1))
            };
            // The "device": answers with the input, then hangs up (no timers: the end of the
            // input is the end of the stream).
            let device = tokio::spawn(async move {
                let _ = server_io.write_all(&reply).await;
                let _ = server_io.shutdown().await;
                // Keep reading the request so the client never blocks writing it.
                let mut sink = vec![0u8; 1024];
                while let Ok(n) = tokio::io::AsyncReadExt::read(&mut server_io, &mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            });
            let result = ctx.call(request).await;
            drop(ctx);
            let _ = device.await;
            if let Ok(Ok(response)) = result {
                let _ = format!("{response:?}");
                if is_read {
                    let _ = read_reply(count, response);
                } else if let Response::WriteSingleCoil(a, _) | Response::WriteSingleRegister(a, _) = response {
                    let _ = a == address;
                }
            }
        })
    });
}

// ---------------------------------------------------------------------------------------------
// Models

/// A Python literal of ONNX metadata.
pub fn pyliteral(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(v) = linesight::inference::pyliteral::parse(text) {
        let _ = format!("{v:?}");
    }
}

/// An Ultralytics export's metadata map. Entries are separated by NUL bytes, each `key=value`
/// (the value may hold `=`, newlines, anything but NUL).
pub fn model_metadata(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let map: HashMap<String, String> = text
        .split('\0')
        .filter_map(|entry| entry.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Ok(meta) = linesight::inference::yolo::YoloMeta::from_metadata(&map) {
        assert!(!meta.names.is_empty());
        assert!(meta.imgsz.0 >= 1 && meta.imgsz.1 >= 1 && meta.imgsz.0 <= 8192 && meta.imgsz.1 <= 8192);
        assert!(meta.stride >= 1);
        // The stride is the number written, not a wrapped one.
        if let Some(Ok(linesight::inference::pyliteral::Py::Int(s))) =
            map.get("stride").map(|s| linesight::inference::pyliteral::parse(s))
        {
            assert_eq!(i64::from(meta.stride), s, "stride {s}");
        }
    }
}

/// A model's contract: a classifier's (ONNX metadata key `linesight` or the sidecar), an anomaly
/// model's sidecar, and the check that tells them apart.
pub fn model_sidecar(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(c) = linesight::inference::classifier::Contract::parse(text) {
        if c.check().is_ok() {
            assert!(c.classes.len() >= 2 && !c.ok_classes.is_empty());
        }
    }
    let _ = linesight::inference::anomaly::says_anomaly(text);
    if let Ok(c) = linesight::inference::anomaly::parse_contract(text, Path::new("fuzz.onnx.json")) {
        assert!(c.threshold > 0.0 && c.threshold <= 1.0);
    }
}

// ---------------------------------------------------------------------------------------------
// The disk queue and the node's state files

/// One queue segment file: the recovery scan, with what it promises.
pub fn queue_segment(data: &[u8]) {
    use linesight::store::segment::{decode_at, scan, scan_range};
    use linesight::store::MAX_SEQ;
    for (after, max) in [(0, MAX_SEQ), (5, MAX_SEQ), (0, u64::MAX)] {
        let s = if max == MAX_SEQ && after == 0 { scan(data, after) } else { scan_range(data, after, max) };
        let mut last = after;
        let mut covered = 0usize;
        let mut pieces: Vec<(usize, usize)> = s.damaged.iter().map(|r| (r.start, r.end)).collect();
        for e in &s.entries {
            assert!(e.seq > last && e.seq <= max, "sequence numbers strictly increase within bounds");
            last = e.seq;
            let d = decode_at(data, e.offset as usize).expect("an entry decodes");
            assert_eq!((d.seq, d.len), (e.seq, e.len as usize));
            assert!(d.qos <= 2);
            pieces.push((e.offset as usize, e.offset as usize + e.len as usize));
        }
        // Records and damage tile the file exactly, in order.
        pieces.sort_unstable();
        for (start, end) in pieces {
            assert_eq!(start, covered, "a gap or overlap at byte {start}");
            assert!(end > start);
            covered = end;
        }
        assert_eq!(covered, data.len());
        assert!(s.valid_end <= data.len());
    }
}

fn scratch_dir() -> tempfile::TempDir {
    // tmpfs when there is one: these targets write and fsync files for every input.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new().prefix("linesight-fuzz-").tempdir_in(shm) {
            return d;
        }
    }
    tempfile::Builder::new().prefix("linesight-fuzz-").tempdir().expect("a temporary directory")
}

/// A whole queue directory written from the input (the ledger, segments named by sequence
/// numbers, strays), opened as at start; every record recovered is stamped as each dialect
/// stamps it before sending, acknowledged, and the queue opened again.
///
/// The input is a list of files: a kind byte (0 the ledger `ack`, 1 `ack.tmp`, 2 a segment
/// named by a small number, 3 a segment named by a u64, 4 a stray file), then a u16-prefixed
/// content.
pub fn queue_dir(data: &[u8]) {
    use linesight::store::segment::segment_name;
    use linesight::store::{Store, StoreConfig, WhenFull};
    use linesight::telemetry::durable::{JsonStamp, Stamp};
    use linesight::telemetry::sparkplug::node::SeqStamp;
    let mut input = Input::new(data);
    let dir = scratch_dir();
    let mut files = 0;
    while !input.is_empty() && files < 8 {
        files += 1;
        let kind = input.u8();
        let name = match kind % 5 {
            0 => "ack".to_string(),
            1 => "ack.tmp".to_string(),
            2 => segment_name(u64::from(kind >> 3)),
            3 => segment_name(input.u64()),
            _ => "stray".to_string(),
        };
        std::fs::write(dir.path().join(name), input.chunk()).expect("write a queue file");
    }
    let cfg = StoreConfig {
        dir: dir.path().to_path_buf(),
        max_bytes: 1 << 20,
        segment_bytes: 4096,
        fsync_every: std::time::Duration::ZERO,
        when_full: WhenFull::DropOldest,
    };
    let (mut store, recovery) = match Store::open(cfg.clone()) {
        Ok(s) => s,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert_eq!(recovery.records, store.len());
    let records = store.try_peek(usize::MAX).unwrap_or_default();
    let mut last = store.acked();
    let mut seq = 0u8;
    for r in &records {
        assert!(r.seq > last && r.seq <= linesight::store::MAX_SEQ, "records come out in order");
        last = r.seq;
        let _ = JsonStamp.stamp(&r.payload, r.seq, true);
        let _ = SeqStamp { seq: &mut seq }.stamp(&r.payload, r.seq, false);
    }
    if let Some(r) = records.get(records.len() / 2) {
        store.ack(r.seq).expect("ack a recovered record");
    }
    let pushed = store.push("t/x", b"{}", 1, false);
    drop(store);
    let (store, _) = Store::open(cfg).expect("a queue this store wrote opens again");
    if let Ok(seq) = pushed {
        assert!(store.try_peek(usize::MAX).unwrap_or_default().iter().any(|r| r.seq == seq), "the new record is kept");
    }
}

/// The node's state files, as read at start: the ids of recent commands (`command-ids`) and the
/// Sparkplug bdSeq. The input is two u16-prefixed contents; a command is then admitted.
pub fn state_files(data: &[u8]) {
    use linesight::telemetry::guard::{CommandId, Guard, Origin, ID_FILE};
    use linesight::telemetry::sparkplug::bdseq::BdSeq;
    let mut input = Input::new(data);
    let dir = scratch_dir();
    std::fs::write(dir.path().join(ID_FILE), input.chunk()).expect("write the id file");
    let bdseq = dir.path().join("bdseq");
    std::fs::write(&bdseq, input.chunk()).expect("write the bdSeq file");
    let guard = Guard::open(dir.path());
    let now_ms = linesight::util::time::now_ms();
    let id = String::from_utf8_lossy(input.rest()).into_owned();
    let origin = Origin { source: "fuzz/commands".into(), id: CommandId::Json(id), sent_ms: Some(now_ms) };
    let first = guard.admit(&origin, 1, now_ms, tokio::time::Instant::now());
    if first.is_ok() {
        assert!(guard.admit(&origin, 1, now_ms, tokio::time::Instant::now()).is_err(), "a replay is refused");
        // And after a restart.
        assert!(Guard::open(dir.path()).admit(&origin, 1, now_ms, tokio::time::Instant::now()).is_err());
    }
    let mut b = BdSeq::open(&bdseq);
    let n = b.take();
    assert_eq!(BdSeq::open(&bdseq).take(), n.wrapping_add(1), "the next start continues");
}
