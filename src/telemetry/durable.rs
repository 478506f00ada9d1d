//! Store-and-forward for the messages that must not be lost (results,
//! alarms): written to the disk queue ([`crate::store`]) before anything
//! else, sent from there in order, and removed only when the broker has
//! acknowledged them (PUBACK, QoS 1).
//!
//! Delivery is at-least-once: after a reconnect everything not yet
//! acknowledged is sent again, so every message carries `msg_id` (the queue's
//! sequence number) for de-duplication. A message that could not go out live
//! (stored while the broker was unreachable, or recovered from disk after a
//! restart) is sent with `"historical": true`.
//!
//! The MQTT task owns this state; rumqttc reports each outgoing PUBLISH with
//! its packet id in the order the publishes were requested, which is how a
//! PUBACK is tied back to a queue sequence number.
//!
//! Sparkplug requires NDATA at QoS 0, which has no acknowledgement. There
//! the queue sends a batch, then an UNSUBSCRIBE of a topic nobody uses: the
//! broker answers it (UNSUBACK) only after it has read everything sent
//! before it on the same connection, so the UNSUBACK acknowledges the batch.
//!
//! # No file I/O here
//!
//! The queue's files belong to its writer thread ([`crate::store::writer`]): this side hands it
//! pushes, reads and acknowledgements without ever waiting ([`Durable::push`], [`Durable::pump`],
//! [`Durable::tick`]) and takes its answers in [`Durable::on_event`], which the session's select
//! loop feeds from [`next_event`]. A slow fsync delays the queue, never the runtime's other tasks.
//!
//! # When the queue cannot take a message
//!
//! A message the queue did not keep (the full-queue policy with `drop-newest`, a full or failed
//! disk, a queue directory that cannot be opened, a writer too far behind to take it) is counted
//! as dropped, and given back to the session, which sends it **live** when a broker is connected
//! (counted as `live`), and otherwise drops it. Inspection never waits for any of it. What is
//! lost for such a message, while the queue cannot take messages:
//! - it does not survive a broker outage, a restart or a crash: it goes out once, at once, or
//!   not at all;
//! - it carries no `msg_id` (JSON) / `Queue/Message Id` (Sparkplug), so it cannot be
//!   de-duplicated against the queue, and delivery is at-most-once for JSON's QoS 1 resends aside;
//! - its order against queued messages: it may overtake older messages still waiting in the queue.
//!
//! Messages the queue did store keep every guarantee; the writer retries the disk with backoff
//! and the queue is used again as soon as it works.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, QoS};

use crate::config::{QueueConfig, QueueFull};
use crate::stats::QueueStats;
use crate::store::writer::{Event, Message, Request, Writer, WriterConfig};
use crate::store::{Record, StoreConfig, WhenFull};
use crate::util::throttle::{Report, Throttle};

/// Unacknowledged durable messages in flight at once, unless the config says otherwise
/// (`mqtt.queue.inflight`).
const DEFAULT_WINDOW: usize = 1024;

/// How long a stop waits for the writer's last fsync.
const FLUSH_WAIT: Duration = Duration::from_secs(3);

/// How the broker's receipt of a queued message is known.
#[derive(Debug, Clone)]
pub enum AckBy {
    /// QoS 1: each message's PUBACK.
    PubAck,
    /// QoS 0: the UNSUBACK of an UNSUBSCRIBE (of this topic) sent after the batch.
    Barrier(String),
}

