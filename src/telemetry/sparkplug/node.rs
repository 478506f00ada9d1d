//! The Sparkplug session task: one owner for the connection, the sequence
//! numbers, what each host has been told (births), and the disk queue.
//!
//! Per connection: a new bdSeq goes into the Will (NDEATH) of a fresh
//! client; after CONNACK the node subscribes to NCMD, DCMD and the primary
//! host's STATE, then (once the primary host is online, or at once without
//! one) publishes NBIRTH (seq 0) and a DBIRTH per live device. From then on
//! it reports changed metrics every `report_every`, sends queued results and
//! alarms, and answers commands. A primary host going offline, or a broken
//! link, ends the connection and the next broker of the list is tried.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, Outgoing, Packet, Publish, QoS};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use super::bdseq::BdSeq;
use super::metrics::{self, MValue, Metric};
use super::proto::{self, DataType, Payload};
use super::{CommandCounts, Msg, Pending, Topics};
use crate::config::{MqttConfig, NodeIdentity, SparkplugConfig};
use crate::part::sample::Point;
use crate::stats::{CameraStatus, NodeStats};
use crate::store::writer::{Event as QueueEvent, Message as QueueMessage};
use crate::telemetry::commands::{Command, Commander, MAX_COMMAND_BYTES};
use crate::telemetry::connection::{self, Ended, Server};
use crate::telemetry::durable::{self, Durable, Stamp};
use crate::telemetry::guard::{CommandId, Origin};
use crate::util::throttle::{Report, Throttle};

impl Pending {
    /// Start the session. Fails only when the TLS files cannot be used.
    pub fn start(
        self,
        cfg: &MqttConfig,
        node: &NodeIdentity,
        stats: Arc<NodeStats>,
        points: Arc<BTreeMap<String, Point>>,
        commander: Commander,
        durable: Option<Durable>,
    ) -> Result<(tokio::task::JoinHandle<()>, Arc<CommandCounts>), String> {
        let tls = cfg.tls.as_ref().map(connection::tls_client_config).transpose()?;
        let sp = cfg.sparkplug.clone();
        let client_id =
            sp.client_id.clone().unwrap_or_else(|| format!("linesight-sp-{}-{}", node.group_id, node.node_id));
        let counts = Arc::new(CommandCounts::default());
        let mut events = BTreeMap::new();
        for task in stats.tasks.keys() {
            for m in metrics::result_unset(task) {
                events.insert(m.name.clone(), m);
            }
        }
        for m in metrics::alarms(&serde_json::json!({"faults": stats.faults.list()})) {
            events.insert(m.name.clone(), m);
        }
        if durable.is_some() {
            events.insert(ID_METRIC.into(), Metric::new(ID_METRIC, DataType::UInt64, MValue::Null));
        }
        let session = Session {
            bdseq: BdSeq::open(&sp.bdseq_file),
            cfg: cfg.clone(),
            sp,
            topics: Topics::new(node),
            client_id,
            tls,
            rx: self.rx,
            rebirth: self.rebirth,
            stats,
            points,
            commander,
            in_flight: Arc::new(tokio::sync::Semaphore::new(COMMANDS_IN_FLIGHT)),
            counts: counts.clone(),
            durable,
            seq: 0,
            events,
            last_node: BTreeMap::new(),
            last_dev: BTreeMap::new(),
            born: BTreeSet::new(),
            rates: BTreeMap::new(),
            host_ts: 0,
            stopping: None,
            connect_log: Throttle::default(),
        };
        Ok((tokio::spawn(session.run()), counts))
    }
}

/// Command payloads executed at once at most; more are refused (counted, logged).
const COMMANDS_IN_FLIGHT: usize = 4;

/// Each queued NDATA carries its queue id, for de-duplication after an at-least-once replay.
const ID_METRIC: &str = "Queue/Message Id";

struct Session {
    /// Failed connects: logged at the start, once a minute while they last, and at the end.
    connect_log: Throttle,
    cfg: MqttConfig,
    sp: SparkplugConfig,
    topics: Topics,
    client_id: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    rx: mpsc::Receiver<Msg>,
    rebirth: Arc<Notify>,
    stats: Arc<NodeStats>,
    /// Every configured point (DDATA reports them per device; DCMD writes them).
    points: Arc<BTreeMap<String, Point>>,
    commander: Commander,
    /// Command payloads being executed (see [`COMMANDS_IN_FLIGHT`]).
    in_flight: Arc<tokio::sync::Semaphore>,
    counts: Arc<CommandCounts>,
    durable: Option<Durable>,
    bdseq: BdSeq,
    /// The next message's sequence number (0 to 255, then 0 again).
    seq: u8,
    /// The latest result and alarm metrics: births carry them.
    events: BTreeMap<String, Metric>,
    /// What the host was last told, per node metric and per device metric.
    last_node: BTreeMap<String, MValue>,
    last_dev: BTreeMap<String, BTreeMap<String, MValue>>,
    /// Devices with a DBIRTH and no DDEATH since.
    born: BTreeSet<String>,
    /// Parts processed per task at the last report, for parts/s.
    rates: BTreeMap<String, (u64, Instant)>,
    /// The newest primary-host STATE timestamp seen: older ones are stale.
    host_ts: u64,
    stopping: Option<(oneshot::Sender<()>, Instant)>,
}

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Connected, waiting for the primary host to be online.
    WaitingForHost,
    /// Births published: data flows.
    Online,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// NDEATH: only bdSeq, no seq (the Will and the deliberate death alike).
