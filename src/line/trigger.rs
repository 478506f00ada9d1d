//! Part triggers: a photo-eye (an edge of a bool point) or a counter the PLC
//! increments per part. Each trigger creates a part with its own id and the
//! time of the reading that showed it, announces it to the task's controller
//! (so it enters the reject gate's register and gets a deadline) and asks the
//! camera for the next frame.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::watch;

use crate::config::{PointType, TriggerOn};
use crate::part::announce::Announcer;
use crate::part::control::TaskControl;
use crate::part::sample::{Quality, Sample};
use crate::part::{PartEvent, PartInfo};
use crate::stats::TaskStats;

/// Parts waiting for their frame, shared with the camera thread (which takes
/// the oldest for the first frame it grabs after the part's trigger).
pub type Waiting = Arc<Mutex<VecDeque<PartInfo>>>;

/// Turns successive readings into a number of new parts.
#[derive(Debug)]
pub struct Detector {
    on: TriggerOn,
    /// Counter width in bits, for wrap-around.
    bits: u32,
    last: Option<u64>,
}

/// A counter that jumps by more than this is resynchronised, not turned into
/// thousands of parts (a PLC reset or a wrong register).
const MAX_STEP: u64 = 1000;

impl Detector {
    pub fn new(on: TriggerOn, ty: PointType) -> Self {
        let bits = match ty {
            PointType::U16 | PointType::I16 => 16,
            PointType::U32 | PointType::I32 => 32,
            _ => 64,
        };
        Detector { on, bits, last: None }
    }

    /// Parts announced by this reading (0 for the first reading).
    pub fn update(&mut self, s: &Sample) -> u64 {
        if s.quality != Quality::Good {
            return 0;
        }
        let now = match (self.on, &s.value) {
            (TriggerOn::RisingEdge | TriggerOn::FallingEdge, _) => match s.as_bool() {
                Some(b) => u64::from(b),
                None => return 0,
            },
            (TriggerOn::Increment, _) => match s.as_u64() {
                Some(v) => v,
                None => return 0,
            },
        };
        let Some(last) = self.last.replace(now) else { return 0 };
        match self.on {
            TriggerOn::RisingEdge => u64::from(last == 0 && now == 1),
            TriggerOn::FallingEdge => u64::from(last == 1 && now == 0),
            TriggerOn::Increment => {
                let modulus = if self.bits == 64 { u64::MAX } else { (1u64 << self.bits) - 1 };
                let step = now.wrapping_sub(last) & modulus;
                if step > MAX_STEP {
                    tracing::warn!(from = last, to = now, "part counter jumped; resynchronised without creating parts");
                    0
                } else {
                    step
                }
            }
        }
    }
}

/// Parts waiting for their frame at most; more than a line holds between a trigger and its
/// camera's frame, unless the camera is gone.
pub const MAX_WAITING: usize = 1024;

