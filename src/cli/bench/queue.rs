//! `linesight bench --queue`: the disk queue and the MQTT path behind it.
//!
//! (a) write throughput of the queue alone, with a 200 ms fsync policy and with an fsync per
//!     message; then `--runs` rounds (3 by default), each of:
//! (b) the broker's ceiling: a plain QoS 1 publisher with no queue (rumqttc directly, the same
//!     in-flight window) sending `--messages` to the same local mosquitto, until every PUBACK
//!     is in;
//! (c) QoS 1 sustained through the queue: `--messages` handed to an MQTT session with a disk
//!     queue, as the daemon does, until the broker acknowledged all of them and the queue's
//!     ledger recorded it;
//! (d) the replay of a backlog of `--replay-messages` written while the broker was away: from
//!     the session's start (the queue's open and scan included) until the queue is empty.
//!
//! The rounds interleave the ceiling and the queue, so a machine that slows down during the
//! bench (other work on it) weighs on both alike. Each figure is reported as the median of the
//! rounds and their spread (min-max), next to its goal (issue 14: 20,000 messages/s through the
//! queue; 1,000,000 messages replayed in 60 s); a goal whose figure's spread straddles it is
//! reported as not decided, not as met. Messages are result-sized JSON (~330 bytes).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

use crate::config::{Dur, MqttConfig, NodeIdentity, QueueConfig, QueueFull};
use crate::sim::broker::Broker;
use crate::store::{Store, StoreConfig, WhenFull};
use crate::telemetry::connection;
use crate::telemetry::durable::{AckBy, Durable};
use crate::telemetry::mqtt::Mqtt;

/// The goal for QoS 1 through the queue, messages per second.
const GOAL_QOS1_PER_S: f64 = 20_000.0;
/// The goal for a replay: 1,000,000 messages in 60 s.
const GOAL_REPLAY_PER_S: f64 = 1_000_000.0 / 60.0;

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Rounds (ceiling, queue, replay), at least 1.
    pub runs: usize,
    /// Messages of each ceiling and sustained run.
    pub messages: u64,
    /// Messages in each replayed backlog.
    pub replay_messages: u64,
    /// The in-flight window (the config's default if `None`).
    pub inflight: Option<u16>,
    /// Messages per second offered to the queue in the sustained runs.
    pub offered: u64,
}

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

fn mqtt_config(port: u16, dir: &std::path::Path, inflight: u16) -> (MqttConfig, QueueConfig) {
    let q = QueueConfig {
        max_mb: 2048,
        fsync_every: Dur::from_millis(200),
        when_full: QueueFull::DropNewest,
        inflight,
        ..QueueConfig::new(dir)
    };
    let m = MqttConfig { queue: Some(q.clone()), ..MqttConfig::new("127.0.0.1", port) };
    (m, q)
}

