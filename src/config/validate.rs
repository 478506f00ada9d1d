//! Checks that need more than one field: cross-references, ranges, timing.
//! Runs on whatever deserialized, so one broken entry does not hide the
//! problems of the others.

use std::collections::BTreeMap;

use super::load::{suggest, Broken, Collector};
use super::types::*;

pub(crate) fn validate(config: &Config, broken: &Broken, c: &mut Collector) {
    identity(config, c);
    if let Some(mqtt) = &config.mqtt {
        mqtt_section(mqtt, c);
    }
    modbus(config, broken, c);
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
    if mqtt.stats_interval.get().as_millis() < 100 {
        c.at(&["mqtt", "stats_interval"], "stats interval below 100ms", "use 1s or more");
    }
}

fn modbus(config: &Config, broken: &Broken, c: &mut Collector) {
    for (name, dev) in &config.modbus.devices {
        let path = ["modbus", "devices", name.as_str()];
        if parse_host_port(&dev.tcp).is_none() {
            c.at(
                &[&path[..], &["tcp"]].concat(),
                format!("`{}` is not a `host:port` address", dev.tcp),
                "write it as `192.168.10.5:502`",
            );
        }
        if dev.timeout.get().is_zero() || dev.timeout.get().as_secs() > 60 {
            c.at(
                &[&path[..], &["timeout"]].concat(),
                format!("timeout {} is out of range", dev.timeout),
                "use 10ms to 60s; 100ms to 500ms suits a PLC on the local network",
            );
        }
        if dev.unit == 0 {
            c.at(
                &[&path[..], &["unit"]].concat(),
                "unit id 0 is the broadcast address; writes to it are never acknowledged",
                "use the device's unit id (1 to 247, or 255 for some TCP gateways)",
            );
        }
    }
    let mut seen: BTreeMap<(String, OutputArea, u32), String> = BTreeMap::new();
    for (name, out) in &config.modbus.outputs {
        let path = ["modbus", "outputs", name.as_str()];
        let Some(dev) = config.modbus.devices.get(&out.device) else {
            if !broken.devices.contains(&out.device) {
                let known: Vec<&str> = config.modbus.devices.keys().map(String::as_str).collect();
                c.at(
                    &[&path[..], &["device"]].concat(),
                    format!("output `{name}` names device `{}`, which is not in modbus.devices", out.device),
                    hint_known(&out.device, &known, "modbus.devices"),
                );
            }
            continue;
        };
        let (lo, hi) = match dev.addressing {
            Addressing::ZeroBased => (0, 65535),
            Addressing::OneBased => (1, 65536),
        };
        if out.address < lo || out.address > hi {
            c.at(
                &[&path[..], &["address"]].concat(),
                format!(
                    "address {} is out of range for device `{}` ({:?} addressing: {lo}..={hi})",
                    out.address, out.device, dev.addressing
                ),
                "use an address in that range, or change the device's `addressing`",
            );
            continue;
        }
        let wire = wire_address(dev.addressing, out.address);
        if let Some(other) = seen.insert((out.device.clone(), out.area, wire as u32), name.clone()) {
            c.at(
                &[&path[..], &["address"]].concat(),
                format!("output `{name}` writes the same {:?} as output `{other}`", out.area),
                "give each output its own address: two owners of one output fight each other",
            );
        }
    }
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
            if reject.delay.get() < task.inference_timeout.get() {
                c.at(
                    &[&path[..], &["reject", "delay"]].concat(),
                    format!(
                        "reject delay {} is shorter than the inference timeout {}: a slow verdict would come after its part has passed the gate",
                        reject.delay, task.inference_timeout
                    ),
                    "lower `inference_timeout` below the camera-to-gate time, or move the gate further down the line",
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
