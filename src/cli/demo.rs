//! `linesight demo`: the whole daemon on a simulated line, with no outside
//! service: the committed model, the sample video played at the line rate
//! (one frame per part), an in-process simulated PLC whose reject-coil writes
//! are recorded, and a mosquitto broker started for the occasion.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::app;
use crate::config::{self, wire_address, Config, SourceConfig};
use crate::sim::broker::Broker;
use crate::sim::plc::SimPlc;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Stop after this many seconds (Ctrl-C stops earlier).
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Parts per second on the simulated line.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// The demo node's config.
    #[arg(long, default_value = "firmware-config/demo.yaml")]
    pub config: PathBuf,
    /// The operator page's port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
}

pub async fn main(args: DemoArgs) -> Result<(), String> {
    if !(args.rate > 0.0 && args.rate <= 100.0) {
        return Err(format!("--rate {} is out of range: use more than 0 and at most 100 parts/s", args.rate));
    }
    let loaded = config::load_file(&args.config).map_err(|e| format!("{e}"))?;
    let plc = SimPlc::start("127.0.0.1:0").await.map_err(|e| format!("cannot start the simulated PLC: {e}"))?;
    let broker = match Broker::start() {
        Ok(b) => Some(b),
        Err(e) => {
            println!("no MQTT broker for the demo ({e}); running without telemetry");
            None
        }
    };
    // Point the config at the simulated PLC and broker, at the demo's pace; checked again in full.
    let token = demo_token(&loaded.config().runtime.state_dir)?;
    let signing = demo_signing_key(&loaded.config().runtime.state_dir)?;
    let mut plan = None;
    let edited = loaded
        .edited(|cfg| {
            if let Some(h) = &mut cfg.http {
                h.listen.set_port(args.http_port);
                h.token_file = Some(token.0.clone());
            }
            // The demo signs its own model packages: its node trusts the demo key (a real node
            // lists the public keys of whoever makes its packages; docs/rollout.md).
            if cfg.rollout.trusted_keys.is_empty() {
                cfg.rollout.trusted_keys = vec![config::TrustedKeyConfig {
                    name: "demo".into(),
                    public_key: None,
                    file: Some(crate::rollout::keys::public_path(&signing)),
                }];
            }
            plan = Some(prepare(cfg, &plc, broker.as_ref().map(|b| b.port), args.rate))
        })
        .map_err(|e| format!("the demo's edits of {} do not validate:\n{e}", args.config.display()))?;
    let plan = plan.expect("edited runs the edit")?;
    println!("linesight demo: {} parts/s for {} s", args.rate, args.duration);
    println!("  simulated PLC (Modbus TCP): {}", plc.addr);
    match &broker {
        Some(b) => println!(
            "  MQTT broker: 127.0.0.1:{port}   watch: mosquitto_sub -h 127.0.0.1 -p {port} -t 'linesight/#' -v",
            port = b.port
        ),
        None => println!("  MQTT: off"),
    }
    let (obs_tx, mut obs_rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let running = app::start(&edited, app::Options { observer: Some(obs_tx), ..Default::default() })
        .await
        .map_err(|e| e.to_string())?;
    if let Some(addr) = running.http_addr {
        println!("  operator page: http://{addr}/   (actions need the token {})", token.1);
    }
    println!(
        "  model packages: sign with `linesight model pack ... --key {}`, drop them into {} (docs/training.md)",
        signing.display(),
        edited.config().incoming_dir().display()
    );
    let stats = running.stats.clone();
    let stop_at = Instant::now() + Duration::from_secs(args.duration);
    let shutdown = async move {
        tokio::select! {
            _ = tokio::time::sleep_until(stop_at.into()) => {}
            _ = crate::service::stop_signal() => {}
        }
    };
    let run = tokio::spawn(running.run_until(shutdown));
    let mut tally = Tally::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let started = Instant::now();
    let mut last_parts = 0u64;
    loop {
        tokio::select! {
            doc = obs_rx.recv() => match doc {
                Some(doc) => tally.add(&doc, &plan.labels),
                None => break,
            },
            _ = tick.tick() => {
                let t = stats.tasks.values().next();
                if let Some(t) = t {
                    let parts = t.stats.processed.load(Ordering::Relaxed);
                    let d = t.stats.capture_to_decision_ms.percentiles();
                    println!(
                        "[{:>4.0}s] {:>5.1} parts/s | OK {:>4} NG {:>4} ERROR {:>3} | decision p50 {:>6.2} ms p99 {:>6.2} ms | rejects fired {:>4}, PLC saw {:>4} | label mismatches {}",
                        started.elapsed().as_secs_f64(),
                        (parts - last_parts) as f64,
                        t.stats.ok.load(Ordering::Relaxed),
                        t.stats.ng.load(Ordering::Relaxed),
                        t.stats.error.load(Ordering::Relaxed),
                        d.p50, d.p99,
                        t.stats.rejects_fired.load(Ordering::Relaxed),
                        plc.pulses(plan.coil),
                        tally.mismatches,
                    );
                    last_parts = parts;
                }
            }
        }
    }
    let final_stats = run.await.map_err(|e| e.to_string())?.stats;
    let task = final_stats["tasks"].as_object().and_then(|m| m.values().next()).cloned().unwrap_or_default();
    println!("\nsummary");
    println!("  parts inspected:        {}", task["processed"]);
    println!("  OK / NG / ERROR:        {} / {} / {}", task["ok"], task["ng"], task["error"]);
    println!("  labelled NG:            {}", tally.expected_ng);
    println!("  verdicts against labels: {} agree, {} disagree", tally.agree, tally.mismatches);
    println!("  rejects fired:          {} (failed: {})", task["rejects_fired"], task["rejects_failed"]);
    println!("  reject pulses the PLC saw: {}", plc.pulses(plan.coil));
    println!("  capture->decision ms:   {}", task["capture_to_decision_ms"]);
    println!("  capture->reject ack ms: {}", task["capture_to_reject_ack_ms"]);
    println!("  inference ms:           {}", task["inference_ms"]);
    println!("  execution provider:     {}", task["provider"]);
    println!("  reject coil after stop: {}", if plc.coil(plan.coil) { "ON (unsafe!)" } else { "off (safe state)" });
    drop(broker);
    Ok(())
}

struct Plan {
    coil: u16,
    /// Ground truth per frame of the sample video: NG or not.
    labels: Vec<bool>,
}

fn prepare(cfg: &mut Config, plc: &SimPlc, broker_port: Option<u16>, rate: f64) -> Result<Plan, String> {
    for dev in cfg.modbus.devices.values_mut() {
        dev.tcp = Some(plc.addr.to_string());
        dev.rtu = None;
    }
    match (&mut cfg.mqtt, broker_port) {
        (Some(m), Some(port)) => m.port = port,
        (m, None) => *m = None,
        _ => {}
    }
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut labels = Vec::new();
    for cam in cfg.cameras.values_mut() {
        cam.fps = Some(rate);
        if let SourceConfig::File(p) = &cam.source {
            labels = read_labels(&labels_for(p))?;
        }
    }
    for task in cfg.tasks.values_mut() {
        task.min_part_interval = Some(config::Dur(interval));
        if let Some(r) = &mut task.reject {
            // Keep the pulse shorter than the part spacing at this rate.
            r.pulse = config::Dur(r.pulse.get().min(interval / 2));
        }
    }
    let out = cfg.modbus.outputs.values().next().ok_or("the demo config declares no output")?;
    let addressing = cfg.modbus.devices.get(&out.device).map(|d| d.addressing).unwrap_or_default();
    Ok(Plan { coil: wire_address(addressing, out.address), labels })
}

/// A fresh token for the demo's page (its actions), in a 0600 file in the state directory.
fn demo_token(state_dir: &std::path::Path) -> Result<(PathBuf, String), String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot make the demo's page token: {e}"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let path = state_dir.join("http-token");
    crate::util::private_fs::create_dir_all(state_dir)
        .and_then(|()| std::io::Write::write_all(&mut crate::util::private_fs::create(&path)?, token.as_bytes()))
        .map_err(|e| format!("cannot write the demo's page token {}: {e}", path.display()))?;
    Ok((path, token))
}