/// Wait until the queue is empty (everything acknowledged); returns the time it took.
async fn drain(mqtt: &Mqtt, since: Instant, limit: Duration) -> Result<Duration, String> {
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
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

/// Up to `limit` for a run of `n` messages: at 100 messages/s, an hour at least.
fn limit_for(n: u64) -> Duration {
    Duration::from_secs((n / 100).max(3600))
}

/// (b) The broker's ceiling: `n` QoS 1 messages from rumqttc alone, as fast as the broker
/// acknowledges them (the same payload as the queue sends, with its `msg_id`).
async fn ceiling(port: u16, n: u64, inflight: u16, round: usize) -> Result<f64, String> {
    let mut opts = MqttOptions::new(format!("linesight-bench-ceiling-{round}"), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_clean_session(true);
    opts.set_max_packet_size(connection::MAX_INCOMING_PACKET, connection::MAX_PACKET);
    opts.set_inflight(inflight);
    let (client, mut eventloop) = AsyncClient::new(opts, 4096);
    connection::connect(&mut eventloop)
        .await
        .map_err(|e| format!("ceiling publisher: cannot connect to the bench's broker on port {port}: {e}"))?;
    let mut payload = message(1);
    // What the queue adds to each message (`"msg_id":N,`), so both send the same bytes.
    payload.splice(1..1, br#""msg_id":123456,"#.iter().copied());
    let t = Instant::now();
    let publisher = {
        let client = client.clone();
        tokio::spawn(async move {
            for _ in 0..n {
                if client.publish(TOPIC, QoS::AtLeastOnce, false, payload.clone()).await.is_err() {
                    break;
                }
            }
        })
    };
    let mut acked = 0u64;
    while acked < n {
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("ceiling publisher: connection to port {port} failed: {e}")),
            Err(_) => return Err(format!("ceiling publisher: no PUBACK for 10 s after {acked} of {n}")),
        }
    }
    let took = t.elapsed();
    let _ = publisher.await;
    connection::disconnect(&client, &mut eventloop).await;
    Ok(n as f64 / took.as_secs_f64())
}

/// What one run through the queue did.
struct QueueRun {
    per_s: f64,
    seconds: f64,
    /// Messages that did not go through the queue (sent live, or dropped): must be 0.
    not_queued: u64,
}

/// (c) `n` messages offered to a session with a disk queue at `offered` a second, as the
/// pipeline would (it never waits for the queue: a message the queue's writer cannot take at once
/// goes out live and is counted in `not_queued`); the rate is `n` over the time until the last
/// is acknowledged and recorded. Offered above what the queue sends, the rest waits on disk and
/// the figure is the queue's; offered below, it is the offered rate.
async fn sustained(
    broker: &Broker,
    node: &NodeIdentity,
    n: u64,
    inflight: u16,
    offered: u64,
) -> Result<QueueRun, String> {
    let dir = Scratch::new()?;
    let (cfg, q) = mqtt_config(broker.port, dir.path(), inflight);
    let (mqtt, task, _in) =
        Mqtt::start(&cfg, node, Vec::new(), Some(Durable::open(&q, AckBy::PubAck, "MQTT queue", Default::default())?))?;
    tokio::time::sleep(Duration::from_millis(300)).await; // connected
    let payload = message(1);
    let t = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut sent = 0;
    while sent < n {
        tick.tick().await;
        // Whatever is due by now: a late tick (a busy machine) is made up at once.
        let due = ((t.elapsed().as_secs_f64() * offered as f64) as u64).min(n);
        while sent < due {
            while !mqtt.publish_durable(TOPIC.into(), payload.clone(), false) {
                tokio::task::yield_now().await; // the session's channel is full: wait for it
            }
            sent += 1;
        }
    }
    let took = drain(&mqtt, t, limit_for(n)).await?;
    let not_queued = mqtt.queue.live.load(Ordering::Relaxed) + mqtt.queue.dropped.load(Ordering::Relaxed);
    mqtt.stop().await;
    let _ = task.await;
    Ok(QueueRun { per_s: n as f64 / took.as_secs_f64(), seconds: took.as_secs_f64(), not_queued })
}

/// (d) A backlog of `n` written while the broker was "away", then replayed from a session's start.
async fn replay(broker: &Broker, node: &NodeIdentity, n: u64, inflight: u16) -> Result<QueueRun, String> {
    let dir = Scratch::new()?;
    {
        let path = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let (mut store, _) =
                Store::open(store_config(&path, Duration::from_millis(200))).map_err(|e| e.to_string())?;
            let payload = message(1);
            for _ in 0..n {
                store.push(TOPIC, &payload, 1, false).map_err(|e| e.to_string())?;
            }
            store.flush().map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??;
    }
    let (cfg, q) = mqtt_config(broker.port, dir.path(), inflight);
    let t = Instant::now();
    let (mqtt, task, _in) =
        Mqtt::start(&cfg, node, Vec::new(), Some(Durable::open(&q, AckBy::PubAck, "MQTT queue", Default::default())?))?;
    // The queue's figures come on its first tick: until then `waiting` is still 0.
    while mqtt.queue.waiting.load(Ordering::Relaxed) == 0 && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = drain(&mqtt, t, limit_for(n)).await?;
    let not_queued = mqtt.queue.live.load(Ordering::Relaxed) + mqtt.queue.dropped.load(Ordering::Relaxed);
    mqtt.stop().await;
    let _ = task.await;
    Ok(QueueRun { per_s: n as f64 / took.as_secs_f64(), seconds: took.as_secs_f64(), not_queued })
}

/// The verdict when messages bypassed the queue: the figures are not the queue's.
const NOT_QUEUED: &str =
    "not measured: messages bypassed the queue (its writer could not take the offered load at once); lower --offered";

/// Median and spread of the rounds' figures, each rounded to `digits` decimals.
fn summary(xs: &[f64], digits: i32) -> Value {
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    let median = if s.len() % 2 == 1 { s[s.len() / 2] } else { (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0 };
    let r = |x: f64| {
        let k = 10f64.powi(digits);
        (x * k).round() / k
    };
    json!({
        "median": r(median),
        "min": r(s[0]),
        "max": r(s[s.len() - 1]),
        "runs": xs.iter().map(|&x| r(x)).collect::<Vec<_>>(),
    })
}

/// Whether rates `xs` reach `goal`: met only when every round did, not met when none did;
/// otherwise the spread straddles the goal and the bench says so instead of claiming it.
fn verdict(xs: &[f64], goal: f64) -> &'static str {
    let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if min >= goal {
        "met: every round reached it"
    } else if max < goal {
        "not met: no round reached it"
    } else {
        "not decided: the spread between rounds is wider than the margin to the goal"
    }
}

pub async fn run(plan: Plan) -> Result<Value, String> {
    let runs = plan.runs.max(1);
    // (a) queue writes.
    let per_200ms = tokio::task::spawn_blocking(|| write_rate(200_000, Duration::from_millis(200)))
        .await
        .map_err(|e| e.to_string())??;
    let per_msg =
        tokio::task::spawn_blocking(|| write_rate(2_000, Duration::ZERO)).await.map_err(|e| e.to_string())??;

    let broker = Broker::start()?;
    let node = NodeIdentity { group_id: "bench".into(), node_id: "queue".into() };
    let inflight = plan.inflight.unwrap_or(QueueConfig::new("unused").inflight);

    let (mut ceil, mut queue, mut rep) = (Vec::new(), Vec::new(), Vec::new());
    let mut not_queued = 0;
    for round in 0..runs {
        ceil.push(ceiling(broker.port, plan.messages, inflight, round).await?);
        let q = sustained(&broker, &node, plan.messages, inflight, plan.offered).await?;
        queue.push(q.per_s);
        not_queued += q.not_queued;
        if plan.replay_messages > 0 {
            let r = replay(&broker, &node, plan.replay_messages, inflight).await?;
            not_queued += r.not_queued;
            rep.push(r);
        }
    }
    let ratio: Vec<f64> = queue.iter().zip(&ceil).map(|(q, c)| q / c).collect();
    let replay_per_s: Vec<f64> = rep.iter().map(|r| r.per_s).collect();
    let replay_s: Vec<f64> = rep.iter().map(|r| r.seconds).collect();
    let replay = if rep.is_empty() {
        Value::Null
    } else {
        json!({
            "messages": plan.replay_messages,
            "seconds": summary(&replay_s, 1),
            "per_s": summary(&replay_per_s, 0),
            "goal_per_s": GOAL_REPLAY_PER_S.round(),
            "goal": if not_queued > 0 { NOT_QUEUED } else { verdict(&replay_per_s, GOAL_REPLAY_PER_S) },
        })
    };
    Ok(json!({
        "queue_write_per_s": {"fsync_200ms": per_200ms.round(), "fsync_every_message": per_msg.round()},
        "message_bytes": message(1).len(),
        "inflight": inflight,
        "offered_per_s": plan.offered,
        "rounds": runs,
        "messages": plan.messages,
        "broker_ceiling_per_s": summary(&ceil, 0),
        "qos1_through_queue_per_s": summary(&queue, 0),
        "qos1_goal_per_s": GOAL_QOS1_PER_S,
        "qos1_goal": if not_queued > 0 { NOT_QUEUED } else { verdict(&queue, GOAL_QOS1_PER_S) },
        "queue_over_ceiling": summary(&ratio, 3),
        "replay": replay,
        "not_queued": not_queued,
        "machine": super::machine(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_and_verdicts() {
        let s = summary(&[3.0, 1.0, 2.0], 0);
        assert_eq!(s, json!({"median": 2.0, "min": 1.0, "max": 3.0, "runs": [3.0, 1.0, 2.0]}));
        assert_eq!(summary(&[1.0, 2.0], 1)["median"], json!(1.5));
        assert!(verdict(&[21.0, 22.0, 25.0], 20.0).starts_with("met"));
        assert!(verdict(&[11.0, 12.0, 15.0], 20.0).starts_with("not met"));
        assert!(verdict(&[19.0, 21.0, 22.0], 20.0).starts_with("not decided"));
    }
}
