//! The `tasks` section: what each task names exists, its rules, its reject
//! gate and its timing, its trigger, its result block; and that no camera,
//! gate or result block serves two tasks.

use std::collections::BTreeMap;

use super::super::diagnostic::{Broken, Collector};
use super::super::types::*;
use super::line::stack_outputs;
use super::modbus::{bool_point, unknown_point};
use super::{hint_known, join};

/// Which task already uses a camera, a gate output or a result block: each serves one task.
#[derive(Default)]
struct Owners<'a> {
    cameras: BTreeMap<&'a str, &'a str>,
    gates: BTreeMap<&'a str, &'a str>,
    blocks: BTreeMap<&'a str, &'a str>,
}

/// Every task, then that there is at least one.
pub(super) fn check(config: &Config, broken: &Broken, c: &mut Collector) {
    let mut owners = Owners::default();
    for (name, task) in &config.tasks {
        let path = ["tasks", name.as_str()];
        camera_and_model(config, broken, name, task, &mut owners, c);
        rules(&path, &task.rules, c);
        command_limits(&path, &task.commands, c);
        if let Some(cap) = &task.capture {
            capture(&path, cap, c);
        }
        if task.inference_timeout.get().is_zero() {
            c.at(
                &join(&path, &["inference_timeout"]),
                "inference timeout is zero",
                "use the longest acceptable inference time, e.g. 500ms",
            );
        }
        if let Some(reject) = &task.reject {
            reject_gate(config, broken, name, reject, c);
            reject_timing(config, task, &path, reject, c);
            reject_confirmation(config, broken, &path, reject, c);
            gate_has_one_owner(config, name, reject, &mut owners, c);
        }
        trigger(config, broken, name, task, c);
        if let Some(block) = &task.handshake {
            handshake(config, broken, name, block, &mut owners, c);
        }
        if let Some(interval) = task.min_part_interval {
            if interval.get().is_zero() {
                c.at(
                    &join(&path, &["min_part_interval"]),
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

/// The camera and the model exist, and the camera is not inspected by another task.
fn camera_and_model<'a>(
    config: &Config,
    broken: &Broken,
    name: &'a str,
    task: &'a TaskConfig,
    owners: &mut Owners<'a>,
    c: &mut Collector,
) {
    let path = ["tasks", name];
    if !config.cameras.contains_key(&task.camera) && !broken.cameras.contains(&task.camera) {
        let known: Vec<&str> = config.cameras.keys().map(String::as_str).collect();
        c.at(
            &join(&path, &["camera"]),
            format!("task `{name}` names camera `{}`, which is not in cameras", task.camera),
            hint_known(&task.camera, &known, "cameras"),
        );
    }
    if let Some(other) = owners.cameras.insert(task.camera.as_str(), name) {
        c.at(
            &join(&path, &["camera"]),
            format!("camera `{}` is already inspected by task `{other}`", task.camera),
            "give each task its own camera",
        );
    }
    if !config.models.contains_key(&task.model) && !broken.models.contains(&task.model) {
        let known: Vec<&str> = config.models.keys().map(String::as_str).collect();
        c.at(
            &join(&path, &["model"]),
            format!("task `{name}` names model `{}`, which is not in models", task.model),
            hint_known(&task.model, &known, "models"),
        );
    }
}

/// The NG threshold and the uncertain band are scores in 0..1, zones are
/// polygons and the region of interest is not empty.
fn rules(path: &[&str], rules: &RulesConfig, c: &mut Collector) {
    if let Some(t) = rules.ng_threshold {
        if !(0.0..=1.0).contains(&t) || t.is_nan() {
            c.at(
                &join(path, &["rules", "ng_threshold"]),
                format!("threshold {t} is outside 0..1"),
                "use a probability between 0 and 1, e.g. 0.5",
            );
        }
    }
    if let Some(u) = &rules.uncertain {
        uncertain_band(path, u, rules.ng_threshold, c);
    }
    for (i, zone) in rules.zones.iter().enumerate() {
        let bad = zone.len() < 3 || zone.iter().flatten().any(|v| !v.is_finite());
        if bad {
            c.at(
                &join(path, &["rules", "zones"]),
                format!("zone {i} has {} corner(s) or a value that is not a number", zone.len()),
                "give each zone at least three [x, y] corners in image pixels",
            );
        }
    }
    if let Some([x1, y1, x2, y2]) = rules.roi {
        if !(x2 > x1 && y2 > y1) {
            c.at(
                &join(path, &["rules", "roi"]),
                format!("region [{x1}, {y1}, {x2}, {y2}] is empty"),
                "write it as [x1, y1, x2, y2] with x2 > x1 and y2 > y1 (image pixels)",
            );
        }
    }
}

/// The thresholds a command may set: an ordered interval inside (0, 1).
fn command_limits(path: &[&str], commands: &TaskCommandsConfig, c: &mut Collector) {
    let Some([low, high]) = commands.threshold else { return };
    let at = join(path, &["commands", "threshold"]);
    let inside = |v: f64| v > 0.0 && v < 1.0;
    if !(inside(low) && inside(high)) {
        c.at(
            &at,
            format!("command threshold limits [{low}, {high}] are not inside (0, 1)"),
            "give `[low, high]` with 0 < low <= high < 1, e.g. [0.3, 0.7]",
        );
    } else if low > high {
        c.at(
            &at,
            format!("command threshold limits [{low}, {high}] are not in order"),
            format!("write the lower limit first: [{high}, {low}]"),
        );
    }
}

/// Evidence capture: counts and sizes that can hold something, a JPEG quality JPEG knows.
fn capture(path: &[&str], cap: &CaptureConfig, c: &mut Collector) {
    let at = |key: &'static str| join(path, &["capture", key]);
    if cap.ok_every == Some(0) {
        c.at(
            &at("ok_every"),
            "ok_every is 0",
            "keep one OK part in N with N >= 1 (1 keeps every OK part), or remove the key",
        );
    }
    if cap.ok_per_hour == Some(0) {
        c.at(
            &at("ok_per_hour"),
            "ok_per_hour is 0",
            "give how many OK parts an hour to keep (>= 1), or remove the key",
        );
    }
    if !(1..=100).contains(&cap.jpeg_quality) {
        c.at(
            &at("jpeg_quality"),
            format!("jpeg_quality {} is outside 1..100", cap.jpeg_quality),
            "use 1 to 100, e.g. 95",
        );
    }
    if cap.max_bytes.get() == 0 {
        c.at(&at("max_bytes"), "max_bytes is 0: nothing could be kept", "give the largest size on disk, e.g. `2 GB`");
    }
    if cap.max_files == 0 {
        c.at(&at("max_files"), "max_files is 0: nothing could be kept", "give the most records to keep, e.g. 100000");
    }
    if cap.queue == 0 || cap.queue > 4096 {
        c.at(
            &at("queue"),
            format!("queue {} is outside 1..4096", cap.queue),
            "use a small queue, e.g. 16 (each waiting record holds a frame in memory)",
        );
    }
    if !(cap.ng || cap.uncertain || cap.error || cap.ok_every.is_some() || cap.ok_per_hour.is_some()) {
        c.at(
            &join(path, &["capture"]),
            "capture keeps nothing: ng, uncertain and error are false and no OK sampling is set",
            "set one of ng, uncertain, error to true or give ok_every / ok_per_hour, or remove `capture`",
        );
    }
}

/// The uncertain band starts inside 0..1 and below the NG threshold.
fn uncertain_band(path: &[&str], u: &UncertainConfig, ng_threshold: Option<f64>, c: &mut Collector) {
    let at = join(path, &["rules", "uncertain", "from"]);
    if !(u.from > 0.0 && u.from < 1.0) {
        c.at(&at, format!("`from` {} is outside 0..1", u.from), "use a score between 0 and the NG threshold, e.g. 0.3");
    } else if ng_threshold.is_some_and(|t| u.from >= t) {
        c.at(
            &at,
            format!(
                "`from` {} is not below ng_threshold {}: the band would be empty",
                u.from,
                ng_threshold.unwrap_or(0.0)
            ),
            "set `from` below the NG threshold; scores from `from` up to the threshold are UNCERTAIN",
        );
    }
}

/// The gate output exists.
fn reject_gate(config: &Config, broken: &Broken, name: &str, reject: &RejectConfig, c: &mut Collector) {
    if !config.modbus.outputs.contains_key(&reject.output) && !broken.outputs.contains(&reject.output) {
        let known: Vec<&str> = config.modbus.outputs.keys().map(String::as_str).collect();
        c.at(
            &["tasks", name, "reject", "output"],
            format!("task `{name}` rejects through output `{}`, which is not in modbus.outputs", reject.output),
            hint_known(&reject.output, &known, "modbus.outputs"),
        );
    }
}

/// The pulse is shorter than the gap between parts, and the gate fires where
/// the part is: by time or by encoder distance, after the verdict is due.
fn reject_timing(config: &Config, task: &TaskConfig, path: &[&str], reject: &RejectConfig, c: &mut Collector) {
    if reject.pulse.get().is_zero() {
        c.at(
            &join(path, &["reject", "pulse"]),
            "reject pulse of zero length",
            "use the time the gate needs to act, e.g. 80ms",
        );
    }
    if let Some(interval) = task.min_part_interval {
        if reject.pulse >= interval {
            c.at(
                &join(path, &["reject", "pulse"]),
                format!("reject pulse {} is not shorter than the part interval {interval}", reject.pulse),
                "shorten the pulse, or the gate is still open when the next (good) part arrives",
            );
        }
    }
    match (reject.delay, reject.distance) {
        (Some(_), Some(_)) => c.at(
            &join(path, &["reject"]),
            "the reject gives both `delay` and `distance`",
            "keep `delay` (time after the trigger) or `distance` (encoder counts after the trigger), not both",
        ),
        (None, None) => c.at(
            &join(path, &["reject"]),
            "the reject gives neither `delay` nor `distance`",
            "add `delay: 420ms` (time from trigger to gate) or `distance: 12000` (encoder counts)",
        ),
        (Some(delay), None) if delay.get() < task.inference_timeout.get() => c.at(
            &join(path, &["reject", "delay"]),
            format!(
                "reject delay {delay} is shorter than the inference timeout {}: a slow verdict would come after its part has passed the gate",
                task.inference_timeout
            ),
            "lower `inference_timeout` below the camera-to-gate time, or move the gate further down the line",
        ),
        (None, Some(d)) => reject_distance(config, path, d, c),
        _ => {}
    }
}

/// A reject by distance needs the line's encoder and a distance it can count.
fn reject_distance(config: &Config, path: &[&str], d: u64, c: &mut Collector) {
    let at = join(path, &["reject", "distance"]);
    if config.line.encoder.is_none() {
        c.at(
            &at,
            "a reject by distance needs the line's encoder, and `line.encoder` is not set",
            "add `line: { encoder: <point> }`, or give the reject a `delay` instead",
        );
    }
    if d == 0 || d > u64::from(u32::MAX / 2) {
        c.at(&at, format!("distance {d} is out of range"), "use 1 to 2147483647 encoder counts");
    }
}

/// The gate's confirmation sensor is an on/off point, with a window to answer in.
fn reject_confirmation(config: &Config, broken: &Broken, path: &[&str], reject: &RejectConfig, c: &mut Collector) {
    let Some(confirm) = &reject.confirm else { return };
    bool_point(config, broken, &join(path, &["reject", "confirm", "point"]), &confirm.point, c);
    if confirm.within.get().is_zero() {
        c.at(
            &join(path, &["reject", "confirm", "within"]),
            "confirmation window of zero",
            "use the time the gate sensor needs, e.g. 150ms",
        );
    }
}

/// A gate output belongs to one task, and is not a lamp of the stack light.
fn gate_has_one_owner<'a>(
    config: &Config,
    name: &'a str,
    reject: &'a RejectConfig,
    owners: &mut Owners<'a>,
    c: &mut Collector,
) {
    let at = ["tasks", name, "reject", "output"];
    if let Some(other) = owners.gates.insert(reject.output.as_str(), name) {
        c.at(
            &at,
            format!("output `{}` is already the reject gate of task `{other}`", reject.output),
            "give each task its own gate output",
        );
    }
    if stack_outputs(config).contains(&reject.output.as_str()) {
        c.at(
            &at,
            format!("output `{}` is also a stack light", reject.output),
            "a gate output must have one owner; use another output for the light",
        );
    }
}

/// A trigger point fits its edge (a bool) or counter (an integer), and a
/// trigger goes with a triggered camera both ways.
fn trigger(config: &Config, broken: &Broken, name: &str, task: &TaskConfig, c: &mut Collector) {
    let path = ["tasks", name];
    let triggered = config.cameras.get(&task.camera).map(|cam| cam.mode == CameraMode::Triggered);
    match (&task.trigger, triggered) {
        (Some(t), _) => {
            trigger_point(config, broken, &join(&path, &["trigger", "point"]), t, c);
            if let Some(latch) = &t.latch {
                trigger_latch(config, broken, &join(&path, &["trigger", "latch"]), t, latch, c);
            }
            if triggered == Some(false) {
                c.at(
                    &join(&path, &["trigger"]),
                    format!("task `{name}` has a trigger but camera `{}` is not `mode: triggered`", task.camera),
                    "set the camera's `mode: triggered`, so frames are taken for triggered parts only",
                );
            }
        }
        (None, Some(true)) => c.at(
            &join(&path, &["camera"]),
            format!("camera `{}` is `mode: triggered` but task `{name}` has no `trigger`", task.camera),
            "add `trigger: { point: <photo-eye point> }`, or change the camera's mode",
        ),
        _ => {}
    }
}

/// The trigger point exists and its type fits `on`.
fn trigger_point(config: &Config, broken: &Broken, at: &[&str], t: &TriggerConfig, c: &mut Collector) {
    let Some(p) = config.modbus.points.get(&t.point) else {
        unknown_point(config, broken, at, &t.point, c);
        return;
    };
    let ty = p.value_type();
    let fits = match t.on {
        TriggerOn::RisingEdge | TriggerOn::FallingEdge => ty == PointType::Bool,
        TriggerOn::Increment => ty.is_integer(),
    };
    if !fits {
        c.at(
            at,
            format!("trigger `{:?}` cannot use point `{}` of type {ty:?}", t.on, t.point),
            "use a bool point with rising-edge/falling-edge, or an integer counter with `on: increment`",
        );
    }
}

/// The latch is a raw counter of the encoder, read in the trigger's poll cycle, for an edge.
fn trigger_latch(config: &Config, broken: &Broken, at: &[&str], t: &TriggerConfig, latch: &str, c: &mut Collector) {
    if t.on == TriggerOn::Increment {
        c.at(
            at,
            "a latch holds the encoder count at one photo-eye edge, and this trigger counts parts (`on: increment`)",
            "use a photo-eye point with `on: rising-edge` (or `falling-edge`), or remove `latch`",
        );
    }
    if config.line.encoder.is_none() {
        c.at(
            at,
            "a latched count is an encoder position, and `line.encoder` is not set",
            "add `line: { encoder: <point> }` (the counter the PLC latches), or remove `latch`",
        );
    }
    let Some(p) = config.modbus.points.get(latch) else {
        unknown_point(config, broken, at, latch, c);
        return;
    };
    if !matches!(p.value_type(), PointType::U16 | PointType::U32) || p.scale.is_some() || p.offset.is_some() {
        c.at(
            at,
            format!("latch point `{latch}` must be a raw u16 or u32 counter, like the encoder"),
            "read the latch register as `type: u32` (or u16, the encoder's type) without scale or offset",
        );
    } else if let Some(enc) = config.line.encoder.as_ref().and_then(|e| config.modbus.points.get(e)) {
        if enc.value_type() != p.value_type() {
            c.at(
                at,
                format!("latch point `{latch}` is {:?} and the encoder is {:?}", p.value_type(), enc.value_type()),
                "give the latch the encoder's type: it holds a value of the same counter",
            );
        }
    }
    if let Some(tp) = config.modbus.points.get(&t.point) {
        if tp.device != p.device || tp.poll != p.poll {
            c.at(
                at,
                format!(
                    "latch point `{latch}` is read from device `{}` every {}, the trigger `{}` from `{}` every {}",
                    p.device, p.poll, t.point, tp.device, tp.poll
                ),
                "give the latch point the trigger point's `device` and `poll`, so both are read in the same poll cycle",
            );
        }
    }
}

/// The result block exists and no other task uses it.
fn handshake<'a>(
    config: &Config,
    broken: &Broken,
    name: &'a str,
    block: &'a str,
    owners: &mut Owners<'a>,
    c: &mut Collector,
) {
    let at = ["tasks", name, "handshake"];
    if !config.modbus.result_blocks.contains_key(block) && !broken.result_blocks.contains(block) {
        let known: Vec<&str> = config.modbus.result_blocks.keys().map(String::as_str).collect();
        c.at(
            &at,
            format!("task `{name}` names result block `{block}`, which is not in modbus.result_blocks"),
            hint_known(block, &known, "modbus.result_blocks"),
        );
    }
    if let Some(other) = owners.blocks.insert(block, name) {
        c.at(
            &at,
            format!("result block `{block}` is already used by task `{other}`"),
            "give each task its own result block",
        );
    }
}