pub struct Durable {
    writer: Writer,
    stats: Arc<QueueStats>,
    ack_by: AckBy,
    /// Unacknowledged messages in flight at most; records are read ahead up to twice this.
    window: usize,
    /// Barriers requested and not yet sent: the last sequence number before each.
    barriers: VecDeque<u64>,
    /// Barriers sent, by packet id.
    barrier_pkid: HashMap<u16, u64>,
    /// One entry per publish requested from rumqttc, in order: the queue
    /// sequence number of a durable one, None for the others.
    requested: VecDeque<Option<u64>>,
    pkid_seq: HashMap<u16, u64>,
    /// Sent on this connection and not yet acknowledged in order.
    sent_order: VecDeque<u64>,
    /// Acknowledged by the broker out of order, waiting for the ones before.
    acked: BTreeSet<u64>,
    /// Everything up to here is acknowledged by the broker...
    ack_upto: u64,
    /// ... of which this many are not yet recorded in the queue's ledger
    /// (that costs two fsyncs, so it is done on the tick, not per PUBACK;
    /// a crash in between only means those are sent again).
    uncommitted: usize,
    /// An acknowledgement handed to the writer and not answered: (up to, how many).
    committing: Option<(u64, usize)>,
    /// Next sequence number to send on this connection.
    next_to_send: u64,
    in_flight: usize,
    /// Sequence numbers up to here were recovered from disk at start, or
    /// sent on a connection that dropped before they were acknowledged.
    historical_upto: u64,
    /// Runs of sequence numbers stored while the broker was unreachable
    /// (runs, not a set: an hour's outage is one entry).
    offline: Vec<(u64, u64)>,
    /// Pushes handed to the writer and not answered yet: whether a broker was connected then.
    pending: VecDeque<bool>,
    /// The highest sequence number the writer reported stored.
    stored_upto: u64,
    /// Records in the store, as of the writer's last answer.
    store_len: usize,
    /// Records read back and not sent yet, in order.
    ready: VecDeque<Record>,
    /// Everything up to here has been read back (or is known gone) on this connection.
    cursor: u64,
    /// The read handed to the writer and not answered: its tag.
    reading: Option<u64>,
    /// Tags reads; a new connection makes older answers stale.
    epoch: u64,
    /// The last read failed: no new one before the next tick.
    read_failed: bool,
    /// Pushes the writer could not even take (its channel full).
    busy: u64,
    /// Messages the queue did not keep that were sent live.
    live: u64,
    busy_log: Throttle,
}

/// The session's next answer from its queue's writer; pending forever without a queue.
pub async fn next_event(durable: Option<&Durable>) -> Event {
    match durable {
        Some(d) => d.writer.recv().await,
        None => std::future::pending().await,
    }
}

impl Durable {
    /// Starts the queue's writer thread, which opens the store (and keeps trying when it cannot:
    /// a queue that cannot be opened does not stop the node). `name` is for the log ("MQTT
    /// queue"); `stats` receives the figures on every [`Durable::tick`]. Fails only when the
    /// thread cannot be started.
    pub fn open(cfg: &QueueConfig, ack_by: AckBy, name: &str, stats: Arc<QueueStats>) -> Result<Durable, String> {
        let store_cfg = StoreConfig {
            dir: cfg.dir.clone(),
            max_bytes: cfg.max_mb.saturating_mul(1 << 20),
            segment_bytes: (cfg.max_mb.saturating_mul(1 << 20) / 16).clamp(64 << 10, 64 << 20),
            fsync_every: cfg.fsync_every.get(),
            when_full: match cfg.when_full {
                QueueFull::DropOldest => WhenFull::DropOldest,
                QueueFull::DropNewest => WhenFull::DropNewest,
            },
        };
        let writer = Writer::open(WriterConfig::new(name, &cfg.dir), store_cfg)
            .map_err(|e| format!("{name} in {}: cannot start its writer thread: {e}", cfg.dir.display()))?;
        let mut d = Durable::with_writer(writer, ack_by, stats);
        d.window = usize::from(cfg.inflight.max(1));
        Ok(d)
    }

    /// Over a writer already started (tests: a writer over a simulated file layer).
    pub fn with_writer(writer: Writer, ack_by: AckBy, stats: Arc<QueueStats>) -> Durable {
        stats.configured.store(true, Ordering::Relaxed);
        Durable {
            writer,
            stats,
            ack_by,
            window: DEFAULT_WINDOW,
            barriers: VecDeque::new(),
            barrier_pkid: HashMap::new(),
            requested: VecDeque::new(),
            pkid_seq: HashMap::new(),
            sent_order: VecDeque::new(),
            acked: BTreeSet::new(),
            ack_upto: 0,
            uncommitted: 0,
            committing: None,
            next_to_send: 1,
            in_flight: 0,
            historical_upto: 0,
            offline: Vec::new(),
            pending: VecDeque::new(),
            stored_upto: 0,
            store_len: 0,
            ready: VecDeque::new(),
            cursor: 0,
            reading: None,
            epoch: 0,
            read_failed: false,
            busy: 0,
            live: 0,
            busy_log: Throttle::default(),
        }
    }

