//! The `modbus` section: devices, the points linesight reads, the outputs,
//! the heartbeat and the result blocks it writes, and that no two of them
//! write the same address.

use std::time::Duration;

use super::super::diagnostic::{Broken, Collector};
use super::super::types::*;
use super::{hint_known, join};

/// Every device, every point, output, heartbeat and result block, then the overlaps of what is written.
pub(super) fn check(config: &Config, broken: &Broken, c: &mut Collector) {
    for (name, dev) in &config.modbus.devices {
        device(name, dev, c);
    }
    // Everything linesight may write, per device and table, to find two owners of one address.
    let mut written: Vec<Written> = Vec::new();
    for (name, p) in &config.modbus.points {
        written.extend(point(config, broken, name, p, c));
    }
    for (name, out) in &config.modbus.outputs {
        written.extend(output(config, broken, name, out, c));
    }
    if let Some(hb) = &config.modbus.heartbeat {
        written.extend(heartbeat(config, broken, hb, c));
    }
    if let Some(fw) = &config.modbus.fault_word {
        written.extend(fault_word(config, broken, fw, c));
    }
    for (name, rb) in &config.modbus.result_blocks {
        written.extend(result_block(config, broken, name, rb, c));
    }
    two_owners(&written, c);
}

/// One range of addresses linesight may write.
struct Written {
    device: String,
    coils: bool,
    start: u32,
    count: u32,
    owner: String,
    path: Vec<String>,
}