fn death(bd: u8) -> Vec<u8> {
    Payload {
        timestamp: Some(now_ms()),
        metrics: vec![Metric::new("bdSeq", DataType::Int64, MValue::Int(i64::from(bd))).to_proto(now_ms())],
        ..Default::default()
    }
    .encode_to_vec()
}

/// What an NCMD or DCMD may address: the node's devices (tasks and Modbus devices) and points.
pub trait Addressable {
    /// `device` is a task (camera + model).
    fn is_task(&self, device: &str) -> bool;
    /// `device` is a Modbus device.
    fn is_modbus(&self, device: &str) -> bool;
    /// `point` is a point of Modbus device `device`.
    fn has_point(&self, device: &str, point: &str) -> bool;
}

impl Addressable for Session {
    fn is_task(&self, device: &str) -> bool {
        self.stats.tasks.contains_key(device)
    }
    fn is_modbus(&self, device: &str) -> bool {
        self.stats.devices.contains_key(device)
    }
    fn has_point(&self, device: &str, point: &str) -> bool {
        self.points.get(point).is_some_and(|p| p.config.device == device)
    }
}

/// An NCMD or DCMD message, checked before anything runs: the commands it carries (in order),
/// why any of its metrics were refused, and its origin for the guard.
#[derive(Debug)]
pub struct CommandPayload {
    pub commands: Vec<Command>,
    /// One reason per refused metric; the other metrics still run.
    pub refused: Vec<String>,
    pub origin: Origin,
}

/// Parse an NCMD or DCMD message on `topic` (a DCMD topic names the device). Err when the whole
/// message is refused: retained, larger than [`MAX_COMMAND_BYTES`], or not a Sparkplug B payload.
pub fn parse_command(
    topics: &Topics,
    node: &dyn Addressable,
    topic: &str,
    payload: &[u8],
    retain: bool,
) -> Result<CommandPayload, String> {
    if retain {
        return Err("retained command ignored (clear it from the broker)".into());
    }
    if payload.len() > MAX_COMMAND_BYTES {
        return Err(format!("command of {} bytes: the limit is {MAX_COMMAND_BYTES}", payload.len()));
    }
    let decoded = Payload::decode(payload).map_err(|e| format!("not a Sparkplug B payload: {e}"))?;
    let device = topics.dcmd_device(topic);
    let (mut commands, mut refused) = (Vec::new(), Vec::new());
    for m in &decoded.metrics {
        match metric_command(node, device, m) {
            Ok(Some(c)) => commands.push(c),
            Ok(None) => {}
            Err(e) => refused.push(e),
        }
    }
    // Sparkplug commands carry no id: the payload's digest stands for it, and its timestamp is checked.
    let origin = Origin {
        source: topic.to_string(),
        id: CommandId::sparkplug(topic, payload),
        sent_ms: decoded.timestamp.and_then(|t| i64::try_from(t).ok()),
    };
    Ok(CommandPayload { commands, refused, origin })
}

/// One NCMD (`device` None) or DCMD metric as a [`Command`]; Ok(None) for a no-op (Rebirth = false).
pub fn metric_command(
    node: &dyn Addressable,
    device: Option<&str>,
    m: &proto::Metric,
) -> Result<Option<Command>, String> {
    let Some(name) = m.name.as_deref() else {
        return Err("command metric without a name (linesight uses no aliases)".into());
    };
    let value = metrics::command_value(m)?;
    let as_bool = || value.as_bool().ok_or_else(|| format!("`{name}` takes a Boolean"));
    match device {
        None => match name {
            "Node Control/Rebirth" => Ok(as_bool()?.then_some(Command::Rebirth)),
            "Node Control/Reload" => Ok(as_bool()?.then_some(Command::Reload)),
            _ => match name.strip_prefix("Models/").and_then(|rest| rest.rsplit_once('/')) {
                Some((model, action)) => model_command(model, action, &value).map_err(|e| format!("`{name}`: {e}")),
                None => Err(format!(
                    "unknown node command metric `{name}`; the node takes `Node Control/Rebirth`, `Node Control/Reload` and `Models/<model>/Install|Shadow|Stop Shadow|Promote|Rollback`"
                )),
            },
        },
        Some(dev) if node.is_task(dev) => match name {
            "Inspection/Enabled" => Ok(Some(if as_bool()? {
                Command::EnableTask { task: dev.into() }
            } else {
                Command::DisableTask { task: dev.into() }
            })),
            "Inspection/NG Threshold" => {
                let threshold = value.as_f64().ok_or_else(|| format!("`{name}` takes a number"))?;
                Ok(Some(Command::SetThreshold { task: dev.into(), threshold }))
            }
            _ => Err(format!(
                "task device `{dev}` has no writable metric `{name}`; it takes `Inspection/Enabled` and `Inspection/NG Threshold`"
            )),
        },
        Some(dev) if node.is_modbus(dev) => {
            let point = name
                .strip_prefix("Points/")
                .filter(|p| node.has_point(dev, p))
                .ok_or_else(|| format!("Modbus device `{dev}` has no point metric `{name}`"))?;
            Ok(Some(Command::SetPoint { point: point.into(), value }))
        }
        Some(dev) => Err(format!("no device `{dev}` on this node")),
    }
}

