//! Checks that need more than one field: cross-references, ranges, timing.
//! Runs on whatever deserialized, so one broken entry does not hide the
//! problems of the others.

use std::collections::BTreeMap;
use std::path::Path;

use super::diagnostic::{suggest, Broken, Collector};
use super::types::*;

pub(crate) fn validate(config: &Config, broken: &Broken, c: &mut Collector) {
    identity(config, c);
    if let Some(mqtt) = &config.mqtt {
        mqtt_section(mqtt, c);
        failover(mqtt, c);
        if let Some(tls) = &mqtt.tls {
            tls_files(tls, c);
        }
        sparkplug(config, mqtt, c);
    }
    modbus(config, broken, c);
    line(config, broken, c);
    stack_light(config, broken, c);
    cameras(config, c);
    models(config, c);
    tasks(config, broken, c);
    if let Some(threads) = config.runtime.threads {
        if threads == 0 || threads > 256 {
            c.at(&["runtime", "threads"], format!("thread budget {threads} is out of range"), "use 1 to 256");
        }
    }
    if let Some(lib) = &config.runtime.onnxruntime {
        if !lib.is_file() {
            c.at(
                &["runtime", "onnxruntime"],
                format!("ONNX Runtime library `{}` does not exist", lib.display()),
                "point it at libonnxruntime.so (scripts/setup.sh fetches one into .cache/onnxruntime)",
            );
        }
    }
}

fn sparkplug_id(id: &str) -> bool {
    !id.is_empty() && !id.contains(['/', '+', '#']) && !id.chars().any(char::is_whitespace)
}

fn identity(config: &Config, c: &mut Collector) {
    for (key, value) in [("group_id", &config.node.group_id), ("node_id", &config.node.node_id)] {
        if !sparkplug_id(value) {
            c.at(
                &["node", key],
                format!("`{value}` cannot be used as {key}"),
                "use a non-empty name without `/`, `+`, `#` or spaces (it becomes an MQTT topic level)",
            );
        }
    }
}

fn mqtt_section(mqtt: &MqttConfig, c: &mut Collector) {
    if mqtt.host.trim().is_empty() {
        c.at(&["mqtt", "host"], "the broker host is empty", "give the broker's host name or IP address");
    }
    if mqtt.port == 0 {
        c.at(&["mqtt", "port"], "port 0 is not a broker port", "use the broker's port, usually 1883 (or 8883 for TLS)");
    }
    if mqtt.prefix.is_empty() || mqtt.prefix.contains(['+', '#']) || mqtt.prefix.starts_with('/') {
        c.at(
            &["mqtt", "prefix"],
            format!("`{}` cannot start MQTT topics", mqtt.prefix),
            "use a plain name such as `linesight`: no wildcards, no leading `/`",
        );
    }
    let ka = mqtt.keep_alive.get().as_secs_f64();
    if !(1.0..=65535.0).contains(&ka) {
        c.at(
            &["mqtt", "keep_alive"],
            format!("keep-alive {} is out of range", mqtt.keep_alive),
            "use 1s to 18h; 5s to 15s suits a factory network",
        );
    }
    if let Some(q) = &mqtt.queue {
        if q.max_mb == 0 || q.max_mb > 1 << 20 {
            c.at(&["mqtt", "queue", "max_mb"], format!("{} MiB is out of range", q.max_mb), "use 1 to 1048576 MiB");
        }
        if q.fsync_every.get().as_secs() > 60 {
            c.at(
                &["mqtt", "queue", "fsync_every"],
                format!("{} would lose up to that much on a power cut", q.fsync_every),
                "use 0ms to 60s; 200ms is usual",
            );
        }
        if q.dir.as_os_str().is_empty() {
            c.at(
                &["mqtt", "queue", "dir"],
                "the queue folder is empty",
                "give a folder, e.g. /var/lib/linesight/queue",
            );
        }
    }
    if mqtt.stats_interval.get().as_millis() < 100 {
        c.at(&["mqtt", "stats_interval"], "stats interval below 100ms", "use 1s or more");
    }
}

/// The failover brokers: each a usable address, none the primary, none twice.
fn failover(mqtt: &MqttConfig, c: &mut Collector) {
    let primary = (mqtt.host.trim().to_ascii_lowercase(), mqtt.port);
    let mut seen: Vec<(String, u16)> = Vec::new();
    for (i, broker) in mqtt.failover.iter().enumerate() {
        let idx = i.to_string();
        let path = ["mqtt", "failover", idx.as_str()];
        let at = |k: &'static str| [&path[..], &[k]].concat();
        let mut usable = true;
        if broker.host.trim().is_empty() {
            c.at(
                &at("host"),
                format!("failover broker {i} has an empty host"),
                "give the broker's host name or IP address, or remove the entry",
            );
            usable = false;
        }
        if broker.port == 0 {
            c.at(
                &at("port"),
                format!("port 0 of failover broker {i} is not a broker port"),
                "use the broker's port, usually 1883 (or 8883 for TLS)",
            );
            usable = false;
        }
        if !usable {
            continue;
        }
        let addr = (broker.host.trim().to_ascii_lowercase(), broker.port);
        let shown = format!("{}:{}", broker.host.trim(), broker.port);
        if addr == primary {
            c.at(
                &path,
                format!("failover broker {shown} is the primary broker (`mqtt.host`/`mqtt.port`)"),
                "remove it: the primary is always tried first; list only the other brokers under `failover`",
            );
        } else if let Some(first) = seen.iter().position(|a| *a == addr) {
            c.at(
                &path,
                format!("failover broker {shown} is listed twice (entries {first} and {i})"),
                "remove the second entry: each broker is listed once, in the order they are tried",
            );
        }
        seen.push(addr);
    }
}