impl Written {
    fn new(device: &str, coils: bool, start: u32, count: u32, owner: String, path: &[&str]) -> Self {
        Written {
            device: device.to_string(),
            coils,
            start,
            count,
            owner,
            path: path.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// The device an entry at `path` names, or a report that it is not defined
/// (unless it is defined but broken, which was reported already).
fn device_of<'c>(
    config: &'c Config,
    broken: &Broken,
    path: &[&str],
    owner: &str,
    device: &str,
    c: &mut Collector,
) -> Option<&'c ModbusDeviceConfig> {
    let dev = config.modbus.devices.get(device);
    if dev.is_none() && !broken.devices.contains(device) {
        let known: Vec<&str> = config.modbus.devices.keys().map(String::as_str).collect();
        c.at(
            &join(path, &["device"]),
            format!("{owner} names device `{device}`, which is not in modbus.devices"),
            hint_known(device, &known, "modbus.devices"),
        );
    }
    dev
}

/// How a device is wired (TCP or RTU, not both), its unit id and its timing.
fn device(name: &str, dev: &ModbusDeviceConfig, c: &mut Collector) {
    let path = ["modbus", "devices", name];
    let at = |k: &'static str| join(&path, &[k]);
    match (&dev.tcp, &dev.rtu) {
        (Some(_), Some(_)) => {
            c.at(&path, format!("device `{name}` has both `tcp` and `rtu`"), "keep the one the device is wired with")
        }
        (None, None) => c.at(
            &path,
            format!("device `{name}` has neither `tcp` nor `rtu`"),
            "add `tcp: \"host:502\"` or `rtu: { port: /dev/ttyUSB0, baud: 19200 }`",
        ),
        _ => {}
    }
    if let Some(tcp) = &dev.tcp {
        if parse_host_port(tcp).is_none() {
            c.at(&at("tcp"), format!("`{tcp}` is not a `host:port` address"), "write it as `192.168.10.5:502`");
        }
    }
    if let Some(rtu) = &dev.rtu {
        serial_line(&path, rtu, c);
    }
    if dev.timeout.get().is_zero() || dev.timeout.get().as_secs() > 60 {
        c.at(
            &at("timeout"),
            format!("timeout {} is out of range", dev.timeout),
            "use 10ms to 60s; 100ms to 500ms suits a PLC on the local network",
        );
    }
    if dev.unit == 0 {
        c.at(
            &at("unit"),
            "unit id 0 is the broadcast address; writes to it are never acknowledged",
            "use the device's unit id (1 to 247, or 255 for some TCP gateways)",
        );
    } else if dev.rtu.is_some() && dev.unit > 247 {
        c.at(&at("unit"), format!("unit id {} does not exist on a serial bus", dev.unit), "use 1 to 247");
    }
    if let Some(gap) = dev.gap {
        if gap.get().as_secs() >= 1 {
            c.at(&at("gap"), format!("gap {gap} between requests is too long"), "use 0 to 1s; a few ms is usual");
        }
    }
}

/// The serial settings of an RTU device.
fn serial_line(path: &[&str], rtu: &RtuConfig, c: &mut Collector) {
    if !(300..=1_000_000).contains(&rtu.baud) {
        c.at(
            &join(path, &["rtu", "baud"]),
            format!("baud rate {} is out of range", rtu.baud),
            "use the device's rate, e.g. 9600, 19200 or 115200",
        );
    }
    if !(7..=8).contains(&rtu.data_bits) {
        c.at(&join(path, &["rtu", "data_bits"]), format!("{} data bits", rtu.data_bits), "Modbus RTU uses 8 data bits");
    }
    if !(1..=2).contains(&rtu.stop_bits) {
        c.at(&join(path, &["rtu", "stop_bits"]), format!("{} stop bits", rtu.stop_bits), "use 1 or 2");
    }
    if rtu.port.as_os_str().is_empty() {
        c.at(&join(path, &["rtu", "port"]), "the serial port is empty", "give the device node, e.g. /dev/ttyUSB0");
    }
}

/// One point: its type fits its area, its options fit its type, its timing,
/// whether it may be written, and its addresses. Returns what it may write.
fn point(config: &Config, broken: &Broken, name: &str, p: &PointConfig, c: &mut Collector) -> Option<Written> {
    let path = ["modbus", "points", name];
    let dev = device_of(config, broken, &path, &format!("point `{name}`"), &p.device, c)?;
    if !point_type_fits(name, p, &path, c) {
        return None;
    }
    let ty = p.value_type();
    let at = |k: &'static str| join(&path, &[k]);
    bit_and_length(name, p, ty, &path, c);
    let numeric = !matches!(ty, PointType::Bool | PointType::String);
    for (key, v) in [("scale", p.scale), ("offset", p.offset), ("deadband", p.deadband)] {
        let Some(v) = v else { continue };
        if !numeric {
            c.at(&at(key), format!("`{key}` only applies to numbers, not to {ty:?}"), format!("remove `{key}`"));
        } else if !v.is_finite() || (key == "scale" && v == 0.0) || (key == "deadband" && v < 0.0) {
            c.at(
                &at(key),
                format!("{key} {v} is not usable"),
                "use a finite number (a non-zero scale, a deadband of 0 or more)",
            );
        }
    }
    point_timing(p, &path, c);
    point_writable(p, &path, c);
    let count = if p.area.is_bits() { 1 } else { ty.registers(p.length) as u32 };
    let start = span(&path, dev, &p.device, p.address, count, c)?;
    let written = p.writable && p.area.is_writable();
    written.then(|| {
        Written::new(&p.device, p.area == PointArea::Coil, start, count, format!("writable point `{name}`"), &path)
    })
}

/// A bit area holds bools only, and a register point says its type.
fn point_type_fits(name: &str, p: &PointConfig, path: &[&str], c: &mut Collector) -> bool {
    let ty = p.value_type();
    if p.area.is_bits() && ty != PointType::Bool {
        c.at(
            &join(path, &["type"]),
            format!("a {:?} holds one bit; it cannot be read as {ty:?}", p.area),
            "use `type: bool`, or move the point to an input or holding register",
        );
        return false;
    }
    if !p.area.is_bits() && p.kind.is_none() {
        c.at(
            path,
            format!("register point `{name}` has no `type`"),
            "add `type:` (bool with `bit:`, u16, i16, u32, i32, u64, i64, f32, f64 or string with `length:`)",
        );
        return false;
    }
    true
}

/// `bit` belongs to a bool read from a register, `length` to a string.
fn bit_and_length(name: &str, p: &PointConfig, ty: PointType, path: &[&str], c: &mut Collector) {
    let at = |k: &'static str| join(path, &[k]);
    match (ty, p.area.is_bits(), p.bit) {
        (PointType::Bool, false, None) => c.at(
            path,
            format!("point `{name}` reads a bool from a register but says no `bit`"),
            "add `bit:` 0 (least significant) to 15",
        ),
        (PointType::Bool, false, Some(b)) if b > 15 => {
            c.at(&at("bit"), format!("bit {b} is outside a 16-bit register"), "use a bit from 0 to 15")
        }
        (_, _, Some(_)) if ty != PointType::Bool || p.area.is_bits() => c.at(
            &at("bit"),
            "`bit` only applies to a bool read from a register",
            "remove `bit`, or read the register with `type: bool`",
        ),
        _ => {}
    }
    match (ty, p.length) {
        (PointType::String, None) => {
            c.at(path, "a string point needs `length:`", "give its length in registers (2 characters each)")
        }
        (PointType::String, Some(n)) if n == 0 || n > 125 => {
            c.at(&at("length"), format!("length {n} is out of range"), "use 1 to 125 registers (one request)")
        }
        (PointType::String, _) => {}
        (_, Some(_)) => c.at(&at("length"), "`length` only applies to strings", "remove it"),
        _ => {}
    }
}

/// How often a point is read and published.
fn point_timing(p: &PointConfig, path: &[&str], c: &mut Collector) {
    if p.poll.get() < Duration::from_millis(1) || p.poll.get().as_secs() > 3600 {
        c.at(
            &join(path, &["poll"]),
            format!("poll interval {} is out of range", p.poll),
            "use 1ms to 1h (triggers 2ms to 10ms, sensors 100ms or more)",
        );
    }
    if p.publish_every.get() < Duration::from_millis(100) {
        c.at(
            &join(path, &["publish_every"]),
            format!("{} is too often", p.publish_every),
            "use 100ms or more; changes are published as they happen anyway",
        );
    }
}

/// Only whole coils and holding registers can be written, and a writable
/// number has the engineering limits every command is checked against.
fn point_writable(p: &PointConfig, path: &[&str], c: &mut Collector) {
    point_limits(p, path, c);
    if p.writable && p.bit.is_some() {
        c.at(
            &join(path, &["writable"]),
            "one bit of a register cannot be written safely: the read-modify-write would race the PLC",
            "make the PLC expose the bit as a coil, or remove `writable`",
        );
    }
    if p.writable && !p.area.is_writable() {
        c.at(
            &join(path, &["writable"]),
            format!("a {:?} cannot be written", p.area),
            "only coils and holding registers can be writable; remove `writable`",
        );
    }
}

/// `min` and `max`: required on a writable number, finite and in order; nowhere else.
fn point_limits(p: &PointConfig, path: &[&str], c: &mut Collector) {
    let ty = p.value_type();
    let numeric = !matches!(ty, PointType::Bool | PointType::String);
    let given = p.min.is_some() || p.max.is_some();
    let at = |k: &'static str| join(path, &[k]);
    if given && !numeric {
        let key = if p.min.is_some() { "min" } else { "max" };
        c.at(&at(key), format!("`min` and `max` only apply to numbers, not to {ty:?}"), "remove them");
        return;
    }
    if given && !p.writable {
        let key = if p.min.is_some() { "min" } else { "max" };
        c.at(
            &at(key),
            "`min` and `max` limit what a command may write, and this point is not writable",
            "remove them, or add `writable: true`",
        );
        return;
    }
    if !(p.writable && numeric && p.area.is_writable()) {
        return;
    }
    match (p.min, p.max) {
        (Some(min), Some(max)) => {
            if !(min.is_finite() && max.is_finite()) {
                c.at(&at("min"), format!("limits {min} to {max} are not numbers"), "use finite numbers");
            } else if min > max {
                c.at(
                    &at("min"),
                    format!("`min` {min} is above `max` {max}"),
                    "give the lowest value a command may write as `min`, the highest as `max`",
                );
            }
        }
        (min, max) => {
            let missing = match (min, max) {
                (None, None) => "`min` and `max`",
                (None, Some(_)) => "`min`",
                _ => "`max`",
            };
            c.at(
                &at("writable"),
                format!("a writable number needs engineering limits: {missing} missing"),
                "add `min:` and `max:` in engineering units (after scale and offset): a command outside them is refused",
            );
        }
    }
}

/// An output: its device and address. Returns what it writes.
fn output(config: &Config, broken: &Broken, name: &str, out: &OutputConfig, c: &mut Collector) -> Option<Written> {
    let path = ["modbus", "outputs", name];
    let dev = device_of(config, broken, &path, &format!("output `{name}`"), &out.device, c)?;
    let start = span(&path, dev, &out.device, out.address, 1, c)?;
    Some(Written::new(&out.device, out.area == OutputArea::Coil, start, 1, format!("output `{name}`"), &path))
}

/// The heartbeat register: its period, device and address. Returns what it writes.
fn heartbeat(config: &Config, broken: &Broken, hb: &HeartbeatConfig, c: &mut Collector) -> Option<Written> {
    let path = ["modbus", "heartbeat"];
    let p = hb.period.get();
    if p < Duration::from_millis(10) || p.as_secs() > 60 {
        c.at(
            &["modbus", "heartbeat", "period"],
            format!("heartbeat period {} is out of range", hb.period),
            "use 10ms to 60s; 100ms to 1s is usual",
        );
    }
    let dev = device_of(config, broken, &path, "the heartbeat", &hb.device, c)?;
    let start = span(&path, dev, &hb.device, hb.address, 1, c)?;
    Some(Written::new(&hb.device, false, start, 1, "the heartbeat".into(), &path))
}

/// The fault word's device and address. Returns what it writes.
fn fault_word(config: &Config, broken: &Broken, fw: &FaultWordConfig, c: &mut Collector) -> Option<Written> {
    let path = ["modbus", "fault_word"];
    let dev = device_of(config, broken, &path, "the fault word", &fw.device, c)?;
    let start = span(&path, dev, &fw.device, fw.address, 1, c)?;
    Some(Written::new(&fw.device, false, start, 1, "the fault word".into(), &path))
}

/// A result block: its buffer, its handshake polling, device and addresses. Returns what it writes.
fn result_block(
    config: &Config,
    broken: &Broken,
    name: &str,
    rb: &ResultBlockConfig,
    c: &mut Collector,
) -> Option<Written> {
    let path = ["modbus", "result_blocks", name];
    if rb.buffer == 0 || rb.buffer > 1000 {
        c.at(&join(&path, &["buffer"]), format!("buffer {} is out of range", rb.buffer), "use 1 to 1000 results");
    }
    let p = rb.ack_poll.get();
    if p < Duration::from_millis(1) || p.as_secs() > 10 {
        c.at(&join(&path, &["ack_poll"]), format!("ack_poll {} is out of range", rb.ack_poll), "use 1ms to 10s");
    }
    let dev = device_of(config, broken, &path, &format!("result block `{name}`"), &rb.device, c)?;
    let start = span(&path, dev, &rb.device, rb.address, RESULT_BLOCK_REGISTERS, c)?;
    let owner = format!("result block `{name}`");
    Some(Written::new(&rb.device, false, start, RESULT_BLOCK_REGISTERS, owner, &path))
}

/// Two writers of one coil or register fight each other: report every overlap.
fn two_owners(written: &[Written], c: &mut Collector) {
    for (i, a) in written.iter().enumerate() {
        for b in &written[..i] {
            let overlap = a.device == b.device
                && a.coils == b.coils
                && a.start < b.start + b.count
                && b.start < a.start + a.count;
            if overlap {
                let path: Vec<&str> = a.path.iter().map(String::as_str).collect();
                c.at(
                    &join(&path, &["address"]),
                    format!(
                        "{} writes the same {} of device `{}` as {}",
                        a.owner,
                        if a.coils { "coil" } else { "holding register" },
                        a.device,
                        b.owner
                    ),
                    "give each output its own address: two owners of one output fight each other",
                );
            }
        }
    }
}

/// Check that `count` items from `address` fit the device's address space;
/// returns the first protocol address.
fn span(
    path: &[&str],
    dev: &ModbusDeviceConfig,
    device: &str,
    address: u32,
    count: u32,
    c: &mut Collector,
) -> Option<u32> {
    let (lo, hi) = match dev.addressing {
        Addressing::ZeroBased => (0, 65535),
        Addressing::OneBased => (1, 65536),
    };
    let last = address.saturating_add(count.max(1) - 1);
    if address < lo || last > hi {
        let what = if count > 1 { format!("addresses {address}..={last}") } else { format!("address {address}") };
        c.at(
            &join(path, &["address"]),
            format!("{what} is out of range for device `{device}` ({:?} addressing: {lo}..={hi})", dev.addressing),
            "use an address in that range, or change the device's `addressing`",
        );
        return None;
    }
    Some(u32::from(wire_address(dev.addressing, address)))
}

/// The protocol address for a configured address. Only called after the range check.
pub fn wire_address(addressing: Addressing, address: u32) -> u16 {
    match addressing {
        Addressing::ZeroBased => address as u16,
        Addressing::OneBased => (address - 1) as u16,
    }
}

/// `host:port` (IPv6 hosts in brackets) of a Modbus TCP device, or `None` if it is not one.
pub(crate) fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return None;
    }
    Some((host.to_string(), port))
}

