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

use std::collections::{BTreeSet, HashMap, VecDeque};

use rumqttc::{AsyncClient, QoS};

use crate::config::{QueueConfig, QueueFull};
use crate::store::{Store, StoreConfig, WhenFull};

/// Unacknowledged durable messages in flight at once.
const WINDOW: usize = 64;

/// How the broker's receipt of a queued message is known.
#[derive(Debug, Clone)]
pub enum AckBy {
    /// QoS 1: each message's PUBACK.
    PubAck,
    /// QoS 0: the UNSUBACK of an UNSUBSCRIBE (of this topic) sent after the batch.
    Barrier(String),
}

pub struct Durable {
    store: Store,
    ack_by: AckBy,
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
    /// Next sequence number to send on this connection.
    next_to_send: u64,
    in_flight: usize,
    /// Sequence numbers up to here were recovered from disk at start, or
    /// sent on a connection that dropped before they were acknowledged.
    historical_upto: u64,
    /// Runs of sequence numbers stored while the broker was unreachable
    /// (runs, not a set: an hour's outage is one entry).
    offline: Vec<(u64, u64)>,
}

impl Durable {
    pub fn open(cfg: &QueueConfig, ack_by: AckBy) -> Result<Durable, String> {
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
        let (store, recovery) =
            Store::open(store_cfg).map_err(|e| format!("MQTT queue in {} cannot be opened: {e}", cfg.dir.display()))?;
        tracing::info!(dir = %cfg.dir.display(), ?recovery, waiting = store.len(), "MQTT queue opened");
        let historical_upto = store.last_seq();
        Ok(Durable {
            store,
            ack_by,
            barriers: VecDeque::new(),
            barrier_pkid: HashMap::new(),
            requested: VecDeque::new(),
            pkid_seq: HashMap::new(),
            sent_order: VecDeque::new(),
            acked: BTreeSet::new(),
            ack_upto: 0,
            uncommitted: 0,
            next_to_send: 0,
            in_flight: 0,
            historical_upto,
            offline: Vec::new(),
        })
    }

    /// Store a message. False when the queue refused it (full with
    /// `drop-newest`, or a disk error), which the caller counts.
    pub fn push(&mut self, topic: &str, payload: &[u8], retain: bool, connected: bool) -> bool {
        match self.store.push(topic, payload, 1, retain) {
            Ok(seq) => {
                if !connected {
                    match self.offline.last_mut() {
                        Some(run) if run.1 + 1 == seq => run.1 = seq,
                        _ => self.offline.push((seq, seq)),
                    }
                }
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "MQTT queue refused a message");
                false
            }
        }
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
    /// number). Returns how many were requested.
    pub fn pump(&mut self, client: &AsyncClient, stamp: &mut dyn Stamp) -> u64 {
        // Reading back costs a disk read: refill in batches of half a window.
        if self.in_flight > WINDOW / 2 || self.store.len() <= self.uncommitted + self.in_flight {
            return 0;
        }
        let qos = match self.ack_by {
            AckBy::PubAck => QoS::AtLeastOnce,
            AckBy::Barrier(_) => QoS::AtMostOnce,
        };
        let mut n = 0;
        for r in self.store.peek(self.uncommitted + self.in_flight + WINDOW) {
            if r.seq < self.next_to_send {
                continue;
            }
            if self.in_flight >= WINDOW {
                break;
            }
            let historical = self.historical(r.seq);
            let payload = stamp.stamp(&r.payload, r.seq, historical);
            if client.try_publish(r.topic.clone(), qos, r.retain, payload).is_err() {
                stamp.unsent();
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
        n
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

    /// Record the broker's acknowledgements in the queue's ledger.
    fn commit(&mut self) {
        if self.uncommitted == 0 {
            return;
        }
        match self.store.ack(self.ack_upto) {
            Ok(()) => {
                self.uncommitted = 0;
                let upto = self.ack_upto;
                self.offline.retain(|run| run.1 > upto);
            }
            Err(e) => tracing::error!(error = %e, "MQTT queue acknowledgement could not be written"),
        }
    }

    pub fn tick(&mut self) {
        self.commit();
        if let Err(e) = self.store.maybe_flush() {
            tracing::error!(error = %e, "MQTT queue could not be flushed to disk");
        }
    }

    pub fn flush(&mut self) {
        self.commit();
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "MQTT queue could not be flushed to disk");
        }
    }

    /// Messages waiting (stored, not yet acknowledged).
    pub fn waiting(&self) -> usize {
        self.store.len().saturating_sub(self.uncommitted)
    }

    /// Messages the full queue dropped.
    pub fn dropped(&self) -> u64 {
        self.store.dropped()
    }

    /// Messages lost to damage on disk.
    pub fn lost(&self) -> u64 {
        self.store.lost()
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
fn stamp(payload: &[u8], seq: u64, historical: bool) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;

    fn queue(dir: &std::path::Path) -> QueueConfig {
        QueueConfig { dir: dir.into(), max_mb: 1, fsync_every: Dur::from_millis(0), when_full: QueueFull::DropOldest }
    }

    #[test]
    fn a_barrier_acknowledges_everything_sent_before_it_and_nothing_after() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Durable::open(&queue(dir.path()), AckBy::Barrier("barrier".into())).unwrap();
        // A client whose event loop is never polled: requests just wait in its channel.
        let (client, _eventloop) = AsyncClient::new(rumqttc::MqttOptions::new("t", "127.0.0.1", 1), 256);
        d.on_connected();
        for i in 0..3 {
            assert!(d.push("t", format!("{{\"n\":{i}}}").as_bytes(), false, true));
        }
        assert_eq!(d.pump(&client, &mut JsonStamp), 3);
        d.outgoing_barrier(11);
        for i in 3..5 {
            assert!(d.push("t", format!("{{\"n\":{i}}}").as_bytes(), false, true));
        }
        assert_eq!(d.pump(&client, &mut JsonStamp), 2);
        d.outgoing_barrier(12);
        d.barrier_ack(99); // unknown packet id: nothing
        d.tick();
        assert_eq!(d.waiting(), 5);
        d.barrier_ack(11);
        d.tick();
        assert_eq!(d.waiting(), 2, "the first barrier covers the first three");
        // The connection drops before the second barrier's answer: the last two go again, historical.
        d.on_disconnected();
        d.on_connected();
        assert_eq!(d.pump(&client, &mut JsonStamp), 2);
        d.outgoing_barrier(1);
        d.barrier_ack(1);
        d.tick();
        assert_eq!(d.waiting(), 0);
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