/// `cert` and `key` go together, and the files must make a TLS client
/// configuration here and now: the same function builds it when a session starts.
/// A missing file is an error even when check-config runs on another machine
/// than the node: copy the files there too, or check on the node itself.
fn tls_files(tls: &TlsConfig, c: &mut Collector) {
    let unpaired = match (&tls.cert, &tls.key) {
        (Some(_), None) => Some((
            "cert",
            "`mqtt.tls.cert` is given without `key`",
            "add `key:` (the PEM private key of the client certificate) for mutual TLS, or remove `cert`",
        )),
        (None, Some(_)) => Some((
            "key",
            "`mqtt.tls.key` is given without `cert`",
            "add `cert:` (the PEM client certificate of this key) for mutual TLS, or remove `key`",
        )),
        _ => None,
    };
    let ca_only;
    let checked = match unpaired {
        Some((key, message, hint)) => {
            c.at(&["mqtt", "tls", key], message, hint);
            // Still check the CA, so that its problem is not reported one run later.
            ca_only = TlsConfig { ca: tls.ca.clone(), cert: None, key: None };
            &ca_only
        }
        None => tls,
    };
    let Err(message) = crate::telemetry::connection::tls_client_config(checked) else { return };
    // The message starts with the file it is about; report it at that key.
    let names = |p: &Path| message.starts_with(&format!("{}: ", p.display()));
    let pair = tls.cert.as_deref().zip(tls.key.as_deref());
    let (key, hint) = if pair
        .is_some_and(|(cert, key)| message.starts_with(&format!("{} and {}: ", cert.display(), key.display())))
    {
        ("key", "use the private key that belongs to `cert` (or the certificate that belongs to `key`)")
    } else if names(&tls.ca) {
        (
            "ca",
            "point `ca` at the PEM certificate of the CA that signed the broker's certificate; \
             check-config reads it, so it must also exist where check-config runs",
        )
    } else if tls.key.as_deref().is_some_and(names)
        // `cert` and `key` may be one file holding both: then the message says which is missing.
        && (message.contains("private key") || !tls.cert.as_deref().is_some_and(names))
    {
        ("key", "point `key` at the unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert`")
    } else if tls.cert.as_deref().is_some_and(names) {
        ("cert", "point `cert` at the PEM client certificate (chain) the broker accepts")
    } else {
        ("", "check the files under `mqtt.tls`: a PEM CA certificate, and for mutual TLS a PEM certificate and its key")
    };
    let path: &[&str] = if key.is_empty() { &["mqtt", "tls"] } else { &["mqtt", "tls", key] };
    c.at(path, format!("TLS: {message}"), hint);
}