    /// The figures this queue reports into.
    pub fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }

    /// Hand a message to the queue without waiting. Its fate comes back through
    /// [`Durable::on_event`]; `Err` gives it back at once when the writer cannot take it (far
    /// behind): counted as dropped, the caller may send it live (then [`Durable::sent_live`]).
    pub fn push(&mut self, topic: &str, payload: Vec<u8>, retain: bool, connected: bool) -> Result<(), Message> {
        let m = Message { topic: topic.to_string(), payload, qos: 1, retain };
        match self.writer.try_send(Request::Push(m)) {
            Ok(()) => {
                self.pending.push_back(connected);
                if let Some((for_s, refused)) = self.busy_log.recovered(std::time::Instant::now()) {
                    tracing::info!(for_s = for_s.as_secs(), refused, "the queue's writer takes messages again");
                }
                Ok(())
            }
            Err(Request::Push(m)) => {
                self.busy += 1;
                // Throttled: a writer stuck in a hung fsync would otherwise log every message.
                let why = "its writer is far behind (a slow or hung disk): messages not queued";
                match self.busy_log.failed(std::time::Instant::now(), why) {
                    Some(Report::First) => tracing::warn!(topic = %m.topic, "{why}"),
                    Some(Report::Still { repeats, total, for_s }) => {
                        tracing::warn!(repeats, total, for_s, "{why} (still; logged once a minute)")
                    }
                    None => {}
                }
                Err(m)
            }
            Err(_) => unreachable!("try_send gives back the request it was given"),
        }
    }

    /// A message the queue did not keep went out live.
    pub fn sent_live(&mut self) {
        self.live += 1;
    }

    /// An answer of the writer. Returns a message the queue refused (counted as dropped), for
    /// the caller to send live if it can.
    pub fn on_event(&mut self, ev: Event) -> Option<Message> {
        match ev {
            Event::Opened { last_seq, len, first } => {
                if first {
                    // Everything already there was stored before this run.
                    self.historical_upto = self.historical_upto.max(last_seq);
                }
                // A reopened store holds what its rescan found: read again from what is in
                // flight, and an answer to a read asked of the store before is stale.
                self.ready.clear();
                self.cursor = self.next_to_send.saturating_sub(1);
                self.epoch += 1;
                self.stored_upto = self.stored_upto.max(last_seq);
                self.store_len = len;
            }
            Event::Stored { first, last, len } => {
                for seq in first..=last {
                    if !self.pending.pop_front().unwrap_or(true) {
                        match self.offline.last_mut() {
                            Some(run) if run.1 + 1 == seq => run.1 = seq,
                            _ => self.offline.push((seq, seq)),
                        }
                    }
                }
                self.stored_upto = self.stored_upto.max(last);
                self.store_len = len;
            }
            Event::Refused(m) => {
                self.pending.pop_front();
                return Some(m);
            }
            Event::Records { tag, records, upto, failed } => {
                if self.reading == Some(tag) {
                    self.reading = None;
                }
                if tag == self.epoch {
                    if failed {
                        self.read_failed = true;
                    } else {
                        self.cursor = self.cursor.max(upto);
                        self.ready.extend(records);
                    }
                }
            }
            Event::Acked { upto, ok, len } => {
                if let Some((_, count)) = self.committing.take() {
                    if ok {
                        self.uncommitted = self.uncommitted.saturating_sub(count);
                        self.offline.retain(|run| run.1 > upto);
                    }
                }
                self.store_len = len;
            }
            Event::Flushed { .. } => {}
        }
        None
    }

    /// A new connection: the broker forgot what was in flight (clean
    /// session), so everything unacknowledged goes again.
    pub fn on_connected(&mut self) {
        self.requested.clear();
        self.pkid_seq.clear();
        self.barriers.clear();
        self.barrier_pkid.clear();
        self.sent_order.clear();
        self.acked.clear();
        self.next_to_send = self.ack_upto + 1;
        self.in_flight = 0;
        self.ready.clear();
        self.cursor = self.ack_upto;
        self.epoch += 1;
        self.read_failed = false;
    }

    /// The connection dropped: what was sent but not acknowledged is
    /// historical when it goes again.
    pub fn on_disconnected(&mut self) {
        self.historical_upto = self.historical_upto.max(self.next_to_send.saturating_sub(1));
    }

    fn historical(&self, seq: u64) -> bool {
        seq <= self.historical_upto || self.offline.iter().any(|&(a, b)| (a..=b).contains(&seq))
    }

    /// A publish that does not come from the queue was requested.
    pub fn note_plain(&mut self) {
        self.requested.push_back(None);
    }

    /// Send from the queue, up to the window, with `stamp` making the
    /// payload that goes out (queue id, historical flag, a session's sequence
    /// number), and ask the writer for more. Returns how many were requested.
    pub fn pump(&mut self, client: &AsyncClient, stamp: &mut dyn Stamp) -> u64 {
        let qos = match self.ack_by {
            AckBy::PubAck => QoS::AtLeastOnce,
            AckBy::Barrier(_) => QoS::AtMostOnce,
        };
        let mut n = 0;
        while self.in_flight < self.window {
            let Some(r) = self.ready.pop_front() else { break };
            if r.seq < self.next_to_send {
                continue;
            }
            let historical = self.historical(r.seq);
            let payload = stamp.stamp(&r.payload, r.seq, historical);
            if client.try_publish(r.topic.clone(), qos, r.retain, payload).is_err() {
                stamp.unsent();
                self.ready.push_front(r);
                break; // rumqttc's request queue is full: try again on the next turn
            }
            if matches!(self.ack_by, AckBy::PubAck) {
                self.requested.push_back(Some(r.seq));
            }
            self.sent_order.push_back(r.seq);
            self.next_to_send = r.seq + 1;
            self.in_flight += 1;
            n += 1;
        }
        if let (AckBy::Barrier(topic), true) = (&self.ack_by, n > 0) {
            if client.try_unsubscribe(topic.clone()).is_ok() {
                self.barriers.push_back(self.next_to_send - 1);
            }
            // Else the next batch's barrier covers this one too.
        }
        self.read_more();
        n
    }

    /// Ask the writer for the next records (a window at a time, one read at a time), so that a
    /// window's worth is ready in memory when the broker's acknowledgements make room: the
    /// sending side never waits for a read of the disk.
    fn read_more(&mut self) {
        if self.reading.is_some() || self.read_failed || self.ready.len() >= self.window {
            return;
        }
        let after = self.cursor.max(self.next_to_send.saturating_sub(1));
        if after >= self.stored_upto {
            return;
        }
        let tag = self.epoch;
        if self.writer.try_send(Request::Read { after, max: self.window, tag }).is_ok() {
            self.reading = Some(tag);
        }
    }

    /// rumqttc sent an UNSUBSCRIBE (a barrier) with this packet id.
    pub fn outgoing_barrier(&mut self, pkid: u16) {
        if let Some(seq) = self.barriers.pop_front() {
            self.barrier_pkid.insert(pkid, seq);
        }
    }

    /// The broker answered a barrier: it has everything sent before it.
    pub fn barrier_ack(&mut self, pkid: u16) {
        let Some(upto) = self.barrier_pkid.remove(&pkid) else { return };
        while self.sent_order.front().is_some_and(|&s| s <= upto) {
            if let Some(s) = self.sent_order.pop_front() {
                self.ack_upto = s;
                self.uncommitted += 1;
                self.in_flight = self.in_flight.saturating_sub(1);
            }
        }
    }

    /// rumqttc sent a PUBLISH with this packet id (in request order).
    pub fn outgoing(&mut self, pkid: u16) {
        if let Some(Some(seq)) = self.requested.pop_front() {
            self.pkid_seq.insert(pkid, seq);
        }
    }

    /// The broker acknowledged a packet id.
    pub fn puback(&mut self, pkid: u16) {
        let Some(seq) = self.pkid_seq.remove(&pkid) else { return };
        self.in_flight = self.in_flight.saturating_sub(1);
        self.acked.insert(seq);
        // Acknowledged up to the first gap (PUBACKs may come out of order).
        while let Some(&front) = self.sent_order.front() {
            if !self.acked.remove(&front) {
                break;
            }
            self.sent_order.pop_front();
            self.ack_upto = front;
            self.uncommitted += 1;
        }
    }

    /// Hand the broker's acknowledgements to the writer for the queue's ledger (one at a time).
    fn commit(&mut self) {
        if self.uncommitted == 0 || self.committing.is_some() {
            return;
        }
        if self.writer.try_send(Request::Ack(self.ack_upto)).is_ok() {
            self.committing = Some((self.ack_upto, self.uncommitted));
        }
    }

    /// Every few tens of milliseconds: acknowledgements to the ledger, the figures to `stats`.
    /// (The fsync policy, the loss window, is the writer's.)
    pub fn tick(&mut self) {
        self.commit();
        self.read_failed = false;
        let f = self.writer.figures();
        let s = &self.stats;
        s.waiting.store(self.waiting() as u64, Ordering::Relaxed);
        let dropped = f.dropped.load(Ordering::Relaxed) + f.refused.load(Ordering::Relaxed) + self.busy;
        s.dropped.store(dropped, Ordering::Relaxed);
        s.live.store(self.live, Ordering::Relaxed);
        s.lost.store(f.lost.load(Ordering::Relaxed), Ordering::Relaxed);
        let problem = f.problem();
        let mut shown = s.problem.lock().unwrap_or_else(|e| e.into_inner());
        if *shown != problem {
            *shown = problem;
        }
    }

    /// A stop: acknowledgements to the ledger and everything to disk, waiting (bounded) for the
    /// writer. Messages it refuses meanwhile are counted, not sent (the link is down by now).
    pub async fn flush(&mut self) {
        self.commit();
        let deadline = tokio::time::Instant::now() + FLUSH_WAIT;
        let mut req = Request::Flush;
        loop {
            match self.writer.try_send(req) {
                Ok(()) => break,
                Err(back) => req = back,
            }
            // The channel is full: room comes as the writer answers, and its answers must be
            // read meanwhile (it may be waiting for room to send them).
            match tokio::time::timeout_at(deadline, self.writer.recv()).await {
                Ok(ev) => {
                    self.on_event(ev);
                }
                Err(_) => return self.flush_late(),
            }
        }
        loop {
            match tokio::time::timeout_at(deadline, self.writer.recv()).await {
                Ok(Event::Flushed { ok }) => {
                    if !ok {
                        tracing::error!("MQTT queue could not be flushed to disk at the stop");
                    }
                    break;
                }
                Ok(ev) => {
                    self.on_event(ev);
                }
                Err(_) => return self.flush_late(),
            }
        }
        self.tick();
    }

    fn flush_late(&mut self) {
        tracing::warn!(
            wait_s = FLUSH_WAIT.as_secs(),
            "MQTT queue: the writer did not finish its last flush in time; it goes on in the background until the process ends"
        );
        self.tick();
    }

    /// Messages waiting (handed to the queue or stored, not yet acknowledged).
    pub fn waiting(&self) -> usize {
        (self.store_len + self.pending.len()).saturating_sub(self.uncommitted)
    }
}

