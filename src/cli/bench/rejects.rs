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
use tokio::sync::watch;
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

/// How `--rejects` runs against the line process (`tools/plc_line.py`).
#[derive(Debug, Clone)]
pub struct LineBench {
    pub parts: usize,
    pub rates: Vec<f64>,
    pub runs: usize,
    /// Latch modes to measure: `true` with `trigger.latch`, `false` without.
    pub latch: Vec<bool>,
    pub poll: Duration,
    /// Encoder counts from the photo-eye to the gate, and the belt's counts per second.
    pub distance: u64,
    pub speed: u64,
    /// Also find the highest rate with no missed reject and no deadline miss.
    pub max_rate: bool,
    pub json: bool,
    /// Only odd parts are NG (the integration test: a pulse for an even part is for the wrong
    /// part); else every part is.
    pub odd_ng: bool,
    /// How long the photo-eye stays on per part; None: 40 % of the interval. Shorter than the
    /// poll, most pulses fall between two readings and only the latch shows the part.
    pub eye_on: Option<Duration>,
}

/// One run's figures: the "on" writes' arrival at the line process minus the true due time.
#[derive(Debug, Clone, Default)]
struct RunFigures {
    p50: f64,
    p99: f64,
    max: f64,
    min: f64,
    mean: f64,
    ng: usize,
    missed: usize,
    duplicates: usize,
    wrong: usize,
    deadline_misses: u64,
    failed: usize,
    triggers: u64,
    /// Of those, parts announced from their latch before (or without) their photo-eye edge.
    from_latch: u64,
    reads: u64,
    /// Parts whose position in linesight is the PLC's latched count exactly.
    exact_positions: usize,
    /// Mean |linesight's position - the PLC's latched count|, in encoder counts.
    position_error: f64,
    /// How late the gate sent its "on" writes by its own clock and prediction (plus the lead), p99
    /// and max: what of the error is the gate's wake-up, not the prediction or the wire.
    gate_late_p99: f64,
    gate_late_max: f64,
    /// The VM's steal during the run, ms (`bench::steal_ms`): time the machine was not its own.
    steal_ms: f64,
}

impl RunFigures {
    fn clean(&self) -> bool {
        self.missed == 0 && self.duplicates == 0 && self.wrong == 0 && self.deadline_misses == 0 && self.failed == 0
    }

    fn to_json(&self) -> Value {
        json!({
            "error_ms": {"p50": self.p50, "p99": self.p99, "max": self.max, "min": self.min, "mean": self.mean},
            "ng_parts": self.ng, "missed": self.missed, "duplicates": self.duplicates, "wrong_part": self.wrong,
            "deadline_misses": self.deadline_misses, "failed_writes": self.failed,
            "triggers_seen": self.triggers, "triggers_from_latch": self.from_latch, "plc_reads": self.reads,
            "positions_exact": self.exact_positions, "position_error_counts_mean": self.position_error,
            "gate_late_ms": {"p99": self.gate_late_p99, "max": self.gate_late_max},
            "vm_steal_ms": self.steal_ms,
        })
    }
}

/// The interpreter for `tools/plc_line.py`: `LINESIGHT_PYTHON`, else the checkout's venv.
fn python() -> PathBuf {
    std::env::var_os("LINESIGHT_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        let venv = PathBuf::from(".cache/venv/bin/python");
        if venv.exists() {
            venv
        } else {
            PathBuf::from("python3")
        }
    })
}

/// The line process, its stdout as JSON lines (a reader thread: tokio's process support is not
/// built in).
struct LineProcess {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    port: u16,
}

impl LineProcess {
    async fn start(args: &[String]) -> Result<LineProcess, String> {
        use std::io::BufRead;
        let script = PathBuf::from("tools/plc_line.py");
        if !script.exists() {
            return Err("tools/plc_line.py not found: run `linesight bench --rejects` from the checkout".into());
        }
        let mut child = std::process::Command::new(python())
            .arg(&script)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {} {}: {e} (set LINESIGHT_PYTHON to a Python with pymodbus)",
                    python().display(),
                    script.display()
                )
            })?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("plc-line-stdout".into())
            .spawn(move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        let mut p = LineProcess { child, stdin, lines, port: 0 };
        let ready = p.next(Duration::from_secs(20)).await?;
        p.port = ready["port"].as_u64().ok_or_else(|| format!("line process: unexpected first line {ready}"))? as u16;
        Ok(p)
    }

    async fn next(&mut self, within: Duration) -> Result<Value, String> {
        match tokio::time::timeout(within, self.lines.recv()).await {
            Ok(Some(l)) => serde_json::from_str(&l).map_err(|e| format!("line process said {l:?}: {e}")),
            Ok(None) => Err("the line process ended early (see its stderr)".into()),
            Err(_) => Err(format!("the line process said nothing for {within:?}")),
        }
    }

    fn send(&mut self, cmd: Value) -> Result<(), String> {
        writeln!(self.stdin, "{cmd}").and_then(|_| self.stdin.flush()).map_err(|e| format!("line process: {e}"))
    }
}