/// A model rollout command: `Models/<model>/Install` (String: the package's path in the drop
/// folder), `Shadow` (UInt64 version), `Stop Shadow` and `Rollback` (Boolean true), `Promote`
/// (UInt64 version; 0 = the version in shadow).
fn model_command(model: &str, action: &str, value: &serde_json::Value) -> Result<Option<Command>, String> {
    let model = model.to_string();
    let yes = || value.as_bool().ok_or_else(|| "takes a Boolean".to_string());
    let version = || value.as_u64().ok_or_else(|| "takes an unsigned integer (a package version)".to_string());
    match action {
        "Install" => {
            let package = value.as_str().ok_or("takes a String (the package's path in the drop folder)")?;
            Ok(Some(Command::InstallModel { model, package: package.to_string() }))
        }
        "Shadow" => Ok(Some(Command::ShadowModel { model, version: version()? })),
        "Stop Shadow" => Ok(yes()?.then_some(Command::StopShadow { model })),
        "Promote" => Ok(Some(Command::PromoteModel { model, version: Some(version()?).filter(|v| *v != 0) })),
        "Rollback" => Ok(yes()?.then_some(Command::RollbackModel { model })),
        _ => Err(format!("no model action `{action}`; models take Install, Shadow, Stop Shadow, Promote and Rollback")),
    }
}

/// A primary host's STATE payload (`{"online": true, "timestamp": ms}`): whether it is online and
/// when it said so; None when either is missing or of the wrong type.
pub fn parse_host_state(payload: &[u8]) -> Result<Option<(bool, u64)>, serde_json::Error> {
    let doc: serde_json::Value = serde_json::from_slice(payload)?;
    let online = doc.get("online").and_then(serde_json::Value::as_bool);
    let ts = doc.get("timestamp").and_then(serde_json::Value::as_u64);
    Ok(online.zip(ts))
}

/// The stamp of queued NDATA: the session's seq, the queue id, and
/// `is_historical` on every metric when it could not go out live.
pub struct SeqStamp<'a> {
    /// The session's next message sequence number.
    pub seq: &'a mut u8,
}

impl Stamp for SeqStamp<'_> {
    fn stamp(&mut self, payload: &[u8], id: u64, historical: bool) -> Vec<u8> {
        let Ok(mut p) = Payload::decode(payload) else {
            // Cannot happen for what this session stored; sent as it is rather than lost.
            return payload.to_vec();
        };
        let ts = p.timestamp.unwrap_or_else(now_ms);
        p.metrics.push(Metric::uint(ID_METRIC, id).to_proto(ts));
        if historical {
            for m in &mut p.metrics {
                m.is_historical = Some(true);
            }
        }
        p.seq = Some(u64::from(*self.seq));
        *self.seq = self.seq.wrapping_add(1);
        p.encode_to_vec()
    }

    fn unsent(&mut self) {
        *self.seq = self.seq.wrapping_sub(1);
    }
}

