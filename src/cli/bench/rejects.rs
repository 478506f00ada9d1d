//! `linesight bench --rejects`: how exactly the reject gate fires.
//!
//! Parts are announced at a steady rate; each reaches the gate `DELAY`
//! later and is NG (its verdict comes `INFERENCE` after the announcement,
//! long before the gate). The gate writes to tokio-modbus's own server on
//! loopback, which records when each "on" write arrives. The figure is the
//! error between the time a part was due at the gate and the time the PLC
//! received the "on" write: what a real gate would see, minus the wire.
//!
//! With a queue folder (`--queue-dir`), each part's result also goes through an MQTT session
//! with its disk queue there (fsync every 200 ms, the default) to a local broker, as in the
//! daemon: on a disk whose fsync is slow, this shows whether the queue's fsyncs delay the gate.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::{sleep, sleep_until, Instant};

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config;
use crate::decision::reject::{Arrival, Gate, GateOutcome, GateSettings};
use crate::modbus::Outputs;
use crate::sim::broker::Broker;
use crate::sim::plc::SimPlc;
use crate::stats::TaskStats;
use crate::telemetry::durable::{AckBy, Durable};
use crate::telemetry::mqtt::Mqtt;
use crate::util::percentiles::percentiles;

const DELAY: Duration = Duration::from_millis(300);
const INFERENCE: Duration = Duration::from_millis(30);
const COIL: u16 = 10;

/// The MQTT side of `--queue-dir`: a local broker and a session whose results go through a
/// disk queue in the folder.
struct Queue {
    _broker: Broker,
    mqtt: Mqtt,
    task: tokio::task::JoinHandle<()>,
    dir: PathBuf,
    fsync_ms: f64,
}

/// Median of a few fsyncs of a small file in `dir`: what the disk's fsync costs.
fn fsync_ms(dir: &Path) -> Result<f64, String> {
    let path = dir.join("bench-fsync-probe");
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut f = std::fs::File::create(&path).map_err(err)?;
    let mut times = Vec::new();
    for _ in 0..5 {
        f.write_all(&[0u8; 4096]).map_err(err)?;
        let t = std::time::Instant::now();
        f.sync_data().map_err(err)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let _ = std::fs::remove_file(&path);
    times.sort_by(f64::total_cmp);
    Ok((times[2] * 10.0).round() / 10.0)
}

async fn start_queue(dir: &Path) -> Result<Queue, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let probe = dir.to_path_buf();
    let fsync_ms = tokio::task::spawn_blocking(move || fsync_ms(&probe)).await.map_err(|e| e.to_string())??;
    // A fresh queue each run: what an earlier run left is not this run's backlog.
    let qdir = dir.join("bench-rejects-queue");
    let _ = std::fs::remove_dir_all(&qdir);
    let broker = Broker::start()?;
    let q = config::QueueConfig {
        max_mb: 64,
        fsync_every: config::Dur::from_millis(200),
        when_full: config::QueueFull::DropOldest,
        ..config::QueueConfig::new(qdir.clone())
    };
    let cfg = config::MqttConfig { queue: Some(q.clone()), ..config::MqttConfig::new("127.0.0.1", broker.port) };
    let node = config::NodeIdentity { group_id: "bench".into(), node_id: "rejects".into() };
    let durable = Durable::open(&q, AckBy::PubAck, "MQTT queue", Default::default())?;
    let (mqtt, task, _incoming) = Mqtt::start(&cfg, &node, Vec::new(), Some(durable))?;
    Ok(Queue { _broker: broker, mqtt, task, dir: qdir, fsync_ms })
}

/// A result-sized document (about 330 bytes, as the daemon's).
fn result_doc(part: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "task": "bench", "camera": "top", "part_id": part, "verdict": "NG",
        "captured_at": "2026-11-28T04:35:00.123Z", "model": "surface-classifier@1",
        "timings_ms": {"preprocess": 0.412, "inference": 0.689, "capture_to_decision": 1.204},
        "scores": {"good": 0.019, "scratch": 0.9, "spot": 0.03, "crack": 0.03, "chip": 0.021},
        "ng_score": 0.981, "class": "scratch"
    }))
    .expect("a literal serializes")
}

pub async fn run(parts: usize, rate: f64, json_out: bool, queue_dir: Option<&Path>) -> Result<Value, String> {
    if parts == 0 || !(rate > 0.0 && rate <= 500.0) {
        return Err("use --parts 1 or more and --rate above 0 and at most 500".into());
    }
    let queue = match queue_dir {
        Some(dir) => Some(start_queue(dir).await?),
        None => None,
    };
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
        let mqtt = queue.as_ref().map(|q| q.mqtt.clone());
        tokio::spawn(async move {
            sleep(INFERENCE).await;
            g.verdict(id, true);
            if let Some(m) = mqtt {
                m.publish_durable(m.topics.result("bench"), result_doc(id), false);
            }
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
    let queue = match queue {
        Some(q) => {
            // Let the last results reach the broker before the figures are read.
            for _ in 0..50 {
                if q.mqtt.queue.waiting.load(Ordering::Relaxed) == 0 {
                    break;
                }
                sleep(Duration::from_millis(100)).await;
            }
            let figures = json!({
                "dir": q.dir.display().to_string(),
                "fsync_ms": q.fsync_ms,
                "results": parts,
                "waiting": q.mqtt.queue.waiting.load(Ordering::Relaxed),
                "dropped": q.mqtt.queue.dropped.load(Ordering::Relaxed),
            });
            q.mqtt.stop().await;
            let _ = q.task.await;
            let _ = std::fs::remove_dir_all(&q.dir);
            Some(figures)
        }
        None => None,
    };
    let mut out = json!({
        "parts": parts,
        "rate_per_s": rate,
        "delay_ms": DELAY.as_millis() as u64,
        "pulse_ms": pulse.as_millis() as u64,
        "on_error_ms": {"p50": p.p50, "p99": p.p99, "max": p.max, "min": (min * 1000.0).round() / 1000.0},
        "deadline_misses": stats.deadline_misses.load(Ordering::Relaxed),
        "failed": failed,
        "machine": super::machine(),
    });
    if let Some(q) = queue {
        out["queue"] = q;
    }
    Ok(out)
}