/// The demo's package-signing key in its state directory, made on the first run and kept: a
/// package signed with it on one run installs on the next.
fn demo_signing_key(state_dir: &std::path::Path) -> Result<PathBuf, String> {
    let path = state_dir.join("demo-signing.key");
    crate::util::private_fs::create_dir_all(state_dir)
        .map_err(|e| format!("cannot make the demo's state folder {}: {e}", state_dir.display()))?;
    if !path.exists() {
        crate::rollout::keys::keygen(&path)?;
    }
    Ok(path)
}

/// `samples/line.avi` -> `samples/line.labels.csv`.
pub fn labels_for(video: &Path) -> PathBuf {
    video.with_extension("labels.csv")
}

/// Read `frame,class,ng` rows: whether each frame of the video shows a defective part.
pub fn read_labels(path: &Path) -> Result<Vec<bool>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read labels `{}`: {e}", path.display()))?;
    let mut rows = BTreeMap::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let parse = || -> Option<(usize, bool)> { Some((f.first()?.trim().parse().ok()?, f.get(2)?.trim() == "1")) };
        let (frame, ng) = parse().ok_or_else(|| format!("{}:{}: expected `frame,class,ng`", path.display(), i + 1))?;
        rows.insert(frame, ng);
    }
    Ok(rows.into_values().collect())
}

#[derive(Default)]
struct Tally {
    agree: u64,
    mismatches: u64,
    expected_ng: u64,
}

impl Tally {
    fn add(&mut self, doc: &Value, labels: &[bool]) {
        let (Some(id), Some(verdict)) = (doc["part_id"].as_u64(), doc["verdict"].as_str()) else { return };
        if labels.is_empty() || id == 0 {
            return;
        }
        // The video loops: part n shows frame (n - 1) mod length.
        let ng = labels[((id - 1) as usize) % labels.len()];
        self.expected_ng += u64::from(ng);
        let got_ng = verdict != "OK";
        if got_ng == ng {
            self.agree += 1;
        } else {
            self.mismatches += 1;
        }
    }
}