impl Session {
    async fn run(mut self) {
        let servers = connection::servers(&self.cfg);
        let mut backoff = connection::backoff();
        let mut at = 0;
        let mut flush_tick = tokio::time::interval(Duration::from_millis(50));
        flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let server = servers[at % servers.len()].clone();
            match self.connection(&server, &mut flush_tick).await {
                Ended::Stopped => return,
                Ended::Failed { was_connected } => {
                    if was_connected {
                        backoff.reset();
                    }
                    if self.stopping.is_some() {
                        self.finish().await;
                        return;
                    }
                    at += 1;
                    if self.wait_offline(backoff.delay(), &mut flush_tick).await {
                        return;
                    }
                }
            }
        }
    }

    /// Between connections: store what must not be lost. True when stopped meanwhile.
    async fn wait_offline(&mut self, wait: Duration, flush_tick: &mut tokio::time::Interval) -> bool {
        let until = Instant::now() + wait;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return false,
                _ = flush_tick.tick() => self.tick(),
                // Refused while no broker is connected: nowhere to send it; counted as dropped.
                ev = durable::next_event(self.durable.as_ref()) => self.queue_event(None, ev),
                msg = self.rx.recv() => match msg {
                    Some(Msg::Data(m)) => self.data(None, m, false),
                    Some(Msg::Stop(done)) => {
                        self.stopping = Some((done, Instant::now()));
                        self.finish().await;
                        return true;
                    }
                    None => return true,
                },
            }
        }
    }

    fn tick(&mut self) {
        // Acknowledgements to the ledger, figures to this queue's stats (with `dialect: both`,
        // the supervisor watches them; the stats message shows the JSON queue's).
        if let Some(d) = &mut self.durable {
            d.tick();
        }
    }

    /// An answer of the queue's writer: a message it refused goes out live when online
    /// (`client`), else is dropped (already counted).
    fn queue_event(&mut self, client: Option<&AsyncClient>, ev: QueueEvent) {
        if let Some(m) = self.durable.as_mut().and_then(|d| d.on_event(ev)) {
            self.live(client, m);
        }
    }

    /// NDATA the queue did not keep: live at QoS 0 with the session's next seq and no
    /// `Queue/Message Id` (so not de-duplicable, not replayed; see [`durable`]), or dropped.
    fn live(&mut self, client: Option<&AsyncClient>, m: QueueMessage) {
        let Some(client) = client else {
            tracing::debug!("Sparkplug data not queued and not online: dropped");
            return;
        };
        let Ok(mut p) = Payload::decode(m.payload.as_slice()) else { return };
        p.seq = Some(self.next_seq());
        if client.try_publish(m.topic, QoS::AtMostOnce, false, p.encode_to_vec()).is_err() {
            self.seq = self.seq.wrapping_sub(1);
            tracing::warn!("Sparkplug data the disk queue refused is dropped: MQTT request queue full");
            return;
        }
        if let Some(d) = &mut self.durable {
            d.sent_live();
        }
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(1);
        u64::from(s)
    }

    /// Publish a Sparkplug payload with the next seq. False (and the seq
    /// not used) when rumqttc's request queue is full.
    fn publish(&mut self, client: &AsyncClient, topic: String, metrics: &[Metric], qos: QoS) -> bool {
        let ts = now_ms();
        let payload = Payload {
            timestamp: Some(ts),
            metrics: metrics.iter().map(|m| m.to_proto(ts)).collect(),
            seq: Some(self.next_seq()),
            ..Default::default()
        };
        if client.try_publish(topic.clone(), qos, false, payload.encode_to_vec()).is_err() {
            self.seq = self.seq.wrapping_sub(1);
            tracing::warn!(%topic, "Sparkplug message dropped: MQTT request queue full");
            return false;
        }
        true
    }

    /// Results and alarms: remembered for births, then stored (or sent live without a queue).
    fn data(&mut self, client: Option<&AsyncClient>, metrics: Vec<Metric>, online: bool) {
        for m in &metrics {
            self.events.insert(m.name.clone(), m.clone());
        }
        let topic = self.topics.ndata();
        match (&mut self.durable, client) {
            (Some(d), _) => {
                let ts = now_ms();
                let payload = Payload {
                    timestamp: Some(ts),
                    metrics: metrics.iter().map(|m| m.to_proto(ts)).collect(),
                    ..Default::default()
                };
                if let Err(m) = d.push(&topic, payload.encode_to_vec(), false, online) {
                    self.live(client.filter(|_| online), m);
                }
            }
            (None, Some(client)) if online => {
                self.publish(client, topic, &metrics, QoS::AtMostOnce);
            }
            (None, _) => tracing::debug!("Sparkplug data dropped: not online and no mqtt.queue configured"),
        }
    }

    /// The devices now: (id, alive, metrics).
    fn devices(&mut self) -> Vec<(String, bool, Vec<Metric>)> {
        let now = Instant::now();
        let mut out = Vec::new();
        for (name, t) in &self.stats.tasks {
            let processed = t.stats.processed.load(Ordering::Relaxed);
            let rate = match self.rates.insert(name.clone(), (processed, now)) {
                Some((before, at)) if now > at => {
                    Some(processed.saturating_sub(before) as f64 / (now - at).as_secs_f64())
                }
                _ => None,
            };
            let alive = t.camera_stats.status() != CameraStatus::Offline;
            out.push((name.clone(), alive, metrics::task(t, rate)));
        }
        for (name, d) in &self.stats.devices {
            // The same criterion as the fault supervisor: a link seen down.
            out.push((name.clone(), !d.unreachable(), metrics::modbus(name, d, &self.points)));
        }
        out
    }

    /// NBIRTH (seq 0) with every node metric, then a DBIRTH per live device.
    fn births(&mut self, client: &AsyncClient, bd: u8) {
        self.seq = 0;
        let node = metrics::node(&self.stats, &self.counts);
        let mut all = vec![
            Metric::new("bdSeq", DataType::Int64, MValue::Int(i64::from(bd))),
            Metric::boolean("Node Control/Rebirth", false),
            Metric::boolean("Node Control/Reload", false),
        ];
        all.extend(metrics::rollout_commands(&self.stats.rollout_doc()));
        all.extend(node.iter().cloned());
        all.extend(self.events.values().cloned());
        self.publish(client, self.topics.nbirth(), &all, QoS::AtMostOnce);
        self.last_node = node.into_iter().map(|m| (m.name, m.value)).collect();
        self.born.clear();
        self.last_dev.clear();
        for (id, alive, metrics) in self.devices() {
            if alive {
                self.birth(client, &id, metrics);
            }
        }
        tracing::info!(bd_seq = bd, devices = self.born.len(), "Sparkplug births published");
    }

    fn birth(&mut self, client: &AsyncClient, id: &str, metrics: Vec<Metric>) {
        self.publish(client, self.topics.dbirth(id), &metrics, QoS::AtMostOnce);
        self.born.insert(id.to_string());
        self.last_dev.insert(id.to_string(), metrics.into_iter().map(|m| (m.name, m.value)).collect());
    }

    /// Report by exception: what changed since the host was last told.
    fn report(&mut self, client: &AsyncClient) {
        let node = metrics::node(&self.stats, &self.counts);
        let changed: Vec<Metric> = node.into_iter().filter(|m| self.last_node.get(&m.name) != Some(&m.value)).collect();
        if !changed.is_empty() && self.publish(client, self.topics.ndata(), &changed, QoS::AtMostOnce) {
            for m in changed {
                self.last_node.insert(m.name, m.value);
            }
        }
        for (id, alive, metrics) in self.devices() {
            match (self.born.contains(&id), alive) {
                (true, false) => {
                    if self.publish(client, self.topics.ddeath(&id), &[], QoS::AtMostOnce) {
                        tracing::warn!(device = %id, "Sparkplug DDEATH: device lost");
                        self.born.remove(&id);
                        self.last_dev.remove(&id);
                    }
                }
                (false, true) => {
                    tracing::info!(device = %id, "Sparkplug DBIRTH: device back");
                    self.birth(client, &id, metrics);
                }
                (true, true) => {
                    let last = self.last_dev.get(&id);
                    let changed: Vec<Metric> =
                        metrics.into_iter().filter(|m| last.and_then(|l| l.get(&m.name)) != Some(&m.value)).collect();
                    if !changed.is_empty() && self.publish(client, self.topics.ddata(&id), &changed, QoS::AtMostOnce) {
                        let last = self.last_dev.entry(id).or_default();
                        for m in changed {
                            last.insert(m.name, m.value);
                        }
                    }
                }
                (false, false) => {}
            }
        }
    }

    /// NCMD or DCMD: checked here, executed in its own task (a Modbus write must not hold the session).
    fn command(&self, p: &Publish) {
        let refuse = |why: String| {
            tracing::warn!(target: "linesight::audit", topic = %p.topic, error = %why, "Sparkplug command refused");
            self.counts.refuse(why);
        };
        let CommandPayload { commands, refused, origin } =
            match parse_command(&self.topics, self, &p.topic, &p.payload, p.retain) {
                Ok(parsed) => parsed,
                Err(why) => return refuse(why),
            };
        for why in refused {
            refuse(why);
        }
        if commands.is_empty() {
            return;
        }
        let commander = self.commander.clone();
        let counts = self.counts.clone();
        let source = p.topic.clone();
        // One task per command payload, so a slow write never holds the session's event loop;
        // but never more than a few at once, whatever the network sends.
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            counts.refuse(format!(
                "command refused: {COMMANDS_IN_FLIGHT} commands are still being executed; send it again later"
            ));
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = commander.admit(&origin, commands.len()).await {
                counts.refuse(e);
                return;
            }
            for c in commands {
                match commander.execute(&c, &source).await {
                    Ok(()) => {
                        counts.executed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => counts.refuse(e),
                }
            }
        });
    }

    /// One connection to `server`, from CONNECT until it fails or we stop.
    ///
    /// One piece on purpose, like the JSON session's: the select loop owns the client, its
    /// event loop, the seq counter and the births, and their order is the Sparkplug session
    /// rules (NBIRTH before any DBIRTH or DATA, rebirth on request, NDEATH at a clean stop).
    async fn connection(&mut self, server: &Server, flush_tick: &mut tokio::time::Interval) -> Ended {
        let bd = self.bdseq.take();
        let mut opts = connection::options(&self.cfg, server, &self.client_id, self.tls.as_ref());
        opts.set_last_will(LastWill::new(self.topics.ndeath(), death(bd), QoS::AtLeastOnce, false));
        let (client, mut eventloop) = AsyncClient::new(opts, 4096);
        let host = self.sp.primary_host.clone();
        let state_topic = host.as_deref().map(Topics::state);
        if let Err(e) = connection::connect(&mut eventloop).await {
            let why = connection::explain(&e, server);
            match self.connect_log.failed(std::time::Instant::now(), &format!("{server}: {why}")) {
                Some(Report::First) => {
                    tracing::warn!(%server, error = %why, "Sparkplug connection refused or failed; trying again (the next broker, if several are configured)")
                }
                Some(Report::Still { repeats, total, for_s }) => {
                    tracing::warn!(%server, error = %why, repeats, total, for_s, "Sparkplug connection still failing (logged once a minute)")
                }
                None => {}
            }
            return Ended::Failed { was_connected: false };
        }
        if let Some((down, attempts)) = self.connect_log.recovered(std::time::Instant::now()) {
            tracing::info!(%server, down_s = down.as_secs(), attempts, "connected after failed attempts");
        }
        tracing::info!(%server, bd_seq = bd, "Sparkplug session connected");
        if let Some(d) = &mut self.durable {
            d.on_connected();
        }
        // Subscriptions before the births (5.4, 5.6).
        let mut subs = vec![self.topics.ncmd(), self.topics.dcmd_all()];
        subs.extend(state_topic.clone());
        for t in subs {
            if let Err(e) = client.try_subscribe(t.clone(), QoS::AtLeastOnce) {
                tracing::error!(%server, topic = %t, error = %e, "cannot subscribe");
            }
        }
        let mut phase = if host.is_some() {
            tracing::info!(%server, host = ?host, "waiting for the primary host to be online before the births");
            Phase::WaitingForHost
        } else {
            self.births(&client, bd);
            Phase::Online
        };
        let mut alive = connection::Liveness::new(self.cfg.keep_alive.get());
        let mut report = tokio::time::interval(self.sp.report_every.get());
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let online = phase == Phase::Online;
            if let Some((_, deadline)) = &self.stopping {
                let drained = self.durable.as_ref().map_or(true, |d| d.waiting() == 0);
                if !online || drained || Instant::now() >= *deadline {
                    self.die(&client, &mut eventloop, bd).await;
                    self.finish().await;
                    return Ended::Stopped;
                }
            }
            if online {
                if let Some(d) = &mut self.durable {
                    d.pump(&client, &mut SeqStamp { seq: &mut self.seq });
                }
            }
            tokio::select! {
                _ = flush_tick.tick() => self.tick(),
                ev = durable::next_event(self.durable.as_ref()) => self.queue_event(Some(&client).filter(|_| online), ev),
                _ = report.tick(), if online => self.report(&client),
                _ = self.rebirth.notified(), if online => {
                    tracing::info!("Sparkplug rebirth requested");
                    self.births(&client, bd);
                }
                msg = self.rx.recv(), if self.stopping.is_none() => match msg {
                    Some(Msg::Data(m)) => self.data(Some(&client), m, online),
                    Some(Msg::Stop(done)) => {
                        self.stopping = Some((done, Instant::now() + Duration::from_secs(3)));
                    }
                    None => return Ended::Stopped,
                },
                _ = tokio::time::sleep_until(alive.deadline()) => {
                    if let Some(d) = &mut self.durable {
                        d.on_disconnected();
                    }
                    tracing::warn!(%server, silent_ms = alive.silent_for().as_millis() as u64, "Sparkplug connection lost: nothing from the broker for 1.5 x keep-alive (a dead link); the broker publishes our NDEATH");
                    return Ended::Failed { was_connected: true };
                }
                ev = eventloop.poll() => match ev.inspect(|e| if matches!(e, Event::Incoming(_)) { alive.heard() }) {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Some(why) = connection::bad_topic(&p.topic) {
                            if let Some(d) = &mut self.durable {
                                d.on_disconnected();
                            }
                            tracing::warn!(%server, topic = ?p.topic, "Sparkplug connection dropped: broker {server} sent a PUBLISH {why} (an MQTT protocol violation); the broker publishes our NDEATH");
                            return Ended::Failed { was_connected: true };
                        }
                        if Some(&p.topic) == state_topic.as_ref() {
                            match self.host_state(&p) {
                                Some(true) if phase == Phase::WaitingForHost => {
                                    tracing::info!(%server, host = ?host, "primary host online");
                                    self.births(&client, bd);
                                    phase = Phase::Online;
                                }
                                Some(false) => {
                                    tracing::warn!(%server, host = ?host, "primary host offline: death, and on to the next broker");
                                    if let Some(d) = &mut self.durable {
                                        d.on_disconnected();
                                    }
                                    self.die(&client, &mut eventloop, bd).await;
                                    return Ended::Failed { was_connected: false };
                                }
                                _ => {}
                            }
                        } else if !online {
                            self.counts.refuse(format!("command on {} before the births: ignored", p.topic));
                        } else {
                            self.command(&p);
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        if connection::refused(&ack) {
                            tracing::error!(%server, "the broker refused a Sparkplug subscription (its ACL does not allow NCMD/DCMD/STATE for this client); commands or the primary host will not be seen");
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Unsubscribe(pkid))) => {
                        if let Some(d) = &mut self.durable {
                            d.outgoing_barrier(pkid);
                        }
                    }
                    Ok(Event::Incoming(Packet::UnsubAck(ack))) => {
                        if let Some(d) = &mut self.durable {
                            d.barrier_ack(ack.pkid);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if let Some(d) = &mut self.durable {
                            d.on_disconnected();
                        }
                        let why = connection::explain(&e, server);
                        tracing::warn!(%server, error = %why, "Sparkplug connection lost; the broker publishes our NDEATH");
                        return Ended::Failed { was_connected: true };
                    }
                },
            }
        }
    }

    /// Parse a primary host STATE: Some(online) when it is current, None
    /// when stale (older timestamp) or unreadable.
    fn host_state(&mut self, p: &Publish) -> Option<bool> {
        let (online, ts) = match parse_host_state(&p.payload) {
            Ok(state) => state?,
            Err(e) => {
                tracing::warn!(topic = %p.topic, error = %e, "primary host STATE is not JSON; ignored");
                return None;
            }
        };
        let now = u64::try_from(crate::util::time::now_ms()).unwrap_or(0);
        if !current(ts, self.host_ts, now) {
            tracing::info!(topic = %p.topic, ts, newest = self.host_ts, "stale primary host STATE ignored");
            return None;
        }
        if ts < self.host_ts {
            tracing::warn!(topic = %p.topic, ts, newest = self.host_ts, "primary host STATE older than the last one taken, but on this node's clock while the last one was ahead of it: the host's clock was stepped back; taken");
        }
        self.host_ts = ts;
        Some(online)
    }

    /// A deliberate death: NDEATH (acknowledged, bounded), then DISCONNECT (14).
    async fn die(&mut self, client: &AsyncClient, eventloop: &mut EventLoop, bd: u8) {
        if client.try_publish(self.topics.ndeath(), QoS::AtLeastOnce, false, death(bd)).is_err() {
            tracing::warn!("NDEATH could not be queued; the broker publishes the Will instead");
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) | Err(_) => break,
                    _ => {}
                }
            }
        })
        .await;
        connection::disconnect(client, eventloop).await;
        tracing::info!(bd_seq = bd, "Sparkplug NDEATH published; disconnected");
    }

    async fn finish(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            if let Msg::Data(m) = msg {
                self.data(None, m, false);
            }
        }
        if let Some(d) = &mut self.durable {
            d.flush().await;
        }
        if let Some((done, _)) = self.stopping.take() {
            let _ = done.send(());
        }
    }
}

