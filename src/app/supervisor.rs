//! The supervisor: node health, what counts as a fault, what the stack light shows, and the
//! safe state on fault.
//!
//! A fault is any of: a camera that is not delivering (offline, or still
//! connecting after start), a Modbus device whose link is down, an inference
//! worker with frames waiting and no progress for `STALL_AFTER`, a reject
//! pulse the gate's sensor did not confirm (for `CONFIRM_ALARM`). While a
//! fault lasts, the fault lamp is on, the running lamp is off, and every
//! plain output (not a reject gate, not a lamp) is held in its safe state.
//! Reject gates keep their per-part fail-safe: a part without a verdict is
//! thrown out when it reaches the gate, so nothing passes uninspected.
//!
//! Machine health (`health:` in the config: a hot thermal zone, little free disk, little memory)
//! is an alarm, like a loss in the MQTT queue: published and in the fault word, but not a line
//! fault (no safe state, lamps unchanged). Each has hysteresis, so a figure near its threshold
//! does not make the alarm flap.
//!
//! Lamps are written on change and re-asserted every few seconds, so a PLC
//! that restarted shows the right state again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio::time::{interval, Instant, MissedTickBehavior};

use crate::config::{HealthConfig, StackLightConfig};
use crate::modbus::{Outputs, RegisterHandle};
use crate::part::queue::FrameQueue;
use crate::part::Frame;
use crate::stats::{
    CameraStats, CameraStatus, DeviceStats, Faults, Machine, MachineSample, QueueStats, RejectWindow, TaskStats,
};
use crate::telemetry::Telemetry;
use crate::util::time::rfc3339;

/// Inference with frames waiting and no progress for this long is stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(2);
/// A camera still connecting this long after start is a fault.
pub const CONNECT_GRACE: Duration = Duration::from_secs(10);
const REASSERT: Duration = Duration::from_secs(5);
const CHECK: Duration = Duration::from_millis(100);

/// What the supervisor watches for one task.
pub struct WatchedTask {
    pub name: String,
    pub camera: String,
    pub camera_stats: Arc<CameraStats>,
    pub queue: Arc<FrameQueue<Frame>>,
    /// Frames judged by this task's worker.
    pub progress: Arc<AtomicU64>,
    /// The task's figures: a missing gate confirmation is an alarm.
    pub stats: Arc<TaskStats>,
    /// Why the task's model could not be loaded, if it could not: a fault for as long as it runs.
    pub unusable: Option<String>,
}

/// How long a loss in the MQTT queue stays an active alarm.
pub const QUEUE_ALARM: Duration = Duration::from_secs(60);

/// How long a missing gate confirmation stays an active alarm.
pub const CONFIRM_ALARM: Duration = Duration::from_secs(10);

/// The bits of the fault word (`modbus.fault_word`), as docs/modbus.md lists them.
pub mod fault_bit {
    /// Any line fault (every bit below but the telemetry loss).
    pub const ANY: u16 = 1 << 0;
    /// A camera offline, stalled or not connected.
    pub const CAMERA: u16 = 1 << 1;
    /// A task's model cannot be used (every part rejected).
    pub const MODEL: u16 = 1 << 2;
    /// Inference stalled (frames waiting, no progress).
    pub const INFERENCE: u16 = 1 << 3;
    /// A reject gate did not confirm a pulse.
    pub const GATE_CONFIRM: u16 = 1 << 4;
    /// A Modbus device unreachable.
    pub const DEVICE: u16 = 1 << 5;
    /// An MQTT disk queue did not keep messages, or cannot be used (an alarm, not a line fault).
    pub const TELEMETRY: u16 = 1 << 6;
    /// Machine health: a thermal zone too hot, too little free disk or memory (`health:` in the
    /// config; an alarm, not a line fault).
    pub const MACHINE: u16 = 1 << 7;
    /// Always set when linesight writes the word: 0 means "never written since the PLC started".
    pub const WRITTEN: u16 = 1 << 15;
}

