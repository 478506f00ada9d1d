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
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{interval, Instant, MissedTickBehavior};

use super::bus::{Device, ReadData};
use super::codec::{self, PointSpec, ReadBlock};
use crate::config::ModbusConfig;
use crate::part::sample::{Point, Quality, Sample, Value};

/// Every point, by name.
#[derive(Clone, Default)]
pub struct Points {
    pub points: BTreeMap<String, Point>,
    /// How to read and write each point (addresses, scaling), by name.
    pub specs: BTreeMap<String, PointSpec>,
}

impl Points {
    /// Start one poll task per (device, interval).
    pub fn start(modbus: &ModbusConfig, devices: &BTreeMap<String, Device>) -> (Points, Vec<JoinHandle<()>>) {
        let mut groups: BTreeMap<(String, Duration), Vec<Member>> = BTreeMap::new();
        let mut points = BTreeMap::new();
        let mut specs = BTreeMap::new();
        for (name, p) in &modbus.points {
            let Some(dev_cfg) = modbus.devices.get(&p.device) else { continue };
            let spec = PointSpec::from_config(p, dev_cfg);
            let (tx, rx) = watch::channel(Sample::unknown());
            points.insert(
                name.clone(),
                Point {
                    name: name.as_str().into(),
                    config: p.clone(),
                    ty: spec.ty,
                    scaled: spec.scale != 1.0 || spec.offset != 0.0,
                    rx,
                },
            );
            specs.insert(name.clone(), spec.clone());
            groups.entry((p.device.clone(), p.poll.get())).or_default().push((name.clone(), spec, tx));
        }
        let mut tasks = Vec::new();
        for ((device, every), members) in groups {
            let Some(dev) = devices.get(&device) else { continue };
            tasks.push(tokio::spawn(poll_group(dev.clone(), every, members)));
        }
        (Points { points, specs }, tasks)
    }

    pub fn get(&self, name: &str) -> Option<&Point> {
        self.points.get(name)
    }

    pub fn subscribe(&self, name: &str) -> Option<watch::Receiver<Sample>> {
        self.points.get(name).map(|p| p.rx.clone())
    }
}

/// One point's value from the data read for its `block` (of [`codec::plan_reads`], which put
/// the point inside it; the data has the block's length, see [`super::bus::read_reply`]).
pub fn decode_in_block(spec: &PointSpec, block: &ReadBlock, data: &ReadData) -> Result<Value, String> {
    let offset = usize::from(spec.address - block.start);
    match data {
        ReadData::Words(w) => codec::decode_registers(spec, &w[offset..]),
        ReadData::Bits(b) => Ok(codec::decode_bit(spec, b[offset])),
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
            let (result, device_at) = device.read_timed(block.area, block.start, block.count).await;
            let (answered, wall) = (Instant::now(), SystemTime::now());
            // The device read its values about halfway through the exchange, not when the reply
            // came: the trigger's edge time and the encoder's position are placed from this.
            let now = device_at.unwrap_or(answered);
            let wall = wall.checked_sub(answered - now).unwrap_or(wall);
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
                let decoded = match &result {
                    Ok(data) => decode_in_block(spec, block, data),
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