/// How far the primary host's clock and ours may differ and still count as agreeing.
const CLOCK_AGREEMENT_MS: u64 = 60_000;

/// Whether a primary host STATE stamped `ts` is current, given the newest one taken (`newest`)
/// and this node's clock (`now`), all in ms since the epoch. The Sparkplug rule: an older
/// timestamp is stale (a Will of an old session that arrives after the new session's `online`).
/// One exception, so that a host whose clock was ahead and is stepped back is not ignored until
/// its clock passes the old time again: a STATE on this node's clock beats a newest one that is
/// ahead of it.
fn current(ts: u64, newest: u64, now: u64) -> bool {
    let newest_from_the_future = newest > now.saturating_add(CLOCK_AGREEMENT_MS);
    ts >= newest || (newest_from_the_future && ts.abs_diff(now) <= CLOCK_AGREEMENT_MS)
}

#[cfg(test)]
mod clock_tests {
    use super::current;

    const NOW: u64 = 1_800_000_000_000;
    const HOUR: u64 = 3_600_000;

    #[test]
    fn an_older_state_is_stale() {
        assert!(current(NOW, NOW - 5, NOW));
        assert!(current(NOW, NOW, NOW), "the same timestamp again (a rebirth of the same session)");
        assert!(!current(NOW - 5, NOW, NOW), "the old session's Will after the new online");
    }