/// The faults of this moment, as human-readable reasons; their bits are added to `bits`.
pub fn current_faults(
    tasks: &[WatchedTask],
    devices: &BTreeMap<String, Arc<DeviceStats>>,
    since_start: Duration,
    stalls: &mut BTreeMap<String, (u64, Instant)>,
    confirms: &mut BTreeMap<String, (u64, Option<Instant>)>,
    now: Instant,
    bits: &mut u16,
) -> Vec<String> {
    let mut faults = Vec::new();
    for t in tasks {
        let missing = t.stats.confirm_missing.load(Ordering::Relaxed);
        let c = confirms.entry(t.name.clone()).or_insert((missing, None));
        if missing != c.0 {
            *c = (missing, Some(now));
        }
        if c.1.is_some_and(|at| now - at < CONFIRM_ALARM) {
            faults.push(format!("task `{}`: the reject gate did not confirm a pulse ({missing} so far)", t.name));
            *bits |= fault_bit::GATE_CONFIRM;
        }
        if let Some(why) = &t.unusable {
            faults.push(format!("task `{}`: its model cannot be used, every part is rejected: {why}", t.name));
            *bits |= fault_bit::MODEL;
        }
        match t.camera_stats.status() {
            CameraStatus::Offline => {
                faults.push(format!("camera `{}` offline", t.camera));
                *bits |= fault_bit::CAMERA;
            }
            CameraStatus::Stalled => {
                faults.push(format!("camera `{}` stalled: no new frame (or the same frame repeated)", t.camera));
                *bits |= fault_bit::CAMERA;
            }
            CameraStatus::Connecting if since_start > CONNECT_GRACE => {
                faults.push(format!("camera `{}` not connected", t.camera));
                *bits |= fault_bit::CAMERA;
            }
            _ => {}
        }
        let done = t.progress.load(Ordering::Relaxed);
        let entry = stalls.entry(t.name.clone()).or_insert((done, now));
        if done != entry.0 || t.queue.is_empty() {
            *entry = (done, now);
        } else if now - entry.1 >= STALL_AFTER {
            faults.push(format!("task `{}`: inference stalled ({} frames waiting)", t.name, t.queue.len()));
            *bits |= fault_bit::INFERENCE;
        }
    }
    for (name, d) in devices {
        // A device never used yet has no state; only a link seen down counts.
        if d.unreachable() {
            faults.push(format!("Modbus device `{name}` unreachable"));
            *bits |= fault_bit::DEVICE;
        }
    }
    faults
}

/// The alarms of one disk queue (`seen`: the count of messages it did not keep, and when it last
/// changed), or None when it is well.
/// - While it cannot be used (a full or failed disk, a folder that cannot be opened): why, for
///   as long as it lasts. The node inspects on; results and alarms go out live only.
/// - For a minute after each message it did not keep (dropped by the full-queue policy, refused
///   by the disk, or damaged on disk): telemetry that was meant to survive an outage may not.
pub fn queue_alarms(
    name: &str,
    q: &QueueStats,
    seen: &mut (u64, Option<Instant>),
    now: Instant,
) -> Option<Vec<String>> {
    let mut alarms = Vec::new();
    if let Some(why) = q.problem() {
        alarms.push(format!("{why}; results and alarms go out live only while a broker is connected"));
    }
    let lost = q.dropped.load(Ordering::Relaxed) + q.lost.load(Ordering::Relaxed);
    if lost != seen.0 {
        *seen = (lost, Some(now));
    }
    if seen.1.is_some_and(|t| now - t < QUEUE_ALARM) {
        // No count in the text: every change of the alarm list is an alarm message, itself
        // queued, and a refused one would change a count, which would send another: a loop.
        alarms.push(format!(
            "{name} did not keep every message (full, refused by the disk, or damaged): counts in mqtt_queue of the stats"
        ));
    }
    (!alarms.is_empty()).then_some(alarms)
}

/// Degrees below `health.temperature_c` a zone must fall to clear its alarm.
pub const TEMPERATURE_HYSTERESIS_C: f64 = 5.0;

/// Which machine health alarms are on; kept between checks for the hysteresis.
#[derive(Debug, Default)]
pub struct HealthState {
    hot: BTreeSet<String>,
    low_disk: BTreeSet<String>,
    low_memory: bool,
}

/// Above `limit` MiB by 10% (and at least 1 MiB): where a low-space alarm clears.
fn clear_above(limit_mb: u64) -> u64 {
    (limit_mb + (limit_mb / 10).max(1)) << 20
}

