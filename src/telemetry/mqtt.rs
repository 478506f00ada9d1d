//! The MQTT connection: one task owns the rumqttc event loop.
//!
//! rumqttc reconnects by itself but without any pause, so a dead broker makes
//! it spin; this task sleeps with exponential backoff and jitter between
//! attempts. The broker publishes `offline` (retained) as our Last Will if we
//! vanish; we publish `online` (retained) after every connect and `offline`
//! ourselves on a clean stop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::durable::Durable;
use crate::config::{MqttConfig, NodeIdentity};

/// Topic names, all under `<prefix>/<group_id>/<node_id>`.
#[derive(Debug, Clone)]
pub struct Topics {
    pub base: String,
}

impl Topics {
    pub fn new(prefix: &str, node: &NodeIdentity) -> Self {
        Topics { base: format!("{prefix}/{}/{}", node.group_id, node.node_id) }
    }
    pub fn availability(&self) -> String {
        format!("{}/availability", self.base)
    }
    pub fn stats(&self) -> String {
        format!("{}/stats", self.base)
    }
    pub fn result(&self, task: &str) -> String {
        format!("{}/tasks/{task}/result", self.base)
    }
    pub fn point(&self, point: &str) -> String {
        format!("{}/points/{point}", self.base)
    }
    pub fn alarms(&self) -> String {
        format!("{}/alarms", self.base)
    }
    pub fn commands(&self) -> String {
        format!("{}/commands", self.base)
    }
    pub fn command_responses(&self) -> String {
        format!("{}/commands/response", self.base)
    }
}

/// A message received on a subscribed topic.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

enum Msg {
    Publish {
        topic: String,
        payload: Vec<u8>,
        qos: QoS,
        retain: bool,
    },
    /// Through the disk queue (when configured): results and alarms.
    Durable {
        topic: String,
        payload: Vec<u8>,
    },
    Stop(oneshot::Sender<()>),
}

/// Cheap to clone; hands messages to the MQTT task without ever blocking the pipeline.
#[derive(Clone)]
pub struct Mqtt {
    tx: mpsc::Sender<Msg>,
    pub topics: Topics,
    /// The disk queue's figures (zero without a queue).
    pub queue: Arc<QueueStats>,
}

/// The disk queue as telemetry sees it; the MQTT task owns the queue and updates these.
#[derive(Debug, Default)]
pub struct QueueStats {
    pub configured: AtomicBool,
    /// Messages stored and not yet acknowledged by the broker.
    pub waiting: AtomicU64,
    /// Messages the full queue dropped.
    pub dropped: AtomicU64,
    /// Messages lost to damage found on disk at start or while reading.
    pub lost: AtomicU64,
}

/// Messages buffered between the pipeline and the MQTT task.
const BUFFER: usize = 8192;

impl Mqtt {
    /// Connect, and subscribe to `subscriptions` (QoS 1) after every connect;
    /// what arrives on them comes out of the returned receiver.
    pub fn start(
        cfg: &MqttConfig,
        node: &NodeIdentity,
        subscriptions: Vec<String>,
        durable: Option<Durable>,
    ) -> (Mqtt, tokio::task::JoinHandle<()>, mpsc::Receiver<Incoming>) {
        let topics = Topics::new(&cfg.prefix, node);
        let client_id =
            cfg.client_id.clone().unwrap_or_else(|| format!("linesight-{}-{}", node.group_id, node.node_id));
        let mut opts = MqttOptions::new(client_id, cfg.host.clone(), cfg.port);
        opts.set_keep_alive(cfg.keep_alive.get());
        opts.set_last_will(LastWill::new(topics.availability(), "offline", QoS::AtLeastOnce, true));
        // The 10 KiB default is too small for a stats message with many tasks.
        opts.set_max_packet_size(1 << 20, 1 << 20);
        if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
            opts.set_credentials(u.clone(), p.clone());
        }
        let (client, eventloop) = AsyncClient::new(opts, 4096);
        let (tx, rx) = mpsc::channel(BUFFER);
        let broker = format!("{}:{}", cfg.host, cfg.port);
        let (in_tx, in_rx) = mpsc::channel(256);
        let queue = Arc::new(QueueStats::default());
        queue.configured.store(durable.is_some(), Ordering::Relaxed);
        let stats = queue.clone();
        let task =
            tokio::spawn(run(client, eventloop, rx, topics.clone(), broker, subscriptions, in_tx, durable, stats));
        (Mqtt { tx, topics, queue }, task, in_rx)
    }

    /// Queue a message. Returns false when the buffer is full (the caller counts it).
    pub fn publish(&self, topic: String, payload: Vec<u8>, qos: QoS, retain: bool) -> bool {
        self.tx.try_send(Msg::Publish { topic, payload, qos, retain }).is_ok()
    }

    /// Queue a message that must not be lost: on disk first when the queue is
    /// configured (sent with `msg_id`, and `historical` when it could not go
    /// out live), else like [`Mqtt::publish`] with QoS 1.
    pub fn publish_durable(&self, topic: String, payload: Vec<u8>) -> bool {
        self.tx.try_send(Msg::Durable { topic, payload }).is_ok()
    }

    /// Publish `offline`, wait (bounded) until everything queued is acknowledged, disconnect.
    pub async fn stop(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Stop(done)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
    }
}