/// Run until the point's poller stops.
pub async fn run(
    camera: Arc<str>,
    mut point: watch::Receiver<Sample>,
    mut detector: Detector,
    waiting: Waiting,
    events: Announcer,
    stats: Arc<TaskStats>,
    control: Arc<TaskControl>,
) {
    let mut next_id: u64 = 1;
    let mut last_reads = 0;
    loop {
        let (parts, at) = {
            let s = point.borrow_and_update();
            if s.reads == last_reads && s.quality == Quality::Good {
                (0, None) // the same reading seen again
            } else {
                last_reads = s.reads;
                (detector.update(&s), s.read_at)
            }
        };
        for _ in 0..parts {
            let captured = at.map(|t| t.into_std()).unwrap_or_else(std::time::Instant::now);
            let part = PartInfo {
                camera: camera.clone(),
                part_id: next_id,
                captured,
                captured_wall: SystemTime::now(),
                stamp: control.stamp(),
            };
            next_id += 1;
            stats.triggers.fetch_add(1, Ordering::Relaxed);
            // Announce first, so the part is in the gate's register before its frame can be judged.
            events.send(PartEvent::Captured(part.clone())).await;
            let mut w = waiting.lock().unwrap_or_else(|p| p.into_inner());
            // Bounded while the camera is away (it takes the oldest part per frame, skipping
            // those past their deadline): a part dropped here is already announced, so its
            // controller gives it ERROR at its deadline and the gate throws it out. Counted.
            if w.len() >= MAX_WAITING {
                w.pop_front();
                stats.waiting_dropped.fetch_add(1, Ordering::Relaxed);
            }
            w.push_back(part);
        }
        if point.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::part::sample::Value;

    fn reading(v: Value, q: Quality) -> Sample {
        Sample { value: Some(v), quality: q, read_at: None, read_wall: None, error: None, reads: 1 }
    }

    #[test]
    fn edges() {
        let mut d = Detector::new(TriggerOn::RisingEdge, PointType::Bool);
        let seq = [false, true, true, false, true];
        let parts: Vec<u64> = seq.iter().map(|b| d.update(&reading(Value::Bool(*b), Quality::Good))).collect();
        assert_eq!(parts, vec![0, 1, 0, 0, 1]);
        // A bad reading neither triggers nor hides the next edge.
        assert_eq!(d.update(&reading(Value::Bool(false), Quality::Bad)), 0);
        assert_eq!(d.update(&reading(Value::Bool(false), Quality::Good)), 0);
        assert_eq!(d.update(&reading(Value::Bool(true), Quality::Good)), 1);
        let mut f = Detector::new(TriggerOn::FallingEdge, PointType::Bool);
        let parts: Vec<u64> = seq.iter().map(|b| f.update(&reading(Value::Bool(*b), Quality::Good))).collect();
        assert_eq!(parts, vec![0, 0, 0, 1, 0]);
    }

    #[test]
    fn counter_steps_wrap_and_resync() {
        let mut d = Detector::new(TriggerOn::Increment, PointType::U16);
        let mut step = |v: u64| d.update(&reading(Value::UInt(v), Quality::Good));
        assert_eq!(step(65_534), 0);
        assert_eq!(step(65_535), 1);
        assert_eq!(step(2), 3, "through the wrap");
        assert_eq!(step(2), 0);
        assert_eq!(step(40_000), 0, "a jump is resynchronised, not 40,000 parts");
        assert_eq!(step(40_001), 1);
    }

    fn control() -> Arc<TaskControl> {
        let limits = crate::part::control::CommandLimits::for_task(&Default::default(), 0.5);
        Arc::new(TaskControl::new("t", 0.5, limits))
    }

    #[tokio::test]
    async fn the_waiting_list_is_bounded_while_the_camera_is_away() {
        let (tx, rx) = watch::channel(reading(Value::UInt(0), Quality::Good));
        let waiting: Waiting = Default::default();
        let (events, mut announced) = Announcer::channel(2 * MAX_WAITING, Default::default());
        let stats = Arc::new(TaskStats::default());
        let detector = Detector::new(TriggerOn::Increment, PointType::U32);
        let task = tokio::spawn(run("cam".into(), rx, detector, waiting.clone(), events, stats.clone(), control()));
        tokio::task::yield_now().await; // the first reading syncs the counter
                                        // Parts counted one reading at a time, no camera taking any.
        for n in 1..=(MAX_WAITING as u64 + 100) {
            tx.send(Sample { reads: n + 1, ..reading(Value::UInt(n), Quality::Good) }).unwrap();
            tokio::task::yield_now().await;
        }
        for _ in 0..10 {
            tokio::task::yield_now().await; // the last reading seen before the poller goes
        }
        drop(tx);
        task.await.unwrap();
        let mut n = 0;
        while announced.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, MAX_WAITING + 100, "every part is announced (its controller judges it ERROR)");
        assert_eq!(waiting.lock().unwrap().len(), MAX_WAITING);
        assert_eq!(stats.waiting_dropped.load(Ordering::Relaxed), 100);
    }
}