impl Drop for LineProcess {
    fn drop(&mut self) {
        let _ = self.send(json!({"exit": true}));
        for _ in 0..100 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One run at `rate` parts/s: the line process, linesight's points, encoder, trigger and gate on
/// it, every part NG; the figures from the line process's report.
async fn line_run(b: &LineBench, rate: f64, parts: usize, latch: bool, seed: u64) -> Result<RunFigures, String> {
    use crate::config::PointType;
    use crate::decision::controller::{GateDistance, RejectPlan};
    use crate::line::{encoder, trigger};
    use crate::modbus::points::Points;
    use crate::part::announce::Announcer;
    use crate::part::control::{CommandLimits, TaskControl};
    use crate::part::PartEvent;

    let steal0 = super::steal_ms();
    let mut plc = LineProcess::start(
        &[
            format!("--rate={rate}"),
            format!("--parts={parts}"),
            format!("--speed={}", b.speed),
            format!("--distance={}", b.distance),
            format!("--seed={seed}"),
            format!("--ng={}", if b.odd_ng { "odd" } else { "all" }),
        ]
        .into_iter()
        .chain(b.eye_on.map(|d| format!("--eye-on={}", d.as_secs_f64() * 1e3)))
        .collect::<Vec<_>>(),
    )
    .await?;
    let poll = format!("{}us", b.poll.as_micros());
    let yaml = format!(
        r#"
node: {{ group_id: bench, node_id: rejects }}
modbus:
  devices: {{ plc: {{ tcp: "127.0.0.1:{port}", timeout: 200ms }} }}
  points:
    eye: {{ device: plc, area: discrete-input, address: 0, poll: {poll} }}
    encoder: {{ device: plc, area: input-register, address: 0, type: u32, poll: {poll} }}
    latch: {{ device: plc, area: input-register, address: 2, type: u32, poll: {poll} }}
  outputs: {{ gate: {{ device: plc, area: coil, address: {COIL}, safe_state: off }} }}
line: {{ encoder: encoder }}
cameras: {{}}
models: {{}}
tasks: {{}}
"#,
        port = plc.port
    );
    let cfg: config::Config =
        config::yaml::from_node(&config::yaml::parse(&yaml).map_err(|e| e.message)?).map_err(|e| e.message)?;
    let outputs = Outputs::start(&cfg.modbus);
    if let Some((_, e)) = outputs.all_to_safe_state().await.into_iter().next() {
        return Err(format!("the line process does not answer: {e}"));
    }
    let (points, mut tasks) = Points::start(&cfg.modbus, &outputs.devices);
    let (enc_tx, enc_rx) = watch::channel(None);
    let eye = points.get("eye").ok_or("no eye")?.clone();
    tasks.push(tokio::spawn(encoder::follow(points.subscribe("encoder").ok_or("no encoder")?, PointType::U32, enc_tx)));
    let stats = Arc::new(TaskStats::default());
    let (events, mut announced) = Announcer::channel(4096, Default::default());
    let waiting: trigger::Waiting = Default::default();
    let inputs = trigger::LineInputs {
        poll: b.poll,
        encoder: Some((enc_rx.clone(), PointType::U32)),
        latch: if latch { points.subscribe("latch") } else { None },
    };
    let control = Arc::new(TaskControl::new("bench", 0.5, CommandLimits::for_task(&Default::default(), 0.5)));
    tasks.push(tokio::spawn(trigger::run(
        "line".into(),
        eye.rx.clone(),
        trigger::Detector::new(config::TriggerOn::RisingEdge, PointType::Bool),
        inputs,
        waiting.clone(),
        events,
        stats.clone(),
        control,
    )));
    let interval = Duration::from_secs_f64(1.0 / rate);
    let pulse = (interval * 2 / 5).min(Duration::from_millis(80));
    let settings = GateSettings { precise: true, encoder: Some(enc_rx.clone()), ..GateSettings::timed(pulse) };
    let (gate, gate_task) =
        Gate::start(Arc::new(outputs.get("gate").ok_or("no gate")?.clone()), settings, stats.clone());
    let plan = RejectPlan { gate: gate.clone(), output: "gate".into(), encoder: Some(enc_rx.clone()) };
    // The task's controller, as far as the gate goes: every announced part enters the gate at its
    // trigger's position + the distance, and is NG `INFERENCE` later.
    let (distance, odd_ng) = (b.distance, b.odd_ng);
    let controller = tokio::spawn(async move {
        let mut outcomes = Vec::new();
        let mut positions = Vec::new();
        while let Some(ev) = announced.recv().await {
            if let PartEvent::Captured(p) = ev {
                waiting.lock().unwrap_or_else(|e| e.into_inner()).clear(); // no camera takes them
                let arrival = plan.arrival(GateDistance::Counts(distance), Instant::from_std(p.captured), p.position);
                outcomes.push(plan.gate.enter(p.part_id, arrival));
                positions.push(p.position);
                let g = plan.gate.clone();
                tokio::spawn(async move {
                    sleep(INFERENCE).await;
                    g.verdict(p.part_id, !odd_ng || p.part_id % 2 == 1);
                });
            }
        }
        (outcomes, positions)
    });
    // The belt must be followed before the first part.
    let t = Instant::now();
    while !enc_rx.borrow().is_some_and(|p| p.speed > 0.0) {
        if t.elapsed() > Duration::from_secs(5) {
            return Err("no encoder reading from the line process in 5 s".into());
        }
        sleep(Duration::from_millis(10)).await;
    }
    sleep(Duration::from_millis(200)).await; // the speed over a full window
    plc.send(json!({"start": {"in_s": 0.3}}))?;
    let started = plc.next(Duration::from_secs(10)).await?;
    if started.get("started").is_none() {
        return Err(format!("line process: unexpected {started}"));
    }
    let travel = b.distance as f64 / b.speed as f64;
    let within = Duration::from_secs_f64(parts as f64 / rate + travel + 15.0);
    let done = plc.next(within).await?;
    // Stop linesight's side: the trigger and the pollers first, then the gate drains.
    for t in &tasks {
        t.abort();
    }
    drop(gate);
    let (outcomes, positions) = controller.await.map_err(|e| e.to_string())?;
    // The raw counter value at linesight's position 0, to compare positions with latched counts.
    let raw0 = enc_rx.borrow().map(|p| (p.raw as i64 - p.counts).rem_euclid(1 << 32));
    let _ = tokio::time::timeout(Duration::from_secs(5), gate_task).await;
    let mut failed = 0;
    let mut late_ms = Vec::new();
    for rx in outcomes {
        match rx.await {
            Ok(GateOutcome::Fired { late, .. }) => late_ms.push(late.as_secs_f64() * 1e3),
            Ok(GateOutcome::Failed(_)) | Err(_) => failed += 1,
            Ok(_) => {}
        }
    }
    let gate_late = percentiles(&mut late_ms);
    let _ = outputs.all_to_safe_state().await;
    drop(plc);
    let mut f = figures(&done)?;
    let latches: Vec<i64> =
        done["parts"].as_array().into_iter().flatten().filter_map(|p| p["latch"].as_i64()).collect();
    let mut errs = Vec::new();
    for pos in &positions {
        if let (Some(pos), Some(raw0)) = (pos, raw0) {
            // Against the nearest latched count (a part whose trigger was missed shifts the ids),
            // the shortest way round the wrap.
            let d = latches
                .iter()
                .map(|latch| ((raw0 + pos - latch).rem_euclid(1 << 32) + (1 << 31)).rem_euclid(1 << 32) - (1 << 31))
                .min_by_key(|d| d.unsigned_abs());
            if let Some(d) = d {
                errs.push(d.unsigned_abs() as f64);
            }
        }
    }
    f.exact_positions = errs.iter().filter(|e| **e == 0.0).count();
    f.position_error = if errs.is_empty() { 0.0 } else { round3(errs.iter().sum::<f64>() / errs.len() as f64) };
    f.deadline_misses = stats.deadline_misses.load(Ordering::Relaxed);
    (f.gate_late_p99, f.gate_late_max) = (gate_late.p99, gate_late.max);
    f.failed = failed;
    f.triggers = stats.triggers.load(Ordering::Relaxed);
    f.from_latch = stats.triggers_from_latch.load(Ordering::Relaxed);
    f.steal_ms = round3(super::steal_ms() - steal0);
    Ok(f)
}

/// A run's figures from the line process's report (`"done"`).
fn figures(done: &Value) -> Result<RunFigures, String> {
    let parts = done["parts"].as_array().ok_or_else(|| format!("line process: no parts in {done}"))?;
    let mut f = RunFigures { reads: done["reads"].as_u64().unwrap_or(0), ..Default::default() };
    let mut err_ms = Vec::new();
    for p in parts {
        let ons = p["ons"].as_array().map_or(0, Vec::len);
        if p["ng"] != true {
            f.wrong += ons;
            continue;
        }
        f.ng += 1;
        match (p["ons"][0].as_i64(), p["due_ns"].as_i64()) {
            (Some(on), Some(due)) => err_ms.push((on - due) as f64 / 1e6),
            _ => f.missed += 1,
        }
        f.duplicates += ons.saturating_sub(1);
    }
    f.wrong += done["stray"].as_array().map_or(0, Vec::len);
    if !err_ms.is_empty() {
        f.mean = round3(err_ms.iter().sum::<f64>() / err_ms.len() as f64);
        f.min = round3(err_ms.iter().copied().fold(f64::INFINITY, f64::min));
        let p = percentiles(&mut err_ms);
        (f.p50, f.p99, f.max) = (p.p50, p.p99, p.max);
    }
    Ok(f)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The median and the range of one figure over runs.
fn spread(runs: &[RunFigures], get: impl Fn(&RunFigures) -> f64) -> Value {
    let mut v: Vec<f64> = runs.iter().map(get).collect();
    v.sort_by(f64::total_cmp);
    json!({"median": v[v.len() / 2], "min": v[0], "max": v[v.len() - 1], "runs": v})
}

fn summary(runs: &[RunFigures]) -> Value {
    json!({
        "p50_ms": spread(runs, |r| r.p50),
        "p99_ms": spread(runs, |r| r.p99),
        "max_ms": spread(runs, |r| r.max),
        "mean_ms": spread(runs, |r| r.mean),
        "missed": spread(runs, |r| r.missed as f64),
        "deadline_misses": spread(runs, |r| r.deadline_misses as f64),
        "wrong_or_duplicate": spread(runs, |r| (r.wrong + r.duplicates) as f64),
    })
}

/// `linesight bench --rejects`: each (rate, latch) figure `runs` times, interleaved, then (with
/// `max_rate`) the highest rate at which every run had no miss of any kind.
pub async fn run_line(b: LineBench) -> Result<Value, String> {
    if b.parts == 0 || b.runs == 0 || b.rates.iter().any(|r| !(*r > 0.0 && *r <= 1000.0)) {
        return Err("use --parts 1 or more, --runs 1 or more, and rates above 0 and at most 1000".into());
    }
    let mut results: Vec<(f64, bool, Vec<RunFigures>)> = Vec::new();
    for &rate in &b.rates {
        for &latch in &b.latch {
            results.push((rate, latch, Vec::new()));
        }
    }
    for run in 0..b.runs {
        for (rate, latch, runs) in results.iter_mut() {
            if !b.json {
                println!(
                    "run {}/{}: {} parts at {rate} parts/s, {} latch ...",
                    run + 1,
                    b.runs,
                    b.parts,
                    if *latch { "with" } else { "without" }
                );
            }
            let f = line_run(&b, *rate, b.parts, *latch, run as u64 + 1).await?;
            if !b.json {
                println!("  {}", f.to_json());
            }
            runs.push(f);
        }
    }
    let figures: Vec<Value> = results
        .iter()
        .map(|(rate, latch, runs)| {
            json!({
                "rate_per_s": rate, "latch": latch,
                "runs": runs.iter().map(RunFigures::to_json).collect::<Vec<_>>(),
                "summary": summary(runs),
            })
        })
        .collect();
    let mut out = json!({
        "parts_per_run": b.parts,
        "poll_ms": b.poll.as_secs_f64() * 1e3,
        "distance_counts": b.distance,
        "speed_counts_per_s": b.speed,
        "travel_ms": b.distance as f64 * 1e3 / b.speed as f64,
        "inference_ms": INFERENCE.as_millis() as u64,
        "figures": figures,
        "machine": super::machine(),
    });
    if b.max_rate {
        out["max_rate"] = max_rate(&b).await?;
    }
    Ok(out)
}

/// Rates tried for the highest clean rate, parts per second.
const SWEEP: [f64; 8] = [50.0, 75.0, 100.0, 125.0, 150.0, 200.0, 250.0, 300.0];

/// The highest rate of [`SWEEP`] at which `runs` runs of about 3 s each (with the latch) had no
/// missed, duplicate or wrong reject and no deadline miss; stops at the first rate that fails.
async fn max_rate(b: &LineBench) -> Result<Value, String> {
    let mut tried = Vec::new();
    let mut best = None;
    for rate in SWEEP {
        let parts = ((rate * 3.0) as usize).max(100);
        let mut runs = Vec::new();
        for run in 0..b.runs {
            let f = line_run(b, rate, parts, true, 100 + run as u64).await?;
            if !b.json {
                println!("sweep {rate} parts/s, run {}: {}", run + 1, f.to_json());
            }
            runs.push(f);
        }
        let clean = runs.iter().all(RunFigures::clean);
        tried.push(json!({"rate_per_s": rate, "parts_per_run": parts, "clean": clean, "summary": summary(&runs)}));
        if !clean {
            break;
        }
        best = Some(rate);
    }
    Ok(json!({"highest_clean_rate_per_s": best, "with_latch": true, "tried": tried}))
}