// The task's whole world is handed over once, at start.
#[allow(clippy::too_many_arguments)]
async fn run(
    client: AsyncClient,
    mut eventloop: EventLoop,
    mut rx: mpsc::Receiver<Msg>,
    topics: Topics,
    broker: String,
    subscriptions: Vec<String>,
    incoming: mpsc::Sender<Incoming>,
    mut durable: Option<Durable>,
    queue_stats: Arc<QueueStats>,
) {
    let mut flush_tick = tokio::time::interval(Duration::from_millis(50));
    flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = Duration::from_millis(250);
    let mut connected = false;
    let mut queued: u64 = 0;
    let mut sent: u64 = 0;
    let mut stopping: Option<(oneshot::Sender<()>, Instant)> = None;
    loop {
        if let Some((_, deadline)) = &stopping {
            let drained = durable.as_ref().map_or(true, |d| d.waiting() == 0 || !connected);
            let flushed = sent >= queued && eventloop.state.inflight() == 0 && drained;
            if flushed || Instant::now() >= *deadline {
                if !flushed {
                    tracing::warn!(%broker, "MQTT stop: not every message was acknowledged before the deadline");
                }
                let _ = client.try_disconnect();
                // Let the DISCONNECT go out.
                let _ = tokio::time::timeout(Duration::from_millis(500), async {
                    loop {
                        match eventloop.poll().await {
                            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                            _ => {}
                        }
                    }
                })
                .await;
                if let Some(d) = &mut durable {
                    d.flush();
                    if d.waiting() > 0 {
                        tracing::info!(%broker, waiting = d.waiting(), "MQTT queue keeps undelivered messages for the next start");
                    }
                }
                if let Some((done, _)) = stopping.take() {
                    let _ = done.send(());
                }
                return;
            }
        }
        if connected {
            if let Some(d) = &mut durable {
                queued += d.pump(&client);
            }
        }
        tokio::select! {
            _ = flush_tick.tick() => {
                // The fsync policy (the loss window) is the store's; this only gives it a chance.
                if let Some(d) = &mut durable {
                    d.tick();
                    queue_stats.waiting.store(d.waiting() as u64, Ordering::Relaxed);
                    queue_stats.dropped.store(d.dropped(), Ordering::Relaxed);
                    queue_stats.lost.store(d.lost(), Ordering::Relaxed);
                }
            }
            msg = rx.recv(), if stopping.is_none() => match msg {
                Some(Msg::Publish { topic, payload, qos, retain }) => {
                    if client.try_publish(topic, qos, retain, payload).is_ok() {
                        queued += 1;
                        if let Some(d) = &mut durable {
                            d.note_plain();
                        }
                    } else {
                        tracing::warn!(%broker, "MQTT request queue full; message dropped");
                    }
                }
                Some(Msg::Durable { topic, payload }) => match &mut durable {
                    Some(d) => {
                        if !d.push(&topic, &payload, connected) {
                            tracing::warn!(%broker, %topic, "message not stored: the MQTT queue refused it");
                        }
                    }
                    None => {
                        if client.try_publish(topic, QoS::AtLeastOnce, false, payload).is_ok() {
                            queued += 1;
                        } else {
                            tracing::warn!(%broker, "MQTT request queue full; message dropped");
                        }
                    }
                },
                Some(Msg::Stop(done)) => {
                    if client.try_publish(topics.availability(), QoS::AtLeastOnce, true, "offline").is_ok() {
                        queued += 1;
                        if let Some(d) = &mut durable {
                            d.note_plain();
                        }
                    }
                    let wait = if connected { Duration::from_secs(3) } else { Duration::from_millis(300) };
                    stopping = Some((done, Instant::now() + wait));
                }
                None => return,
            },
            ev = eventloop.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    connected = true;
                    backoff = Duration::from_millis(250);
                    tracing::info!(%broker, session_present = ack.session_present, "MQTT connected");
                    if let Some(d) = &mut durable {
                        d.on_connected();
                    }
                    if client.try_publish(topics.availability(), QoS::AtLeastOnce, true, "online").is_ok() {
                        queued += 1;
                        if let Some(d) = &mut durable {
                            d.note_plain();
                        }
                    }
                    for t in &subscriptions {
                        if let Err(e) = client.try_subscribe(t.clone(), QoS::AtLeastOnce) {
                            tracing::error!(%broker, topic = %t, error = %e, "cannot subscribe");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let msg = Incoming { topic: p.topic.clone(), payload: p.payload.to_vec(), retain: p.retain };
                    // Never block the event loop on a slow consumer: a flood is dropped and logged.
                    if incoming.try_send(msg).is_err() {
                        tracing::warn!(%broker, topic = %p.topic, "incoming message dropped: too many waiting");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if ack.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) {
                        tracing::error!(%broker, "the broker refused a subscription (ACL?); remote commands will not arrive");
                    }
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    sent += 1;
                    if let Some(d) = &mut durable {
                        d.outgoing(pkid);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(d) = &mut durable {
                        d.puback(ack.pkid);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if let (true, Some(d)) = (connected, &mut durable) {
                        d.on_disconnected();
                    }
                    if connected {
                        tracing::warn!(%broker, error = %e, "MQTT connection lost; reconnecting");
                    } else {
                        tracing::warn!(%broker, error = %e, retry_in_ms = backoff.as_millis() as u64, "MQTT broker unreachable; retrying (check mqtt.host/port and that the broker runs)");
                    }
                    connected = false;
                    if stopping.is_some() {
                        // No broker to flush to; give up at the deadline.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            },
        }
    }
}

/// Up to +/-25 % of `d`, so that many nodes do not reconnect in lockstep
/// after a broker restart. Randomness from the clock's nanoseconds is enough here.
fn jitter(d: Duration) -> Duration {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.subsec_nanos()).unwrap_or(0);
    let frac = (nanos % 1000) as f64 / 1000.0; // 0..1
    d.mul_f64(0.75 + 0.5 * frac)
}
