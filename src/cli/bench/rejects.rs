//! `linesight bench --rejects`: how exactly the reject gate fires.
//!
//! Parts are announced at a steady rate; each reaches the gate `DELAY`
//! later and is NG (its verdict comes `INFERENCE` after the announcement,
//! long before the gate). The gate writes to tokio-modbus's own server on
//! loopback, which records when each "on" write arrives. The figure is the
//! error between the time a part was due at the gate and the time the PLC
//! received the "on" write: what a real gate would see, minus the wire.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::{sleep, sleep_until, Instant};

use crate::config;
use crate::decision::reject::{Arrival, Gate, GateOutcome, GateSettings};
use crate::modbus::Outputs;
use crate::sim::plc::SimPlc;
use crate::stats::TaskStats;
use crate::util::percentiles::percentiles;

const DELAY: Duration = Duration::from_millis(300);
const INFERENCE: Duration = Duration::from_millis(30);
const COIL: u16 = 10;

pub async fn run(parts: usize, rate: f64, json_out: bool) -> Result<Value, String> {
    if parts == 0 || !(rate > 0.0 && rate <= 500.0) {
        return Err("use --parts 1 or more and --rate above 0 and at most 500".into());
    }
    let interval = Duration::from_secs_f64(1.0 / rate);
    let pulse = (interval / 2).min(Duration::from_millis(80));
    let plc = SimPlc::start("127.0.0.1:0").await.map_err(|e| format!("cannot start the local Modbus server: {e}"))?;
    let yaml = format!(
        r#"
node: {{ group_id: bench, node_id: rejects }}
modbus:
  devices: {{ plc: {{ tcp: "{}", timeout: 200ms }} }}
  outputs: {{ gate: {{ device: plc, area: coil, address: {COIL}, safe_state: off }} }}
cameras: {{}}
models: {{}}
tasks: {{}}
"#,
        plc.addr
    );
    let cfg: config::Config =
        config::yaml::from_node(&config::yaml::parse(&yaml).map_err(|e| e.message)?).map_err(|e| e.message)?;
    let outputs = Outputs::start(&cfg.modbus);
    if let Some((_, e)) = outputs.all_to_safe_state().await.into_iter().next() {
        return Err(format!("the local Modbus server does not answer: {e}"));
    }
    let stats = Arc::new(TaskStats::default());
    let settings = GateSettings { precise: true, ..GateSettings::timed(pulse) };
    let (gate, task) = Gate::start(Arc::new(outputs.get("gate").ok_or("no gate")?.clone()), settings, stats.clone());
    if !json_out {
        println!(
            "{parts} parts at {rate} parts/s, gate {} ms downstream, pulse {} ms: about {:.0} s",
            DELAY.as_millis(),
            pulse.as_millis(),
            parts as f64 / rate + DELAY.as_secs_f64()
        );
    }
    let start = Instant::now() + Duration::from_millis(200);
    let mut due = Vec::with_capacity(parts);
    let mut outcomes = Vec::with_capacity(parts);
    for i in 0..parts {
        let t = start + interval.mul_f64(i as f64);
        sleep_until(t).await;
        let id = i as u64 + 1;
        outcomes.push(gate.enter(id, Arrival::Time(t + DELAY)));
        due.push((t + DELAY).into_std());
        let g = gate.clone();
        tokio::spawn(async move {
            sleep(INFERENCE).await;
            g.verdict(id, true);
        });
        if !json_out && (i + 1) % 1000 == 0 {
            println!("  {} parts", i + 1);
        }
    }
    let mut failed = 0;
    for rx in outcomes {
        if !matches!(rx.await, Ok(GateOutcome::Fired { .. })) {
            failed += 1;
        }
    }
    drop(gate);
    let _ = task.await;
    let ons: Vec<std::time::Instant> =
        plc.writes().iter().filter(|w| w.coil && w.address == COIL && w.on).map(|w| w.at).collect();
    if ons.len() != parts {
        return Err(format!("the PLC saw {} \"on\" writes for {parts} parts", ons.len()));
    }
    let mut err_ms: Vec<f64> = due
        .iter()
        .zip(&ons)
        .map(|(d, o)| if o >= d { (*o - *d).as_secs_f64() * 1e3 } else { -((*d - *o).as_secs_f64() * 1e3) })
        .collect();
    let min = err_ms.iter().copied().fold(f64::INFINITY, f64::min);
    let p = percentiles(&mut err_ms);
    let out = json!({
        "parts": parts,
        "rate_per_s": rate,
        "delay_ms": DELAY.as_millis() as u64,
        "pulse_ms": pulse.as_millis() as u64,
        "on_error_ms": {"p50": p.p50, "p99": p.p99, "max": p.max, "min": (min * 1000.0).round() / 1000.0},
        "deadline_misses": stats.deadline_misses.load(Ordering::Relaxed),
        "failed": failed,
        "machine": super::machine(),
    });
    Ok(out)
}
