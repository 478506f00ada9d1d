//! The points linesight reads: poll groups, quality, and the latest sample
//! of each point.
//!
//! Points of one device with the same poll interval form a poll group: one
//! task that, every interval, reads the group in as few requests as the
//! protocol allows ([`codec::plan_reads`]) and updates each point's
//! [`watch`] channel. Consumers (triggers, the encoder, the line-running
//! signal, telemetry) hold receivers: the poller is the single owner of a
//! point's value.
//!
//! Quality: `good` after a successful read; `bad` when the last read failed
//! (the last good value is kept, marked bad); `stale` when the last good read
//! is older than three poll intervals (the bus is congested).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value as Json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{interval, Instant, MissedTickBehavior};

use super::bus::{Device, ReadData};
use super::codec::{self, PointSpec, Value};
use crate::config::{Config, PointConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    /// Never read yet.
    Unknown,
    Good,
    Stale,
    Bad,
}

/// The latest reading of one point.
#[derive(Debug, Clone)]
pub struct Sample {
    pub value: Option<Value>,
    pub quality: Quality,
    /// When the value was last read successfully (monotonic).
    pub read_at: Option<Instant>,
    /// The same, wall clock, for reports.
    pub read_wall: Option<SystemTime>,
    /// Why the last read failed, when it did.
    pub error: Option<String>,
    /// Successful reads so far: lets a consumer tell a new reading of an
    /// unchanged value from no reading at all.
    pub reads: u64,
}

impl Sample {
    fn unknown() -> Self {
        Sample { value: None, quality: Quality::Unknown, read_at: None, read_wall: None, error: None, reads: 0 }
    }

    /// Quality as of `now`: good turns stale when no read succeeded for three poll intervals.
    pub fn quality_at(&self, now: Instant, poll: Duration) -> Quality {
        match (self.quality, self.read_at) {
            (Quality::Good, Some(t)) if now.saturating_duration_since(t) > poll * 3 => Quality::Stale,
            (q, _) => q,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self.value {
            Some(Value::Bool(b)) => Some(b),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self.value {
            Some(Value::UInt(v)) => Some(v),
            Some(Value::Int(v)) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }
}

/// One configured point and its latest sample.
#[derive(Clone)]
pub struct Point {
    pub name: Arc<str>,
    pub config: PointConfig,
    pub spec: PointSpec,
    pub rx: watch::Receiver<Sample>,
}

impl Point {
    /// The point as telemetry reports it.
    pub fn to_json(&self) -> Json {
        let s = self.rx.borrow().clone();
        let q = s.quality_at(Instant::now(), self.config.poll.get());
        let mut doc = json!({
            "value": s.value.as_ref().map(Value::to_json),
            "quality": q,
            "ts": s.read_wall.map(crate::telemetry::rfc3339),
        });
        if let Some(u) = &self.config.unit {
            doc["unit"] = json!(u);
        }
        if let Some(e) = &s.error {
            doc["error"] = json!(e);
        }
        doc
    }
}

/// Every point, by name.
#[derive(Clone, Default)]
pub struct Points {
    pub points: BTreeMap<String, Point>,
}

impl Points {
    /// Start one poll task per (device, interval).
    pub fn start(config: &Config, devices: &BTreeMap<String, Device>) -> (Points, Vec<JoinHandle<()>>) {
        let mut groups: BTreeMap<(String, Duration), Vec<Member>> = BTreeMap::new();
        let mut points = BTreeMap::new();
        for (name, p) in &config.modbus.points {
            let Some(dev_cfg) = config.modbus.devices.get(&p.device) else { continue };
            let spec = PointSpec::from_config(p, dev_cfg);
            let (tx, rx) = watch::channel(Sample::unknown());
            points
                .insert(name.clone(), Point { name: name.as_str().into(), config: p.clone(), spec: spec.clone(), rx });
            groups.entry((p.device.clone(), p.poll.get())).or_default().push((name.clone(), spec, tx));
        }
        let mut tasks = Vec::new();
        for ((device, every), members) in groups {
            let Some(dev) = devices.get(&device) else { continue };
            tasks.push(tokio::spawn(poll_group(dev.clone(), every, members)));
        }
        (Points { points }, tasks)
    }

    pub fn get(&self, name: &str) -> Option<&Point> {
        self.points.get(name)
    }

    pub fn subscribe(&self, name: &str) -> Option<watch::Receiver<Sample>> {
        self.points.get(name).map(|p| p.rx.clone())
    }
}

/// One point of a poll group: its name, how to decode it, where its value goes.
type Member = (String, PointSpec, watch::Sender<Sample>);

/// Unused addresses a read may cover to save a round trip.
const MAX_GAP: u16 = 8;

async fn poll_group(device: Device, every: Duration, members: Vec<Member>) {
    let specs: Vec<PointSpec> = members.iter().map(|m| m.1.clone()).collect();
    let blocks = codec::plan_reads(&specs, MAX_GAP);
    let mut tick = interval(every);
    // A slow bus must not cause a burst of catch-up reads.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        for block in &blocks {
            let result = device.read(block.area, block.start, block.count).await;
            let (now, wall) = (Instant::now(), SystemTime::now());
            match &result {
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(device = %device.name, start = block.start, count = block.count, error = %e, "points could not be read; marked bad");
                }
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!(device = %device.name, "points read again");
                }
                _ => {}
            }
            for &i in &block.points {
                let (name, spec, tx) = &members[i];
                let offset = usize::from(spec.address - block.start);
                let decoded = match &result {
                    Ok(ReadData::Words(w)) => codec::decode_registers(spec, &w[offset..]),
                    Ok(ReadData::Bits(b)) => Ok(codec::decode_bit(spec, b[offset])),
                    Err(e) => Err(e.to_string()),
                };
                tx.send_modify(|s| match decoded {
                    Ok(v) => {
                        s.value = Some(v);
                        s.quality = Quality::Good;
                        s.read_at = Some(now);
                        s.read_wall = Some(wall);
                        s.error = None;
                        s.reads += 1;
                    }
                    Err(e) => {
                        if s.error.is_none() && result.is_ok() {
                            tracing::warn!(point = %name, device = %device.name, error = %e, "point value cannot be decoded");
                        }
                        s.quality = Quality::Bad;
                        s.error = Some(e);
                    }
                });
            }
        }
    }
}