/// Report a reference to a point that is not defined (unless it is defined but broken).
pub(super) fn unknown_point(config: &Config, broken: &Broken, path: &[&str], point: &str, c: &mut Collector) {
    if broken.points.contains(point) {
        return;
    }
    let known: Vec<&str> = config.modbus.points.keys().map(String::as_str).collect();
    c.at(path, format!("point `{point}` is not in modbus.points"), hint_known(point, &known, "modbus.points"));
}

/// A reference to a point that must be an on/off signal.
pub(super) fn bool_point(config: &Config, broken: &Broken, path: &[&str], point: &str, c: &mut Collector) {
    match config.modbus.points.get(point) {
        Some(p) if p.value_type() != PointType::Bool => c.at(
            path,
            format!("point `{point}` is {:?}, and an on/off signal is needed", p.value_type()),
            "use a coil, a discrete input, or a register bit (`type: bool`, `bit:`)",
        ),
        Some(_) => {}
        None => unknown_point(config, broken, path, point, c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        assert_eq!(parse_host_port("192.168.10.5:502"), Some(("192.168.10.5".into(), 502)));
        assert_eq!(parse_host_port("[::1]:5020"), Some(("::1".into(), 5020)));
        for bad in ["nohost", ":502", "plc:0", "plc:70000", "plc:x"] {
            assert_eq!(parse_host_port(bad), None, "{bad}");
        }
    }

    #[test]
    fn wire_addresses() {
        assert_eq!(wire_address(Addressing::ZeroBased, 0), 0);
        assert_eq!(wire_address(Addressing::OneBased, 1), 0);
        assert_eq!(wire_address(Addressing::OneBased, 65536), 65535);
    }
}