/// Makes the payload that goes out from the one stored.
pub trait Stamp {
    /// `id` is the queue's sequence number, unique across restarts.
    fn stamp(&mut self, payload: &[u8], id: u64, historical: bool) -> Vec<u8>;
    /// The last stamped payload could not be handed to rumqttc after all.
    fn unsent(&mut self) {}
}

/// The JSON dialect's stamp: `msg_id` and `historical` added to the object.
pub struct JsonStamp;

impl Stamp for JsonStamp {
    fn stamp(&mut self, payload: &[u8], id: u64, historical: bool) -> Vec<u8> {
        stamp(payload, id, historical)
    }
}

/// The payload with its queue id and the historical flag (JSON objects only).
///
/// Every queued message passes here on its way out, so the usual case is spliced, not
/// rebuilt: a JSON object without either key gets them written in after its `{`, its own bytes
/// untouched. Parsing it into a `serde_json::Value` and writing it out again (maps, strings,
/// floats formatted anew) was about a fifth of the async runtime's CPU in `bench --queue`
/// (docs/benchmarks.md, "The MQTT disk queue"). An object that already has a key of the stamp's
/// takes the slow path, which replaces it.
fn stamp(payload: &[u8], seq: u64, historical: bool) -> Vec<u8> {
    match serde_json::from_slice::<TopLevel>(payload) {
        Ok(TopLevel { stamped: false }) => splice(payload, seq, historical),
        Ok(TopLevel { stamped: true }) => restamp(payload, seq, historical),
        Err(_) => payload.to_vec(),
    }
}