/// The machine health alarms of a sample, with hysteresis: an alarm starts at the threshold and
/// ends only past it by a margin ([`TEMPERATURE_HYSTERESIS_C`]; 10% for space). A figure that
/// cannot be read keeps its alarm as it was. The texts carry no figure that changes (each change
/// of the alarm list is an alarm message).
pub fn health_alarms(s: &MachineSample, cfg: &HealthConfig, state: &mut HealthState) -> Vec<String> {
    let mut alarms = Vec::new();
    for (zone, t) in &s.temperatures_c {
        match t {
            Some(t) if *t >= cfg.temperature_c => {
                state.hot.insert(zone.clone());
            }
            Some(t) if *t < cfg.temperature_c - TEMPERATURE_HYSTERESIS_C => {
                state.hot.remove(zone);
            }
            _ => {}
        }
    }
    for zone in &state.hot {
        alarms.push(format!(
            "machine: thermal zone `{zone}` at or above {} °C (health.temperature_c); its clocks may be throttled",
            cfg.temperature_c
        ));
    }
    if cfg.disk_free_mb > 0 {
        for (role, d) in &s.disks {
            match d.free_bytes {
                Some(free) if free < cfg.disk_free_mb << 20 => {
                    state.low_disk.insert(role.clone());
                }
                Some(free) if free >= clear_above(cfg.disk_free_mb) => {
                    state.low_disk.remove(role);
                }
                _ => {}
            }
            if state.low_disk.contains(role) {
                alarms.push(format!(
                    "machine: less than {} MiB free on the disk of {role} ({}) (health.disk_free_mb)",
                    cfg.disk_free_mb,
                    d.path.display()
                ));
            }
        }
    }
    if cfg.memory_available_mb > 0 {
        match s.memory_available_bytes {
            Some(a) if a < cfg.memory_available_mb << 20 => state.low_memory = true,
            Some(a) if a >= clear_above(cfg.memory_available_mb) => state.low_memory = false,
            _ => {}
        }
        if state.low_memory {
            alarms.push(format!(
                "machine: less than {} MiB of memory available (health.memory_available_mb)",
                cfg.memory_available_mb
            ));
        }
    }
    alarms
}

/// What the supervisor watches and drives.
pub struct Supervisor {
    pub lights: StackLightConfig,
    pub outputs: Outputs,
    pub tasks: Vec<WatchedTask>,
    /// Every Modbus device's link.
    pub devices: BTreeMap<String, Arc<DeviceStats>>,
    /// The MQTT disk queues, by name ("MQTT queue", "Sparkplug queue"): a loss, or a queue that
    /// cannot be used, is an alarm (not a fault: it does not make the line unsafe).
    pub queues: Vec<(String, Arc<QueueStats>)>,
    /// The recent reject share, for the NG-rate lamp.
    pub rejects: Arc<RejectWindow>,
    /// Where the active faults are published for everyone else to read.
    pub faults: Arc<Faults>,
    /// Outputs that are not gates or lamps: held in their safe state on fault.
    pub plain_outputs: Vec<String>,
    /// Where the alarm list goes when it changes.
    pub telemetry: Telemetry,
    /// The register the PLC reads the fault bits from ([`fault_bit`]), if configured; written on
    /// change and re-asserted every few seconds (a PLC that restarted reads it right again).
    pub fault_word: Option<RegisterHandle>,
    /// Machine health, and the thresholds that make it an alarm.
    pub machine: Arc<Machine>,
    pub health: HealthConfig,
}