/// Sparkplug B: the report interval, and the ids that become topic levels.
/// `node.group_id` and `node.node_id` are checked by [`identity`] for every dialect.
fn sparkplug(config: &Config, mqtt: &MqttConfig, c: &mut Collector) {
    let sp = &mqtt.sparkplug;
    if sp.report_every.get() < std::time::Duration::from_millis(100) {
        c.at(
            &["mqtt", "sparkplug", "report_every"],
            format!("report interval {} is below 100ms", sp.report_every),
            "use 1s (the default) or more; changes are reported by exception at this rate",
        );
    }
    if !mqtt.dialect.sparkplug() {
        return;
    }
    if let Some(host) = &sp.primary_host {
        if host.is_empty() || host.contains(['/', '+', '#']) {
            c.at(
                &["mqtt", "sparkplug", "primary_host"],
                if host.is_empty() {
                    "the Sparkplug primary host id is empty".to_string()
                } else {
                    format!("`{host}` cannot be a Sparkplug host id")
                },
                "use the SCADA host's id as it publishes `spBv1.0/STATE/<id>`: not empty, no `/`, `+` or `#` \
                 (Sparkplug 3.0, 1.4.1.8)",
            );
        }
    }
    if mqtt.dialect == Dialect::Both {
        let (group, node) = (&config.node.group_id, &config.node.node_id);
        let json_id = mqtt.client_id.clone().unwrap_or_else(|| format!("linesight-{group}-{node}"));
        let sp_id = sp.client_id.clone().unwrap_or_else(|| format!("linesight-sp-{group}-{node}"));
        if json_id == sp_id {
            let at: &[&str] =
                if sp.client_id.is_some() { &["mqtt", "sparkplug", "client_id"] } else { &["mqtt", "client_id"] };
            c.at(
                at,
                format!(
                    "the JSON and the Sparkplug session both use client id `{sp_id}`: with `dialect: both` the \
                     broker would drop one session each time the other connects"
                ),
                "give `mqtt.sparkplug.client_id` an id of its own, or remove it (the default is \
                 `linesight-sp-<group_id>-<node_id>`)",
            );
        }
    }
    // Every task and every Modbus device is a Sparkplug device, its name the device id.
    // Names are already restricted to letters, digits, `-` and `_` (so no `/`, `+`
    // or `#`); what is left is that ids must not collide ignoring case (Sparkplug 3.0, 5.2).
    let mut ids: Vec<(usize, usize, &str, &str, Vec<&str>)> = Vec::new();
    for name in config.tasks.keys() {
        let path = vec!["tasks", name.as_str()];
        let m = c.mark_of(&path);
        ids.push((m.line, m.col, "task", name, path));
    }
    for name in config.modbus.devices.keys() {
        let path = vec!["modbus", "devices", name.as_str()];
        let m = c.mark_of(&path);
        ids.push((m.line, m.col, "Modbus device", name, path));
    }
    ids.sort_by_key(|&(line, col, ..)| (line, col));
    let mut seen: BTreeMap<String, (&str, &str)> = BTreeMap::new();
    for (_, _, kind, name, path) in &ids {
        match seen.get(&name.to_lowercase()) {
            Some((first_kind, first)) => c.at(
                path,
                format!(
                    "{kind} `{name}` and {first_kind} `{first}` would be the same Sparkplug device id: \
                     device ids must differ in more than letter case"
                ),
                "rename one of them: with `dialect: sparkplug` or `both`, every task and Modbus device name \
                 is a Sparkplug device id (Sparkplug 3.0, 5.2)",
            ),
            None => {
                seen.insert(name.to_lowercase(), (kind, name));
            }
        }
    }
}

