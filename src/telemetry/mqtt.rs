//! The plain JSON MQTT session: one task owns the connection.
//!
//! Each attempt connects to the next broker of the list (`host`, then
//! `failover`) with a fresh rumqttc client, after an exponential backoff with
//! jitter (rumqttc alone would retry at once and spin). The broker publishes
//! `offline` (retained) as our Last Will if we vanish; we publish `online`
//! (retained) after every connect and `offline` ourselves on a clean stop.
//! While no broker is reachable, messages for the disk queue are stored and
//! everything else is dropped (a stats message is replaced by the next one).

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, Outgoing, Packet, QoS};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::connection::{self, Ended, Server};
use super::durable::{self, Durable};
use crate::config::{MqttConfig, NodeIdentity};
use crate::stats::QueueStats;
use crate::store::writer::Message;
use crate::util::throttle::{Report, Throttle};

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
    pub fn task_state(&self, task: &str) -> String {
        format!("{}/tasks/{task}/state", self.base)
    }
    pub fn point(&self, point: &str) -> String {
        format!("{}/points/{point}", self.base)
    }
    pub fn camera_status(&self, camera: &str) -> String {
        format!("{}/cameras/{camera}/status", self.base)
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
        retain: bool,
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

/// Messages buffered between the pipeline and the MQTT task.
const BUFFER: usize = 8192;

impl Mqtt {
    /// Connect, and subscribe to `subscriptions` (QoS 1) after every connect;
    /// what arrives on them comes out of the returned receiver. Fails only
    /// when the TLS files cannot be used.
    pub fn start(
        cfg: &MqttConfig,
        node: &NodeIdentity,
        subscriptions: Vec<String>,
        durable: Option<Durable>,
    ) -> Result<(Mqtt, tokio::task::JoinHandle<()>, mpsc::Receiver<Incoming>), String> {
        let topics = Topics::new(&cfg.prefix, node);
        let client_id =
            cfg.client_id.clone().unwrap_or_else(|| format!("linesight-{}-{}", node.group_id, node.node_id));
        let tls = cfg.tls.as_ref().map(connection::tls_client_config).transpose()?;
        let (tx, rx) = mpsc::channel(BUFFER);
        let (in_tx, in_rx) = mpsc::channel(connection::INCOMING_BUFFER);
        let queue = durable.as_ref().map_or_else(Arc::default, |d| d.stats().clone());
        let session = Session {
            cfg: cfg.clone(),
            client_id,
            tls,
            topics: topics.clone(),
            subscriptions,
            incoming: in_tx,
            durable,
            rx,
            stopping: None,
            connect_log: Throttle::default(),
            flood_log: Throttle::default(),
            last_drop: None,
        };
        let task = tokio::spawn(session.run());
        Ok((Mqtt { tx, topics, queue }, task, in_rx))
    }

    /// Queue a message. Returns false when the buffer is full (the caller counts it).
    pub fn publish(&self, topic: String, payload: Vec<u8>, qos: QoS, retain: bool) -> bool {
        self.tx.try_send(Msg::Publish { topic, payload, qos, retain }).is_ok()
    }

    /// Like [`Mqtt::publish`], but waits for room instead of dropping the message: for answers to
    /// commands, so that a flood of commands is slowed down (and with it what the broker sends
    /// us) rather than answered only in part.
    pub async fn publish_waiting(&self, topic: String, payload: Vec<u8>, qos: QoS, retain: bool) -> bool {
        self.tx.send(Msg::Publish { topic, payload, qos, retain }).await.is_ok()
    }

    /// Queue a message that must not be lost: on disk first when the queue is
    /// configured (sent with `msg_id`, and `historical` when it could not go
    /// out live), else like [`Mqtt::publish`] with QoS 1.
    pub fn publish_durable(&self, topic: String, payload: Vec<u8>, retain: bool) -> bool {
        self.tx.try_send(Msg::Durable { topic, payload, retain }).is_ok()
    }

    /// Publish `offline`, wait (bounded) until everything queued is acknowledged, disconnect.
    pub async fn stop(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Stop(done)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
    }
}

/// A flood of incoming messages is over after this long without a drop.
const FLOOD_QUIET: Duration = Duration::from_secs(10);

/// The task's whole world.
struct Session {
    /// Failed connects: logged at the start, once a minute while they last, and at the end.
    connect_log: Throttle,
    /// Incoming messages dropped unread (a flood): logged at its start, once a minute, at its end.
    flood_log: Throttle,
    last_drop: Option<std::time::Instant>,
    cfg: MqttConfig,
    client_id: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    topics: Topics,
    subscriptions: Vec<String>,
    incoming: mpsc::Sender<Incoming>,
    durable: Option<Durable>,
    rx: mpsc::Receiver<Msg>,
    stopping: Option<(oneshot::Sender<()>, Instant)>,
}

impl Session {
    async fn run(mut self) {
        let servers = connection::servers(&self.cfg);
        let mut backoff = connection::backoff();
        let mut at = 0;
        let mut flush_tick = tokio::time::interval(Duration::from_millis(50));
        flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let server = &servers[at % servers.len()];
            match self.connection(server, &mut flush_tick).await {
                Ended::Stopped => return,
                Ended::Failed { was_connected } => {
                    if was_connected {
                        backoff.reset();
                    }
                    if self.stopping.is_some() {
                        self.finish(None).await;
                        return;
                    }
                    at += 1;
                    let wait = backoff.delay();
                    if self.wait_offline(wait, &mut flush_tick).await {
                        return;
                    }
                }
            }
        }
    }

    /// Serve the pipeline while no broker is connected: store what must
    /// not be lost, drop the rest. True when a stop completed meanwhile.
    async fn wait_offline(&mut self, wait: Duration, flush_tick: &mut tokio::time::Interval) -> bool {
        let until = Instant::now() + wait;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return false,
                _ = flush_tick.tick() => self.tick(),
                // Refused while no broker is connected: nowhere to send it; counted as dropped.
                ev = durable::next_event(self.durable.as_ref()) => {
                    self.queue_event(ev, None);
                }
                msg = self.rx.recv() => match msg {
                    Some(Msg::Durable { topic, payload, retain }) => {
                        self.store(topic, payload, retain, None);
                    }
                    Some(Msg::Publish { .. }) => {}
                    Some(Msg::Stop(done)) => {
                        self.stopping = Some((done, Instant::now()));
                        self.finish(None).await;
                        return true;
                    }
                    None => return true,
                },
            }
        }
    }

    /// A message for the disk queue (there is one). True when it went out live at once
    /// instead, because the queue's writer could not take it (`client`: connected).
    fn store(&mut self, topic: String, payload: Vec<u8>, retain: bool, client: Option<&AsyncClient>) -> bool {
        let Some(d) = &mut self.durable else { return false };
        match d.push(&topic, payload, retain, client.is_some()) {
            Ok(()) => false,
            Err(m) => self.live(m, client),
        }
    }

    /// An answer of the queue's writer. True when a message it refused went out live.
    fn queue_event(&mut self, ev: crate::store::writer::Event, client: Option<&AsyncClient>) -> bool {
        match self.durable.as_mut().and_then(|d| d.on_event(ev)) {
            Some(m) => self.live(m, client),
            None => false,
        }
    }

    /// A message the queue did not keep: live, without `msg_id` (QoS 1), when connected;
    /// else dropped (already counted). See the guarantees lost in [`durable`].
    fn live(&mut self, m: Message, client: Option<&AsyncClient>) -> bool {
        let Some(client) = client else {
            tracing::debug!(topic = %m.topic, "not queued and no broker connected: message dropped");
            return false;
        };
        if client.try_publish(m.topic, QoS::AtLeastOnce, m.retain, m.payload).is_err() {
            tracing::warn!("MQTT request queue full; a message the disk queue refused is dropped");
            return false;
        }
        if let Some(d) = &mut self.durable {
            d.note_plain();
            d.sent_live();
        }
        true
    }

    fn tick(&mut self) {
        // Acknowledgements to the ledger, figures to the stats; the fsync policy (the loss
        // window) is the writer thread's.
        if let Some(d) = &mut self.durable {
            d.tick();
        }
    }

    /// One connection to `server`, from CONNECT until it fails or we stop.
    ///
    /// One piece on purpose: the select loop owns the client, its event loop and the
    /// `queued`/`sent` counts that decide when a stop has flushed; split up, every part would
    /// have to carry all three, and the order of the arms (stop check, queue pump, select) is
    /// what makes a stop lose nothing.
    async fn connection(&mut self, server: &Server, flush_tick: &mut tokio::time::Interval) -> Ended {
        let mut opts = connection::options(&self.cfg, server, &self.client_id, self.tls.as_ref());
        opts.set_last_will(LastWill::new(self.topics.availability(), "offline", QoS::AtLeastOnce, true));
        let (client, mut eventloop) = AsyncClient::new(opts, 4096);
        let ack = match connection::connect(&mut eventloop).await {
            Ok(ack) => ack,
            Err(e) => {
                let why = connection::explain(&e, server);
                match self.connect_log.failed(std::time::Instant::now(), &format!("{server}: {why}")) {
                    Some(Report::First) => {
                        tracing::warn!(%server, error = %why, "MQTT connection refused or failed; trying again (the next broker, if several are configured)")
                    }
                    Some(Report::Still { repeats, total, for_s }) => {
                        tracing::warn!(%server, error = %why, repeats, total, for_s, "MQTT connection still failing (logged once a minute)")
                    }
                    None => {}
                }
                return Ended::Failed { was_connected: false };
            }
        };
        if let Some((down, attempts)) = self.connect_log.recovered(std::time::Instant::now()) {
            tracing::info!(%server, down_s = down.as_secs(), attempts, "connected after failed attempts");
        }
        tracing::info!(%server, session_present = ack.session_present, "MQTT connected");
        let mut alive = connection::Liveness::new(self.cfg.keep_alive.get());
        let mut queued: u64 = 0;
        let mut sent: u64 = 0;
        if let Some(d) = &mut self.durable {
            d.on_connected();
        }
        // Subscriptions before anything else, so a command sent in answer to
        // `online` is not missed.
        for t in &self.subscriptions {
            if let Err(e) = client.try_subscribe(t.clone(), QoS::AtLeastOnce) {
                tracing::error!(%server, topic = %t, error = %e, "cannot subscribe");
            }
        }
        if client.try_publish(self.topics.availability(), QoS::AtLeastOnce, true, "online").is_ok() {
            queued += 1;
            if let Some(d) = &mut self.durable {
                d.note_plain();
            }
        }
        loop {
            if let Some((_, deadline)) = &self.stopping {
                let drained = self.durable.as_ref().map_or(true, |d| d.waiting() == 0);
                let flushed = sent >= queued && eventloop.state.inflight() == 0 && drained;
                if flushed || Instant::now() >= *deadline {
                    if !flushed {
                        tracing::warn!(%server, "MQTT stop: not every message was acknowledged before the deadline");
                    }
                    self.finish(Some((&client, &mut eventloop))).await;
                    return Ended::Stopped;
                }
            }
            if let Some(d) = &mut self.durable {
                queued += d.pump(&client, &mut durable::JsonStamp);
            }
            tokio::select! {
                _ = flush_tick.tick() => self.tick(),
                ev = durable::next_event(self.durable.as_ref()) => {
                    if self.queue_event(ev, Some(&client)) {
                        queued += 1;
                    }
                }
                msg = self.rx.recv(), if self.stopping.is_none() => match msg {
                    Some(Msg::Publish { topic, payload, qos, retain }) => {
                        if client.try_publish(topic, qos, retain, payload).is_ok() {
                            queued += 1;
                            if let Some(d) = &mut self.durable {
                                d.note_plain();
                            }
                        } else {
                            tracing::warn!(%server, "MQTT request queue full; message dropped");
                        }
                    }
                    Some(Msg::Durable { topic, payload, retain }) => {
                        if self.durable.is_some() {
                            if self.store(topic, payload, retain, Some(&client)) {
                                queued += 1;
                            }
                        } else if client.try_publish(topic, QoS::AtLeastOnce, retain, payload).is_ok() {
                            queued += 1;
                        } else {
                            tracing::warn!(%server, "MQTT request queue full; message dropped");
                        }
                    }
                    Some(Msg::Stop(done)) => {
                        if client.try_publish(self.topics.availability(), QoS::AtLeastOnce, true, "offline").is_ok() {
                            queued += 1;
                            if let Some(d) = &mut self.durable {
                                d.note_plain();
                            }
                        }
                        self.stopping = Some((done, Instant::now() + Duration::from_secs(3)));
                    }
                    None => return Ended::Stopped,
                },
                _ = tokio::time::sleep_until(alive.deadline()) => {
                    if let Some(d) = &mut self.durable {
                        d.on_disconnected();
                    }
                    tracing::warn!(%server, silent_ms = alive.silent_for().as_millis() as u64, "MQTT connection lost: nothing from the broker for 1.5 x keep-alive (a dead link); reconnecting");
                    return Ended::Failed { was_connected: true };
                }
                ev = eventloop.poll() => match ev.inspect(|e| if matches!(e, Event::Incoming(_)) { alive.heard() }) {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Some(why) = connection::bad_topic(&p.topic) {
                            if let Some(d) = &mut self.durable {
                                d.on_disconnected();
                            }
                            tracing::warn!(%server, topic = ?p.topic, "MQTT connection dropped: broker {server} sent a PUBLISH {why} (an MQTT protocol violation); reconnecting");
                            return Ended::Failed { was_connected: true };
                        }
                        let msg = Incoming { topic: p.topic.clone(), payload: p.payload.to_vec(), retain: p.retain };
                        // Never block the event loop on a slow consumer: a flood is dropped and
                        // logged, when it starts, once a minute while it lasts, and when it ends.
                        let now = std::time::Instant::now();
                        if self.incoming.try_send(msg).is_err() {
                            self.last_drop = Some(now);
                            match self.flood_log.failed(now, "incoming flood") {
                                Some(Report::First) => tracing::warn!(target: "linesight::audit", %server, topic = %p.topic, "incoming messages dropped unread: too many waiting (a flood of commands); counted and logged once a minute until it ends"),
                                Some(Report::Still { repeats, total, for_s }) => tracing::warn!(target: "linesight::audit", %server, topic = %p.topic, repeats, total, for_s, "incoming messages still dropped unread: too many waiting"),
                                None => {}
                            }
                        } else if self.last_drop.is_some_and(|t| now.duration_since(t) >= FLOOD_QUIET) {
                            // Over only after a quiet spell, not at each gap between the
                            // sender's bursts (that would log a line per burst).
                            self.last_drop = None;
                            if let Some((lasted, dropped)) = self.flood_log.recovered(now) {
                                tracing::warn!(target: "linesight::audit", %server, dropped, lasted_ms = lasted.as_millis() as u64, "incoming flood over: messages dropped unread");
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        if connection::refused(&ack) {
                            tracing::error!(%server, "the broker refused a subscription (its ACL does not allow this client to read the command topic); remote commands will not arrive");
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        sent += 1;
                        if let Some(d) = &mut self.durable {
                            d.outgoing(pkid);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(d) = &mut self.durable {
                            d.puback(ack.pkid);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if let Some(d) = &mut self.durable {
                            d.on_disconnected();
                        }
                        let why = connection::explain(&e, server);
                        tracing::warn!(%server, error = %why, "MQTT connection lost; reconnecting");
                        return Ended::Failed { was_connected: true };
                    }
                },
            }
        }
    }

    /// Disconnect (when connected), flush the queue, and report the stop done.
    async fn finish(&mut self, link: Option<(&AsyncClient, &mut EventLoop)>) {
        if let Some((client, eventloop)) = link {
            connection::disconnect(client, eventloop).await;
        }
        // Whatever is still in the channel and must not be lost goes to disk.
        while let Ok(msg) = self.rx.try_recv() {
            if let Msg::Durable { topic, payload, retain } = msg {
                self.store(topic, payload, retain, None);
            }
        }
        if let Some(d) = &mut self.durable {
            d.flush().await;
            if d.waiting() > 0 {
                tracing::info!(waiting = d.waiting(), "MQTT queue keeps undelivered messages for the next start");
            }
        }
        if let Some((done, _)) = self.stopping.take() {
            let _ = done.send(());
        }
    }
}