impl Supervisor {
    /// Watch health, drive the stack light and the safe state on fault, until aborted.
    pub async fn run(self) {
        let Supervisor {
            lights,
            outputs,
            tasks,
            devices,
            queues,
            rejects,
            faults: faults_out,
            plain_outputs,
            telemetry,
            fault_word,
            machine,
            health,
        } = self;
        let mut health_state = HealthState::default();
        let mut written_word: Option<u16> = None;
        let started = Instant::now();
        let mut tick = interval(CHECK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut stalls = BTreeMap::new();
        let mut confirms = BTreeMap::new();
        let mut queue_seen: BTreeMap<String, (u64, Option<Instant>)> = BTreeMap::new();
        let mut shown: BTreeMap<String, bool> = BTreeMap::new();
        let mut last_assert = Instant::now();
        let mut was_faulted = false;
        loop {
            tick.tick().await;
            let now = Instant::now();
            let mut bits = 0;
            let mut faults =
                current_faults(&tasks, &devices, now - started, &mut stalls, &mut confirms, now, &mut bits);
            // Line faults drive the lamps and the safe state; a telemetry loss is
            // an alarm only (it does not make the line unsafe).
            let faulted = !faults.is_empty();
            for (name, q) in &queues {
                if let Some(alarm) = queue_alarms(name, q, queue_seen.entry(name.clone()).or_default(), now) {
                    faults.extend(alarm);
                    bits |= fault_bit::TELEMETRY;
                }
            }
            let machine_alarms = health_alarms(&machine.latest(), &health, &mut health_state);
            if !machine_alarms.is_empty() {
                faults.extend(machine_alarms);
                bits |= fault_bit::MACHINE;
            }
            if faults != faults_out.list() {
                if faulted {
                    tracing::error!(faults = ?faults, "ALARM: fault; outputs to their safe state");
                } else if !faults.is_empty() {
                    tracing::error!(alarms = ?faults, "ALARM");
                } else {
                    tracing::info!("fault cleared");
                }
                let active = !faults.is_empty();
                telemetry.alarms(&json!({"active": active, "faults": faults, "ts": rfc3339(SystemTime::now())}));
                faults_out.set(SystemTime::now(), faults);
            }
            if faulted && (!was_faulted || now - last_assert >= REASSERT) {
                let plain = plain_outputs.clone();
                outputs.to_safe_state(|n| plain.iter().any(|p| p == n)).await;
            }
            was_faulted = faulted;
            let mut want: BTreeMap<String, bool> = BTreeMap::new();
            if let Some(o) = &lights.running {
                want.insert(o.clone(), !faulted);
            }
            if let Some(o) = &lights.fault {
                want.insert(o.clone(), faulted);
            }
            if let Some(n) = &lights.ng_rate {
                want.insert(n.output.clone(), rejects.share().is_some_and(|s| s > n.above));
            }
            let reassert = now - last_assert >= REASSERT;
            if reassert {
                last_assert = now;
            }
            if let Some(word) = &fault_word {
                let value = bits | fault_bit::WRITTEN | if faulted { fault_bit::ANY } else { 0 };
                if written_word != Some(value) || reassert {
                    written_word = word.write(0, vec![value]).await.ok().map(|_| value);
                }
            }
            for (name, on) in want {
                if shown.get(&name) == Some(&on) && !reassert {
                    continue;
                }
                if let Some(h) = outputs.get(&name) {
                    match h.set(on).await {
                        Ok(()) => {
                            shown.insert(name, on);
                        }
                        Err(e) => {
                            shown.remove(&name);
                            tracing::debug!(output = %name, error = %e, "stack light not written");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_queue_alarm_lasts_while_the_queue_is_unusable_and_a_minute_after_each_drop() {
        let q = QueueStats::default();
        let mut seen = (0, None);
        let t0 = Instant::now();
        assert_eq!(queue_alarms("MQTT queue", &q, &mut seen, t0), None, "a well queue");
        *q.problem.lock().unwrap() = Some("MQTT queue in /q does not take messages: disk full".into());
        q.dropped.store(3, Ordering::Relaxed);
        let alarms = queue_alarms("MQTT queue", &q, &mut seen, t0).unwrap();
        assert_eq!(alarms.len(), 2, "{alarms:?}");
        assert!(alarms[0].starts_with("MQTT queue in /q does not take messages") && alarms[0].contains("live only"));
        assert!(alarms[1].starts_with("MQTT queue did not keep every message"));
        // More drops do not change the text (each change of the list is a queued message).
        q.dropped.store(4, Ordering::Relaxed);
        assert_eq!(queue_alarms("MQTT queue", &q, &mut seen, t0 + Duration::from_secs(1)).unwrap(), alarms);
        // The disk is back: the problem alarm ends at once, the drop alarm a minute after the last drop.
        *q.problem.lock().unwrap() = None;
        let later = queue_alarms("MQTT queue", &q, &mut seen, t0 + Duration::from_secs(30)).unwrap();
        assert_eq!(later, alarms[1..]);
        assert_eq!(queue_alarms("MQTT queue", &q, &mut seen, t0 + Duration::from_secs(62)), None);
    }

    #[test]
    fn machine_alarms_start_at_the_threshold_and_clear_past_it() {
        use crate::stats::machine::{Disk, Roots};
        let dir = tempfile::tempdir().unwrap();
        let mut s = Machine::new(Roots { proc: dir.path().into(), sys: dir.path().into() }, vec![]).latest();
        let cfg = HealthConfig { temperature_c: 85.0, disk_free_mb: 200, memory_available_mb: 256 };
        let mut st = HealthState::default();
        assert!(health_alarms(&s, &cfg, &mut st).is_empty(), "nothing readable, nothing raised");
        let mib = |n: u64| n << 20;
        s.temperatures_c.insert("gpu-thermal".into(), Some(84.9));
        s.disks.insert(
            "state_dir".into(),
            Disk { path: "/var/lib/x".into(), free_bytes: Some(mib(500)), total_bytes: None },
        );
        s.memory_available_bytes = Some(mib(1000));
        assert!(health_alarms(&s, &cfg, &mut st).is_empty());
        s.temperatures_c.insert("gpu-thermal".into(), Some(85.0));
        s.disks.get_mut("state_dir").unwrap().free_bytes = Some(mib(199));
        s.memory_available_bytes = Some(mib(255));
        let on = health_alarms(&s, &cfg, &mut st);
        assert_eq!(
            on,
            [
                "machine: thermal zone `gpu-thermal` at or above 85 °C (health.temperature_c); its clocks may be throttled",
                "machine: less than 200 MiB free on the disk of state_dir (/var/lib/x) (health.disk_free_mb)",
                "machine: less than 256 MiB of memory available (health.memory_available_mb)",
            ]
        );
        // Just back under the thresholds: the alarms stay (hysteresis); unreadable figures too.
        s.temperatures_c.insert("gpu-thermal".into(), Some(80.5));
        s.disks.get_mut("state_dir").unwrap().free_bytes = Some(mib(210));
        s.memory_available_bytes = None;
        assert_eq!(health_alarms(&s, &cfg, &mut st), on, "no flapping near the threshold");
        // Past the margins: cleared.
        s.temperatures_c.insert("gpu-thermal".into(), Some(79.9));
        s.disks.get_mut("state_dir").unwrap().free_bytes = Some(mib(220));
        s.memory_available_bytes = Some(mib(282));
        assert!(health_alarms(&s, &cfg, &mut st).is_empty());
        // 0 turns the space alarms off.
        s.memory_available_bytes = Some(0);
        let off = HealthConfig { disk_free_mb: 0, memory_available_mb: 0, ..cfg };
        assert!(health_alarms(&s, &off, &mut st).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_worker_is_a_fault_after_the_stall_time() {
        let queue = Arc::new(FrameQueue::new(4));
        let progress = Arc::new(AtomicU64::new(0));
        let cam = Arc::new(CameraStats::default());
        let tasks = vec![WatchedTask {
            name: "t".into(),
            camera: "c".into(),
            camera_stats: cam,
            queue: queue.clone(),
            progress: progress.clone(),
            stats: Arc::new(TaskStats::default()),
            unusable: None,
        }];
        let devices = BTreeMap::new();
        let mut stalls = BTreeMap::new();
        let mut confirms = BTreeMap::new();
        let t0 = Instant::now();
        // Nothing waiting: never a stall, however long.
        assert!(current_faults(&tasks, &devices, Duration::ZERO, &mut stalls, &mut confirms, t0, &mut 0).is_empty());
        let frame = Frame {
            part: crate::part::PartInfo {
                camera: "c".into(),
                part_id: 1,
                captured: std::time::Instant::now(),
                position: None,
                captured_wall: std::time::SystemTime::now(),
                stamp: crate::part::control::Stamp { generation: 0, threshold: 0.5 },
            },
            image: opencv::core::Mat::default(),
            scale: 1,
            is_part: true,
        };
        let _ = queue.push(frame, crate::part::queue::WhenFull::Refuse);
        let at = |s| t0 + Duration::from_secs(s);
        assert!(current_faults(&tasks, &devices, Duration::ZERO, &mut stalls, &mut confirms, at(1), &mut 0).is_empty());
        let f = current_faults(&tasks, &devices, Duration::ZERO, &mut stalls, &mut confirms, at(4), &mut 0);
        assert_eq!(f, vec!["task `t`: inference stalled (1 frames waiting)".to_string()]);
        progress.fetch_add(1, Ordering::Relaxed);
        assert!(current_faults(&tasks, &devices, Duration::ZERO, &mut stalls, &mut confirms, at(5), &mut 0).is_empty());
    }
}