fn modbus(config: &Config, broken: &Broken, c: &mut Collector) {
    for (name, dev) in &config.modbus.devices {
        device(name, dev, c);
    }
    // Everything linesight may write, per device and table, to find two owners of one address.
    let mut written: Vec<Written> = Vec::new();
    let dev_of = |path: &[&str], owner: &str, device: &str, c: &mut Collector| -> Option<ModbusDeviceConfig> {
        match config.modbus.devices.get(device) {
            Some(d) => Some(d.clone()),
            None => {
                if !broken.devices.contains(device) {
                    let known: Vec<&str> = config.modbus.devices.keys().map(String::as_str).collect();
                    c.at(
                        &[path, &["device"]].concat(),
                        format!("{owner} names device `{device}`, which is not in modbus.devices"),
                        hint_known(device, &known, "modbus.devices"),
                    );
                }
                None
            }
        }
    };
    for (name, p) in &config.modbus.points {
        let path = ["modbus", "points", name.as_str()];
        let Some(dev) = dev_of(&path, &format!("point `{name}`"), &p.device, c) else { continue };
        let ty = p.value_type();
        let at = |k: &'static str| [&path[..], &[k]].concat();
        if p.area.is_bits() && ty != PointType::Bool {
            c.at(
                &at("type"),
                format!("a {:?} holds one bit; it cannot be read as {ty:?}", p.area),
                "use `type: bool`, or move the point to an input or holding register",
            );
            continue;
        }
        if !p.area.is_bits() && p.kind.is_none() {
            c.at(
                &path,
                format!("register point `{name}` has no `type`"),
                "add `type:` (bool with `bit:`, u16, i16, u32, i32, u64, i64, f32, f64 or string with `length:`)",
            );
            continue;
        }
        match (ty, p.area.is_bits(), p.bit) {
            (PointType::Bool, false, None) => c.at(
                &path,
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
                c.at(&path, "a string point needs `length:`", "give its length in registers (2 characters each)")
            }
            (PointType::String, Some(n)) if n == 0 || n > 125 => {
                c.at(&at("length"), format!("length {n} is out of range"), "use 1 to 125 registers (one request)")
            }
            (PointType::String, _) => {}
            (_, Some(_)) => c.at(&at("length"), "`length` only applies to strings", "remove it"),
            _ => {}
        }
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
        if p.poll.get() < std::time::Duration::from_millis(1) || p.poll.get().as_secs() > 3600 {
            c.at(
                &at("poll"),
                format!("poll interval {} is out of range", p.poll),
                "use 1ms to 1h (triggers 2ms to 10ms, sensors 100ms or more)",
            );
        }
        if p.publish_every.get() < std::time::Duration::from_millis(100) {
            c.at(
                &at("publish_every"),
                format!("{} is too often", p.publish_every),
                "use 100ms or more; changes are published as they happen anyway",
            );
        }
        if p.writable && p.bit.is_some() {
            c.at(
                &at("writable"),
                "one bit of a register cannot be written safely: the read-modify-write would race the PLC",
                "make the PLC expose the bit as a coil, or remove `writable`",
            );
        }
        if p.writable && !p.area.is_writable() {
            c.at(
                &at("writable"),
                format!("a {:?} cannot be written", p.area),
                "only coils and holding registers can be writable; remove `writable`",
            );
        }
        let count = if p.area.is_bits() { 1 } else { ty.registers(p.length) as u32 };
        let Some(start) = span(&path, &dev, &p.device, p.address, count, c) else { continue };
        if p.writable && p.area.is_writable() {
            written.push(Written {
                device: p.device.clone(),
                coils: p.area == PointArea::Coil,
                start,
                count,
                owner: format!("writable point `{name}`"),
                path: path.iter().map(|s| s.to_string()).collect(),
            });
        }
    }
    for (name, out) in &config.modbus.outputs {
        let path = ["modbus", "outputs", name.as_str()];
        let Some(dev) = dev_of(&path, &format!("output `{name}`"), &out.device, c) else { continue };
        let Some(start) = span(&path, &dev, &out.device, out.address, 1, c) else { continue };
        written.push(Written {
            device: out.device.clone(),
            coils: out.area == OutputArea::Coil,
            start,
            count: 1,
            owner: format!("output `{name}`"),
            path: path.iter().map(|s| s.to_string()).collect(),
        });
    }
    if let Some(hb) = &config.modbus.heartbeat {
        let path = ["modbus", "heartbeat"];
        let p = hb.period.get();
        if p < std::time::Duration::from_millis(10) || p.as_secs() > 60 {
            c.at(
                &["modbus", "heartbeat", "period"],
                format!("heartbeat period {} is out of range", hb.period),
                "use 10ms to 60s; 100ms to 1s is usual",
            );
        }
        if let Some(dev) = dev_of(&path, "the heartbeat", &hb.device, c) {
            if let Some(start) = span(&path, &dev, &hb.device, hb.address, 1, c) {
                written.push(Written {
                    device: hb.device.clone(),
                    coils: false,
                    start,
                    count: 1,
                    owner: "the heartbeat".into(),
                    path: path.iter().map(|s| s.to_string()).collect(),
                });
            }
        }
    }
    for (name, rb) in &config.modbus.result_blocks {
        let path = ["modbus", "result_blocks", name.as_str()];
        if rb.buffer == 0 || rb.buffer > 1000 {
            c.at(
                &[&path[..], &["buffer"]].concat(),
                format!("buffer {} is out of range", rb.buffer),
                "use 1 to 1000 results",
            );
        }
        let p = rb.ack_poll.get();
        if p < std::time::Duration::from_millis(1) || p.as_secs() > 10 {
            c.at(
                &[&path[..], &["ack_poll"]].concat(),
                format!("ack_poll {} is out of range", rb.ack_poll),
                "use 1ms to 10s",
            );
        }
        let Some(dev) = dev_of(&path, &format!("result block `{name}`"), &rb.device, c) else { continue };
        if let Some(start) = span(&path, &dev, &rb.device, rb.address, RESULT_BLOCK_REGISTERS, c) {
            written.push(Written {
                device: rb.device.clone(),
                coils: false,
                start,
                count: RESULT_BLOCK_REGISTERS,
                owner: format!("result block `{name}`"),
                path: path.iter().map(|s| s.to_string()).collect(),
            });
        }
    }
    for (i, a) in written.iter().enumerate() {
        for b in &written[..i] {
            let overlap = a.device == b.device
                && a.coils == b.coils
                && a.start < b.start + b.count
                && b.start < a.start + a.count;
            if overlap {
                let path: Vec<&str> = a.path.iter().map(String::as_str).collect();
                c.at(
                    &[&path[..], &["address"]].concat(),
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

/// One range of addresses linesight may write.
struct Written {
    device: String,
    coils: bool,
    start: u32,
    count: u32,
    owner: String,
    path: Vec<String>,
}

fn device(name: &str, dev: &ModbusDeviceConfig, c: &mut Collector) {
    let path = ["modbus", "devices", name];
    let at = |k: &'static str| [&path[..], &[k]].concat();
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
        if !(300..=1_000_000).contains(&rtu.baud) {
            c.at(
                &[&path[..], &["rtu", "baud"]].concat(),
                format!("baud rate {} is out of range", rtu.baud),
                "use the device's rate, e.g. 9600, 19200 or 115200",
            );
        }
        if !(7..=8).contains(&rtu.data_bits) {
            c.at(
                &[&path[..], &["rtu", "data_bits"]].concat(),
                format!("{} data bits", rtu.data_bits),
                "Modbus RTU uses 8 data bits",
            );
        }
        if !(1..=2).contains(&rtu.stop_bits) {
            c.at(&[&path[..], &["rtu", "stop_bits"]].concat(), format!("{} stop bits", rtu.stop_bits), "use 1 or 2");
        }
        if rtu.port.as_os_str().is_empty() {
            c.at(
                &[&path[..], &["rtu", "port"]].concat(),
                "the serial port is empty",
                "give the device node, e.g. /dev/ttyUSB0",
            );
        }
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
            &[path, &["address"]].concat(),
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

pub(crate) fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return None;
    }
    Some((host.to_string(), port))
}

fn cameras(config: &Config, c: &mut Collector) {
    for (name, cam) in &config.cameras {
        let path = ["cameras", name.as_str()];
        let live = !matches!(cam.source, SourceConfig::File(_) | SourceConfig::Directory(_));
        match &cam.source {
            SourceConfig::File(p) if !p.is_file() => c.at(
                &[&path[..], &["source", "file"]].concat(),
                format!("video file `{}` does not exist", p.display()),
                "check the path (relative paths start at the config file's folder)",
            ),
            SourceConfig::Directory(p) if !p.is_dir() => c.at(
                &[&path[..], &["source", "directory"]].concat(),
                format!("image folder `{}` does not exist", p.display()),
                "check the path (relative paths start at the config file's folder)",
            ),
            SourceConfig::Rtsp(url) if !(url.starts_with("rtsp://") || url.starts_with("rtsps://")) => c.at(
                &[&path[..], &["source", "rtsp"]].concat(),
                format!("`{url}` is not an RTSP URL"),
                "write it as `rtsp://host:554/path`",
            ),
            SourceConfig::Gstreamer(p) if !p.contains("appsink") => c.at(
                &[&path[..], &["source", "gstreamer"]].concat(),
                "the GStreamer pipeline does not end in `appsink`",
                "end it with `! appsink drop=true max-buffers=1` so OpenCV can take the frames",
            ),
            _ => {}
        }
        if live && cam.looping {
            c.at(
                &[&path[..], &["loop"]].concat(),
                "`loop` only applies to files and folders",
                "remove it for a live camera",
            );
        }
        let t = cam.timeout.get();
        if t < std::time::Duration::from_millis(100) || t > std::time::Duration::from_secs(120) {
            c.at(
                &[&path[..], &["timeout"]].concat(),
                format!("timeout {} is out of range", cam.timeout),
                "use 100ms to 120s: long enough for the camera to answer, short enough to notice it died",
            );
        }
        if let Some([x, y, w, h]) = cam.crop {
            if w == 0 || h == 0 {
                c.at(
                    &[&path[..], &["crop"]].concat(),
                    format!("crop [{x}, {y}, {w}, {h}] is empty"),
                    "write it as [x, y, width, height] in pixels of the (rotated) frame, width and height above 0",
                );
            }
        }
        if let Some(fps) = cam.fps {
            if !(fps > 0.0 && fps <= 1000.0) {
                c.at(
                    &[&path[..], &["fps"]].concat(),
                    format!("fps {fps} is out of range"),
                    "use a rate above 0 and at most 1000",
                );
            } else if live {
                c.at(
                    &[&path[..], &["fps"]].concat(),
                    "`fps` paces files and folders only",
                    "set the rate of a V4L2 camera under `source.v4l2.fps`; live streams set their own rate",
                );
            }
        }
        if cam.queue == 0 || cam.queue > 64 {
            c.at(
                &[&path[..], &["queue"]].concat(),
                format!("queue {} is out of range", cam.queue),
                "use 1 to 64 frames; 2 to 4 keeps verdicts fresh",
            );
        }
        if let SourceConfig::V4l2(v) = &cam.source {
            if let Some(fourcc) = &v.fourcc {
                if fourcc.len() != 4 || !fourcc.is_ascii() {
                    c.at(
                        &[&path[..], &["source", "v4l2", "fourcc"]].concat(),
                        format!("`{fourcc}` is not a FourCC"),
                        "use four characters such as `MJPG` or `YUYV`",
                    );
                }
            }
        }
    }
}

fn models(config: &Config, c: &mut Collector) {
    for (name, model) in &config.models {
        let path = ["models", name.as_str()];
        if !model.path.is_file() {
            c.at(
                &[&path[..], &["path"]].concat(),
                format!("model file `{}` does not exist", model.path.display()),
                "check the path (relative paths start at the config file's folder)",
            );
        }
        if let Some(sidecar) = &model.sidecar {
            if !sidecar.is_file() {
                c.at(
                    &[&path[..], &["sidecar"]].concat(),
                    format!("sidecar `{}` does not exist", sidecar.display()),
                    "point it at the JSON file the training script wrote, or remove the key",
                );
            }
        }
        if model.providers.is_empty() {
            c.at(&[&path[..], &["providers"]].concat(), "no execution provider listed", "list at least `- cpu: {}`");
        }
        if !(1..=64).contains(&model.batch) {
            c.at(
                &[&path[..], &["batch"]].concat(),
                format!("batch {} is out of range", model.batch),
                "use 1 to 64 frames per inference call (about the number of cameras sharing the model)",
            );
        }
        if model.batch_wait.get() > std::time::Duration::from_millis(50) {
            c.at(
                &[&path[..], &["batch_wait"]].concat(),
                format!("batch_wait {} would hold every part that long", model.batch_wait),
                "keep it at a few milliseconds (at most 50ms): a late verdict is a useless verdict",
            );
        }
        let mut kinds = Vec::new();
        for (i, p) in model.providers.iter().enumerate() {
            let kind = std::mem::discriminant(p);
            if kinds.contains(&kind) {
                let idx = i.to_string();
                c.at(
                    &[&path[..], &["providers", idx.as_str()]].concat(),
                    "this execution provider is listed twice",
                    "list each provider once, in priority order",
                );
            }
            kinds.push(kind);
            if let ProviderConfig::Cpu(CpuProvider { threads: Some(t) }) = p {
                if *t == 0 || *t > 256 {
                    let idx = i.to_string();
                    c.at(
                        &[&path[..], &["providers", idx.as_str(), "cpu", "threads"]].concat(),
                        format!("{t} threads is out of range"),
                        "use 1 to 256",
                    );
                }
            }
        }
    }
}

fn tasks(config: &Config, broken: &Broken, c: &mut Collector) {
    let mut camera_owner: BTreeMap<&str, &str> = BTreeMap::new();
    let mut gate_owner: BTreeMap<&str, &str> = BTreeMap::new();
    let mut block_owner: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, task) in &config.tasks {
        let path = ["tasks", name.as_str()];
        if !config.cameras.contains_key(&task.camera) && !broken.cameras.contains(&task.camera) {
            let known: Vec<&str> = config.cameras.keys().map(String::as_str).collect();
            c.at(
                &[&path[..], &["camera"]].concat(),
                format!("task `{name}` names camera `{}`, which is not in cameras", task.camera),
                hint_known(&task.camera, &known, "cameras"),
            );
        }
        if let Some(other) = camera_owner.insert(task.camera.as_str(), name.as_str()) {
            c.at(
                &[&path[..], &["camera"]].concat(),
                format!("camera `{}` is already inspected by task `{other}`", task.camera),
                "give each task its own camera",
            );
        }
        if !config.models.contains_key(&task.model) && !broken.models.contains(&task.model) {
            let known: Vec<&str> = config.models.keys().map(String::as_str).collect();
            c.at(
                &[&path[..], &["model"]].concat(),
                format!("task `{name}` names model `{}`, which is not in models", task.model),
                hint_known(&task.model, &known, "models"),
            );
        }
        if let Some(t) = task.rules.ng_threshold {
            if !(0.0..=1.0).contains(&t) || t.is_nan() {
                c.at(
                    &[&path[..], &["rules", "ng_threshold"]].concat(),
                    format!("threshold {t} is outside 0..1"),
                    "use a probability between 0 and 1, e.g. 0.5",
                );
            }
        }
        if let Some(u) = &task.rules.uncertain {
            let at = [&path[..], &["rules", "uncertain", "from"]].concat();
            if !(u.from > 0.0 && u.from < 1.0) {
                c.at(
                    &at,
                    format!("`from` {} is outside 0..1", u.from),
                    "use a score between 0 and the NG threshold, e.g. 0.3",
                );
            } else if task.rules.ng_threshold.is_some_and(|t| u.from >= t) {
                c.at(
                    &at,
                    format!(
                        "`from` {} is not below ng_threshold {}: the band would be empty",
                        u.from,
                        task.rules.ng_threshold.unwrap_or(0.0)
                    ),
                    "set `from` below the NG threshold; scores from `from` up to the threshold are UNCERTAIN",
                );
            }
        }
        for (i, zone) in task.rules.zones.iter().enumerate() {
            let bad = zone.len() < 3 || zone.iter().flatten().any(|v| !v.is_finite());
            if bad {
                c.at(
                    &[&path[..], &["rules", "zones"]].concat(),
                    format!("zone {i} has {} corner(s) or a value that is not a number", zone.len()),
                    "give each zone at least three [x, y] corners in image pixels",
                );
            }
        }
        if let Some([x1, y1, x2, y2]) = task.rules.roi {
            if !(x2 > x1 && y2 > y1) {
                c.at(
                    &[&path[..], &["rules", "roi"]].concat(),
                    format!("region [{x1}, {y1}, {x2}, {y2}] is empty"),
                    "write it as [x1, y1, x2, y2] with x2 > x1 and y2 > y1 (image pixels)",
                );
            }
        }
        if task.inference_timeout.get().is_zero() {
            c.at(
                &[&path[..], &["inference_timeout"]].concat(),
                "inference timeout is zero",
                "use the longest acceptable inference time, e.g. 500ms",
            );
        }
        if let Some(reject) = &task.reject {
            match config.modbus.outputs.get(&reject.output) {
                None if !broken.outputs.contains(&reject.output) => {
                    let known: Vec<&str> = config.modbus.outputs.keys().map(String::as_str).collect();
                    c.at(
                        &[&path[..], &["reject", "output"]].concat(),
                        format!(
                            "task `{name}` rejects through output `{}`, which is not in modbus.outputs",
                            reject.output
                        ),
                        hint_known(&reject.output, &known, "modbus.outputs"),
                    );
                }
                _ => {}
            }
            if reject.pulse.get().is_zero() {
                c.at(
                    &[&path[..], &["reject", "pulse"]].concat(),
                    "reject pulse of zero length",
                    "use the time the gate needs to act, e.g. 80ms",
                );
            }
            if let Some(interval) = task.min_part_interval {
                if reject.pulse >= interval {
                    c.at(
                        &[&path[..], &["reject", "pulse"]].concat(),
                        format!("reject pulse {} is not shorter than the part interval {interval}", reject.pulse),
                        "shorten the pulse, or the gate is still open when the next (good) part arrives",
                    );
                }
            }
            match (reject.delay, reject.distance) {
                (Some(_), Some(_)) => c.at(
                    &[&path[..], &["reject"]].concat(),
                    "the reject gives both `delay` and `distance`",
                    "keep `delay` (time after the trigger) or `distance` (encoder counts after the trigger), not both",
                ),
                (None, None) => c.at(
                    &[&path[..], &["reject"]].concat(),
                    "the reject gives neither `delay` nor `distance`",
                    "add `delay: 420ms` (time from trigger to gate) or `distance: 12000` (encoder counts)",
                ),
                (Some(delay), None) if delay.get() < task.inference_timeout.get() => c.at(
                    &[&path[..], &["reject", "delay"]].concat(),
                    format!(
                        "reject delay {delay} is shorter than the inference timeout {}: a slow verdict would come after its part has passed the gate",
                        task.inference_timeout
                    ),
                    "lower `inference_timeout` below the camera-to-gate time, or move the gate further down the line",
                ),
                (None, Some(d)) => {
                    if config.line.encoder.is_none() {
                        c.at(
                            &[&path[..], &["reject", "distance"]].concat(),
                            "a reject by distance needs the line's encoder, and `line.encoder` is not set",
                            "add `line: { encoder: <point> }`, or give the reject a `delay` instead",
                        );
                    }
                    if d == 0 || d > u64::from(u32::MAX / 2) {
                        c.at(
                            &[&path[..], &["reject", "distance"]].concat(),
                            format!("distance {d} is out of range"),
                            "use 1 to 2147483647 encoder counts",
                        );
                    }
                }
                _ => {}
            }
            if let Some(confirm) = &reject.confirm {
                bool_point(config, broken, &[&path[..], &["reject", "confirm", "point"]].concat(), &confirm.point, c);
                if confirm.within.get().is_zero() {
                    c.at(
                        &[&path[..], &["reject", "confirm", "within"]].concat(),
                        "confirmation window of zero",
                        "use the time the gate sensor needs, e.g. 150ms",
                    );
                }
            }
            if let Some(other) = gate_owner.insert(reject.output.as_str(), name.as_str()) {
                c.at(
                    &[&path[..], &["reject", "output"]].concat(),
                    format!("output `{}` is already the reject gate of task `{other}`", reject.output),
                    "give each task its own gate output",
                );
            }
            if stack_outputs(config).contains(&reject.output.as_str()) {
                c.at(
                    &[&path[..], &["reject", "output"]].concat(),
                    format!("output `{}` is also a stack light", reject.output),
                    "a gate output must have one owner; use another output for the light",
                );
            }
        }
        let triggered = config.cameras.get(&task.camera).map(|cam| cam.mode == CameraMode::Triggered);
        match (&task.trigger, triggered) {
            (Some(t), _) => {
                let tp = [&path[..], &["trigger", "point"]].concat();
                match config.modbus.points.get(&t.point) {
                    Some(p) => {
                        let ty = p.value_type();
                        let fits = match t.on {
                            TriggerOn::RisingEdge | TriggerOn::FallingEdge => ty == PointType::Bool,
                            TriggerOn::Increment => ty.is_integer(),
                        };
                        if !fits {
                            c.at(
                                &tp,
                                format!("trigger `{:?}` cannot use point `{}` of type {ty:?}", t.on, t.point),
                                "use a bool point with rising-edge/falling-edge, or an integer counter with `on: increment`",
                            );
                        }
                    }
                    None => unknown_point(config, broken, &tp, &t.point, c),
                }
                if triggered == Some(false) {
                    c.at(
                        &[&path[..], &["trigger"]].concat(),
                        format!("task `{name}` has a trigger but camera `{}` is not `mode: triggered`", task.camera),
                        "set the camera's `mode: triggered`, so frames are taken for triggered parts only",
                    );
                }
            }
            (None, Some(true)) => c.at(
                &[&path[..], &["camera"]].concat(),
                format!("camera `{}` is `mode: triggered` but task `{name}` has no `trigger`", task.camera),
                "add `trigger: { point: <photo-eye point> }`, or change the camera's mode",
            ),
            _ => {}
        }
        if let Some(block) = &task.handshake {
            if !config.modbus.result_blocks.contains_key(block) && !broken.result_blocks.contains(block) {
                let known: Vec<&str> = config.modbus.result_blocks.keys().map(String::as_str).collect();
                c.at(
                    &[&path[..], &["handshake"]].concat(),
                    format!("task `{name}` names result block `{block}`, which is not in modbus.result_blocks"),
                    hint_known(block, &known, "modbus.result_blocks"),
                );
            }
            if let Some(other) = block_owner.insert(block.as_str(), name.as_str()) {
                c.at(
                    &[&path[..], &["handshake"]].concat(),
                    format!("result block `{block}` is already used by task `{other}`"),
                    "give each task its own result block",
                );
            }
        }
        if let Some(interval) = task.min_part_interval {
            if interval.get().is_zero() {
                c.at(
                    &[&path[..], &["min_part_interval"]].concat(),
                    "part interval is zero",
                    "use the shortest time between two parts, e.g. 100ms at 10 parts/s",
                );
            }
        }
    }
    if config.tasks.is_empty() && broken.tasks.is_empty() {
        c.at(&["tasks"], "no task is configured", "add a task that binds a camera and a model");
    }
}

fn line(config: &Config, broken: &Broken, c: &mut Collector) {
    if let Some(running) = &config.line.running {
        bool_point(config, broken, &["line", "running"], running, c);
    }
    if let Some(enc) = &config.line.encoder {
        match config.modbus.points.get(enc) {
            Some(p)
                if !matches!(p.value_type(), PointType::U16 | PointType::U32)
                    || p.scale.is_some()
                    || p.offset.is_some() =>
            {
                c.at(
                    &["line", "encoder"],
                    format!("encoder point `{enc}` must be a raw u16 or u32 counter"),
                    "read the encoder register as `type: u32` (or u16) without scale or offset; wrap-around is handled",
                )
            }
            Some(_) => {}
            None => unknown_point(config, broken, &["line", "encoder"], enc, c),
        }
    }
}

fn stack_outputs(config: &Config) -> Vec<&str> {
    let s = &config.stack_light;
    [s.running.as_deref(), s.ng_rate.as_ref().map(|n| n.output.as_str()), s.fault.as_deref()]
        .into_iter()
        .flatten()
        .collect()
}

fn stack_light(config: &Config, broken: &Broken, c: &mut Collector) {
    let s = &config.stack_light;
    let entries = [
        (vec!["stack_light", "running"], s.running.as_deref()),
        (vec!["stack_light", "ng_rate", "output"], s.ng_rate.as_ref().map(|n| n.output.as_str())),
        (vec!["stack_light", "fault"], s.fault.as_deref()),
    ];
    let mut seen = Vec::new();
    for (path, out) in entries {
        let Some(out) = out else { continue };
        if !config.modbus.outputs.contains_key(out) && !broken.outputs.contains(out) {
            let known: Vec<&str> = config.modbus.outputs.keys().map(String::as_str).collect();
            c.at(
                &path,
                format!("stack light names output `{out}`, which is not in modbus.outputs"),
                hint_known(out, &known, "modbus.outputs"),
            );
        }
        if seen.contains(&out) {
            c.at(&path, format!("output `{out}` shows two stack-light states"), "give each state its own lamp");
        }
        seen.push(out);
    }
    if let Some(n) = &s.ng_rate {
        if !(0.0..=1.0).contains(&n.above) || n.above.is_nan() {
            c.at(
                &["stack_light", "ng_rate", "above"],
                format!("{} is outside 0..1", n.above),
                "give the share of rejected parts, e.g. 0.05 for 5%",
            );
        }
        if n.window == 0 || n.window > 100_000 {
            c.at(
                &["stack_light", "ng_rate", "window"],
                format!("window {} is out of range", n.window),
                "use 1 to 100000 parts",
            );
        }
    }
}

fn unknown_point(config: &Config, broken: &Broken, path: &[&str], point: &str, c: &mut Collector) {
    if broken.points.contains(point) {
        return;
    }
    let known: Vec<&str> = config.modbus.points.keys().map(String::as_str).collect();
    c.at(path, format!("point `{point}` is not in modbus.points"), hint_known(point, &known, "modbus.points"));
}

fn bool_point(config: &Config, broken: &Broken, path: &[&str], point: &str, c: &mut Collector) {
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
