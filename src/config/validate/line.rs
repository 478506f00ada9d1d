//! The `line` section (the conveyor's running signal and encoder) and the
//! `stack_light` section (the lamps that show the cell's state).

use super::super::diagnostic::{Broken, Collector};
use super::super::types::*;
use super::hint_known;
use super::modbus::{bool_point, unknown_point};

/// The running signal is an on/off point, the encoder a raw counter.
pub(super) fn line(config: &Config, broken: &Broken, c: &mut Collector) {
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

/// The outputs the stack light drives (a reject gate must not be one of them).
pub(super) fn stack_outputs(config: &Config) -> Vec<&str> {
    let s = &config.stack_light;
    [s.running.as_deref(), s.ng_rate.as_ref().map(|n| n.output.as_str()), s.fault.as_deref()]
        .into_iter()
        .flatten()
        .collect()
}

/// Each lamp an output of its own, and an NG-rate lamp with a usable share and window.
pub(super) fn stack_light(config: &Config, broken: &Broken, c: &mut Collector) {
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
        ng_rate(n, c);
    }
}

/// The NG-rate lamp: a share in 0..1 over a window of parts.
fn ng_rate(n: &NgRateLight, c: &mut Collector) {
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