/// `payload`, a valid JSON object without the stamp's keys, with them first in it.
fn splice(payload: &[u8], seq: u64, historical: bool) -> Vec<u8> {
    // Valid JSON (checked by the caller) that is an object: after whitespace, a `{`.
    let open = payload.iter().position(|&b| b == b'{').expect("a JSON object starts with {");
    let rest = &payload[open + 1..];
    let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
    let mut out = Vec::with_capacity(payload.len() + 48);
    out.extend_from_slice(b"{\"msg_id\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    if historical {
        out.extend_from_slice(b",\"historical\":true");
    }
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    out
}

/// The slow path: parsed, the keys set (replacing what was there), written out again.
fn restamp(payload: &[u8], seq: u64, historical: bool) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(serde_json::Value::Object(mut m)) => {
            m.insert("msg_id".into(), seq.into());
            if historical {
                m.insert("historical".into(), true.into());
            }
            serde_json::to_vec(&m).unwrap_or_else(|_| payload.to_vec())
        }
        _ => payload.to_vec(),
    }
}

/// What [`stamp`] needs to know of a payload, read without building it: that it is one valid
/// JSON object (deserializing fails otherwise), and whether it has a top-level key the stamp sets.
struct TopLevel {
    stamped: bool,
}

impl<'de> serde::Deserialize<'de> for TopLevel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TopLevel, D::Error> {
        struct Object;
        impl<'de> serde::de::Visitor<'de> for Object {
            type Value = TopLevel;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
                let mut stamped = false;
                while let Some(StampKey(is)) = map.next_key()? {
                    stamped |= is;
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
                Ok(TopLevel { stamped })
            }
        }
        d.deserialize_map(Object)
    }
}