    #[test]
    fn a_host_clock_stepped_back_is_not_ignored_for_an_hour() {
        // The host's clock ran an hour ahead; it is corrected, and its new online is stamped now.
        assert!(current(NOW + 1_000, NOW + HOUR, NOW));
        // A STATE that is neither on our clock nor newer stays stale.
        assert!(!current(NOW - 2 * HOUR, NOW + HOUR, NOW));
        // When this node's own clock is the odd one (the host's agrees with itself), the rule holds.
        assert!(!current(NOW + HOUR - 5, NOW + HOUR, NOW - 3 * HOUR));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::Value as V;

    /// A task `inspect`, a Modbus device `plc` with the point `speed`.
    struct Node;

    impl Addressable for Node {
        fn is_task(&self, device: &str) -> bool {
            device == "inspect"
        }
        fn is_modbus(&self, device: &str) -> bool {
            device == "plc"
        }
        fn has_point(&self, device: &str, point: &str) -> bool {
            device == "plc" && point == "speed"
        }
    }

    fn payload(metrics: &[(&str, DataType, V)]) -> Vec<u8> {
        let metrics = metrics
            .iter()
            .map(|(name, ty, v)| proto::Metric {
                name: Some(name.to_string()),
                datatype: Some(*ty as u32),
                value: Some(v.clone()),
                ..Default::default()
            })
            .collect();
        Payload { timestamp: Some(1_795_840_496_789), metrics, ..Default::default() }.encode_to_vec()
    }

    #[test]
    fn command_payloads_become_commands_and_refusals() {
        let topics = Topics { group: "line".into(), node: "cell".into() };
        let parse = |topic: &str, p: &[u8]| parse_command(&topics, &Node, topic, p, false);
        let ncmd = topics.ncmd();
        let rebirth = payload(&[("Node Control/Rebirth", DataType::Boolean, V::BooleanValue(true))]);
        let c = parse(&ncmd, &rebirth).unwrap();
        assert_eq!((c.commands, c.refused), (vec![Command::Rebirth], vec![]));
        assert_eq!(c.origin.sent_ms, Some(1_795_840_496_789));
        assert_eq!(c.origin.id, CommandId::sparkplug(&ncmd, &rebirth));
        let no = payload(&[("Node Control/Rebirth", DataType::Boolean, V::BooleanValue(false))]);
        assert!(parse(&ncmd, &no).unwrap().commands.is_empty(), "Rebirth = false does nothing");

        let task = payload(&[
            ("Inspection/NG Threshold", DataType::Double, V::DoubleValue(0.7)),
            ("Inspection/Enabled", DataType::Boolean, V::BooleanValue(false)),
            ("Inspection/Colour", DataType::String, V::StringValue("red".into())),
        ]);
        let c = parse("spBv1.0/line/DCMD/cell/inspect", &task).unwrap();
        assert_eq!(
            c.commands,
            [
                Command::SetThreshold { task: "inspect".into(), threshold: 0.7 },
                Command::DisableTask { task: "inspect".into() }
            ]
        );
        assert_eq!(c.refused.len(), 1);
        assert!(c.refused[0].contains("no writable metric `Inspection/Colour`"), "{:?}", c.refused);

        let point = payload(&[
            ("Points/speed", DataType::Int32, V::IntValue(u32::MAX)),
            ("Points/oven", DataType::Int32, V::IntValue(1)),
        ]);
        let c = parse("spBv1.0/line/DCMD/cell/plc", &point).unwrap();
        assert_eq!(c.commands, [Command::SetPoint { point: "speed".into(), value: serde_json::json!(-1) }]);
        assert!(c.refused[0].contains("no point metric `Points/oven`"), "{:?}", c.refused);
        let c = parse("spBv1.0/line/DCMD/cell/nobody", &point).unwrap();
        assert!(c.commands.is_empty() && c.refused.iter().all(|r| r.contains("no device `nobody`")));

        assert!(parse_command(&topics, &Node, &ncmd, &rebirth, true).unwrap_err().contains("retained"));
        assert!(parse(&ncmd, &[0xFF; 3]).unwrap_err().starts_with("not a Sparkplug B payload"));
        assert!(parse(&ncmd, &vec![0; MAX_COMMAND_BYTES + 1]).unwrap_err().contains("the limit is 4096"));
    }

    #[test]
    fn model_rollout_metrics_become_rollout_commands() {
        let topics = Topics { group: "line".into(), node: "cell".into() };
        let ncmd = topics.ncmd();
        let p = payload(&[
            ("Models/surface/Install", DataType::String, V::StringValue("surface-3.lsmodel".into())),
            ("Models/surface/Shadow", DataType::UInt64, V::LongValue(3)),
            ("Models/surface/Promote", DataType::UInt64, V::LongValue(0)),
            ("Models/surface/Promote", DataType::UInt64, V::LongValue(2)),
            ("Models/surface/Rollback", DataType::Boolean, V::BooleanValue(true)),
            ("Models/surface/Stop Shadow", DataType::Boolean, V::BooleanValue(false)),
            ("Models/surface/Install", DataType::Boolean, V::BooleanValue(true)),
            ("Models/surface/Format", DataType::Boolean, V::BooleanValue(true)),
        ]);
        let c = parse_command(&topics, &Node, &ncmd, &p, false).unwrap();
        let model = || "surface".to_string();
        assert_eq!(
            c.commands,
            [
                Command::InstallModel { model: model(), package: "surface-3.lsmodel".into() },
                Command::ShadowModel { model: model(), version: 3 },
                Command::PromoteModel { model: model(), version: None },
                Command::PromoteModel { model: model(), version: Some(2) },
                Command::RollbackModel { model: model() },
            ]
        );
        assert_eq!(c.refused.len(), 2, "{:?}", c.refused);
        assert!(c.refused[0].contains("takes a String"), "{:?}", c.refused);
        assert!(c.refused[1].contains("no model action `Format`"), "{:?}", c.refused);
    }

    #[test]
    fn host_state_needs_online_and_a_timestamp() {
        assert_eq!(parse_host_state(br#"{"online": true, "timestamp": 5}"#).unwrap(), Some((true, 5)));
        assert_eq!(parse_host_state(br#"{"online": false, "timestamp": 7, "x": 1}"#).unwrap(), Some((false, 7)));
        assert_eq!(parse_host_state(br#"{"online": "yes", "timestamp": 5}"#).unwrap(), None);
        assert_eq!(parse_host_state(br#"{"online": true, "timestamp": -5}"#).unwrap(), None);
        assert_eq!(parse_host_state(b"[1]").unwrap(), None);
        assert!(parse_host_state(b"ONLINE").is_err());
    }
}
