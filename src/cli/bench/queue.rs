//! `linesight bench --queue`: the disk queue and the MQTT path behind it.
//!
//! (a) write throughput of the queue with a 200 ms fsync policy and with an
//!     fsync per message; (b) QoS 1 messages per second sustained through
//!     the queue to a local mosquitto (acknowledged by the broker); (c) the
//!     time to replay a backlog of `--backlog` messages (1,000,000 by
//!     default) after an outage. Messages are result-sized JSON (~330 bytes).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::config::{Dur, MqttConfig, NodeIdentity, QueueConfig, QueueFull};
use crate::sim::broker::Broker;
use crate::store::{Store, StoreConfig, WhenFull};
use crate::telemetry::durable::{AckBy, Durable};
use crate::telemetry::mqtt::Mqtt;

fn message(i: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "task": "surface-inspection", "camera": "top", "part_id": i, "verdict": "OK",
        "captured_at": "2026-11-28T04:35:00.123Z", "model": "surface-classifier@1",
        "timings_ms": {"preprocess": 0.412, "inference": 0.689, "capture_to_decision": 1.204},
        "scores": {"good": 0.981, "scratch": 0.004, "spot": 0.006, "crack": 0.005, "chip": 0.004},
        "ng_score": 0.019, "class": "good"
    }))
    .expect("a literal serializes")
}

/// A scratch folder removed on drop (the bench is part of the binary, which does not depend on tempfile).
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, String> {
        use std::sync::atomic::AtomicU64;
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "linesight-bench-queue-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(Scratch(p))
    }
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const TOPIC: &str = "linesight/bench/queue/tasks/t/result";

fn store_config(dir: &std::path::Path, fsync: Duration) -> StoreConfig {
    StoreConfig {
        dir: dir.to_path_buf(),
        max_bytes: 2 << 30,
        segment_bytes: 64 << 20,
        fsync_every: fsync,
        when_full: WhenFull::DropNewest,
    }
}

/// Messages per second pushed into a fresh queue.
fn write_rate(n: u64, fsync: Duration) -> Result<f64, String> {
    let dir = Scratch::new()?;
    let (mut store, _) = Store::open(store_config(dir.path(), fsync)).map_err(|e| e.to_string())?;
    let payload = message(1);
    let t = Instant::now();
    for _ in 0..n {
        store.push(TOPIC, &payload, 1, false).map_err(|e| e.to_string())?;
    }
    store.flush().map_err(|e| e.to_string())?;
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

fn mqtt_config(port: u16, dir: &std::path::Path) -> (MqttConfig, QueueConfig) {
    let q = QueueConfig {
        dir: dir.to_path_buf(),
        max_mb: 2048,
        fsync_every: Dur::from_millis(200),
        when_full: QueueFull::DropNewest,
    };
    let m = MqttConfig { queue: Some(q.clone()), ..MqttConfig::new("127.0.0.1", port) };
    (m, q)
}

/// Wait until the queue is empty (everything acknowledged); returns the time it took.
async fn drain(mqtt: &Mqtt, since: Instant, limit: Duration) -> Result<Duration, String> {
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if mqtt.queue.waiting.load(Ordering::Relaxed) == 0 {
            return Ok(since.elapsed());
        }
        if since.elapsed() > limit {
            return Err(format!(
                "{} messages still waiting after {limit:?}",
                mqtt.queue.waiting.load(Ordering::Relaxed)
            ));
        }
    }
}

pub async fn run(backlog: u64) -> Result<Value, String> {
    // (a) queue writes.
    let per_200ms = tokio::task::spawn_blocking(|| write_rate(200_000, Duration::from_millis(200)))
        .await
        .map_err(|e| e.to_string())??;
    let per_msg =
        tokio::task::spawn_blocking(|| write_rate(2_000, Duration::ZERO)).await.map_err(|e| e.to_string())??;

    let broker = Broker::start()?;
    let node = NodeIdentity { group_id: "bench".into(), node_id: "queue".into() };

    // (b) sustained QoS 1 through the queue while connected.
    let live = 100_000u64;
    let dir = Scratch::new()?;
    let (cfg, q) = mqtt_config(broker.port, dir.path());
    let (mqtt, task, _in) = Mqtt::start(
        &cfg,
        &node,
        Vec::new(),
        Some(Durable::open(&q, AckBy::PubAck, "MQTT queue", Default::default())?),
    )?;
    tokio::time::sleep(Duration::from_millis(300)).await; // connected
    let payload = message(1);
    let t = Instant::now();
    for _ in 0..live {
        while !mqtt.publish_durable(TOPIC.into(), payload.clone(), false) {
            tokio::task::yield_now().await; // the task's channel is full: wait for it
        }
    }
    let took = drain(&mqtt, t, Duration::from_secs(600)).await?;
    let qos1_rate = live as f64 / took.as_secs_f64();
    mqtt.stop().await;
    let _ = task.await;

    // (c) a backlog written while the broker was "away", then replayed.
    let dir = Scratch::new()?;
    {
        let path = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let (mut store, _) =
                Store::open(store_config(&path, Duration::from_millis(200))).map_err(|e| e.to_string())?;
            let payload = message(1);
            for _ in 0..backlog {
                store.push(TOPIC, &payload, 1, false).map_err(|e| e.to_string())?;
            }
            store.flush().map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??;
    }
    let (cfg, q) = mqtt_config(broker.port, dir.path());
    let t = Instant::now();
    let (mqtt, task, _in) = Mqtt::start(
        &cfg,
        &node,
        Vec::new(),
        Some(Durable::open(&q, AckBy::PubAck, "MQTT queue", Default::default())?),
    )?;
    let replay = drain(&mqtt, t, Duration::from_secs(3600)).await?;
    mqtt.stop().await;
    let _ = task.await;

    Ok(json!({
        "queue_write_per_s": {"fsync_200ms": per_200ms.round(), "fsync_every_message": per_msg.round()},
        "message_bytes": payload.len(),
        "qos1_sustained_per_s": qos1_rate.round(),
        "qos1_messages": live,
        "replay": {"messages": backlog, "seconds": (replay.as_secs_f64() * 10.0).round() / 10.0,
                    "per_s": (backlog as f64 / replay.as_secs_f64()).round()},
        "machine": super::machine(),
    }))
}