/// A key of an object: whether it is one the stamp sets.
struct StampKey(bool);

impl<'de> serde::Deserialize<'de> for StampKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StampKey, D::Error> {
        struct Key;
        impl serde::de::Visitor<'_> for Key {
            type Value = StampKey;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: serde::de::Error>(self, k: &str) -> Result<StampKey, E> {
                Ok(StampKey(k == "msg_id" || k == "historical"))
            }
        }
        d.deserialize_str(Key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;

    fn queue(dir: &std::path::Path) -> QueueConfig {
        QueueConfig { max_mb: 1, fsync_every: Dur::from_millis(0), ..QueueConfig::new(dir) }
    }

    /// Feeds the writer's answers to `d` until `done` holds (a few seconds at most).
    async fn settle(d: &mut Durable, done: impl Fn(&Durable) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done(d) {
            let ev = tokio::time::timeout_at(deadline, next_event(Some(d))).await.expect("the writer answers");
            d.on_event(ev);
        }
    }

    /// Pumps until everything stored has been read back and handed to `client`.
    async fn pump_all(d: &mut Durable, client: &AsyncClient) -> u64 {
        let mut n = 0;
        loop {
            n += d.pump(client, &mut JsonStamp);
            if d.reading.is_none() && d.ready.is_empty() && d.cursor.max(d.next_to_send - 1) >= d.stored_upto {
                return n;
            }
            let ev = tokio::time::timeout(Duration::from_secs(10), next_event(Some(d))).await.expect("an answer");
            d.on_event(ev);
        }
    }

    fn push(d: &mut Durable, i: u64) {
        d.push("t", format!("{{\"n\":{i}}}").into_bytes(), false, true).expect("the writer takes it");
    }

    #[tokio::test]
    async fn a_barrier_acknowledges_everything_sent_before_it_and_nothing_after() {
        let dir = tempfile::tempdir().unwrap();
        let mut d =
            Durable::open(&queue(dir.path()), AckBy::Barrier("barrier".into()), "test queue", Arc::default()).unwrap();
        settle(&mut d, |d| d.epoch == 1).await; // opened (an open makes earlier reads stale)
                                                // A client whose event loop is never polled: requests just wait in its channel.
        let (client, _eventloop) = AsyncClient::new(rumqttc::MqttOptions::new("t", "127.0.0.1", 1), 256);
        d.on_connected();
        for i in 0..3 {
            push(&mut d, i);
        }
        settle(&mut d, |d| d.stored_upto == 3).await;
        assert_eq!(pump_all(&mut d, &client).await, 3);
        d.outgoing_barrier(11);
        for i in 3..5 {
            push(&mut d, i);
        }
        settle(&mut d, |d| d.stored_upto == 5).await;
        assert_eq!(pump_all(&mut d, &client).await, 2);
        d.outgoing_barrier(12);
        d.barrier_ack(99); // unknown packet id: nothing
        d.tick();
        assert_eq!(d.waiting(), 5);
        d.barrier_ack(11);
        d.tick();
        assert_eq!(d.waiting(), 2, "the first barrier covers the first three");
        settle(&mut d, |d| d.committing.is_none()).await;
        assert_eq!(d.waiting(), 2, "and the ledger has them");
        // The connection drops before the second barrier's answer: the last two go again, historical.
        d.on_disconnected();
        d.on_connected();
        assert_eq!(pump_all(&mut d, &client).await, 2);
        d.outgoing_barrier(1);
        d.barrier_ack(1);
        d.tick();
        assert_eq!(d.waiting(), 0);
        d.flush().await;
        assert_eq!(d.stats().waiting.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_queue_that_cannot_be_opened_gives_every_message_back_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        // A folder under a plain file cannot be made, not even by root.
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let stats: Arc<QueueStats> = Arc::default();
        let mut d = Durable::open(&queue(&file.join("queue")), AckBy::PubAck, "test queue", stats.clone()).unwrap();
        push(&mut d, 1);
        let mut back = None;
        while back.is_none() {
            let ev = tokio::time::timeout(Duration::from_secs(10), next_event(Some(&d))).await.unwrap();
            back = d.on_event(ev);
        }
        assert_eq!(back.unwrap().payload, br#"{"n":1}"#.to_vec(), "the refused message comes back to be sent live");
        d.sent_live();
        d.tick();
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(stats.live.load(Ordering::Relaxed), 1);
        assert_eq!(d.waiting(), 0);
        let why = stats.problem().expect("a problem is reported");
        assert!(why.contains(&file.join("queue").display().to_string()), "{why}");
        assert!(why.contains("cannot be opened"), "{why}");
    }

    #[test]
    fn stamps_are_spliced_into_objects_without_their_keys_and_replace_them_otherwise() {
        let parse = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
        // The object's own bytes are kept as they were (key order, number formatting).
        let out = stamp(br#" {"z":1.50,"a":"\u00e9"} "#, 3, false);
        assert_eq!(out, br#"{"msg_id":3,"z":1.50,"a":"\u00e9"} "#.to_vec());
        assert_eq!(stamp(b"{ }", 4, true), br#"{"msg_id":4,"historical":true }"#.to_vec());
        assert_eq!(
            parse(&stamp(br#"{"a":{"msg_id":1}}"#, 5, false)),
            serde_json::json!({"a": {"msg_id": 1}, "msg_id": 5})
        );
        // A key of the stamp's already there (even written with an escape): replaced, not repeated.
        let out = stamp(br#"{"msg_id":1,"historical":false,"b":2}"#, 6, true);
        assert_eq!(parse(&out), serde_json::json!({"msg_id": 6, "historical": true, "b": 2}));
        let out = stamp(br#"{"msg\u005fid":1}"#, 7, false);
        assert_eq!(parse(&out), serde_json::json!({"msg_id": 7}));
        // Not one valid object: unchanged.
        for bad in [&br#"{"a":1} x"#[..], br#"{"a":1"#, br#"[1]"#, b"", br#""s""#] {
            assert_eq!(stamp(bad, 8, true), bad.to_vec());
        }
    }

    #[test]
    fn stamps_json_objects_only() {
        let v: serde_json::Value = serde_json::from_slice(&stamp(br#"{"a":1}"#, 7, true)).unwrap();
        assert_eq!(v, serde_json::json!({"a": 1, "msg_id": 7, "historical": true}));
        let v: serde_json::Value = serde_json::from_slice(&stamp(br#"{"a":1}"#, 8, false)).unwrap();
        assert_eq!(v, serde_json::json!({"a": 1, "msg_id": 8}));
        assert_eq!(stamp(b"offline", 9, true), b"offline".to_vec());
    }
}
