//! Part triggers: a photo-eye (an edge of a bool point) or a counter the PLC
//! increments per part. Each trigger creates a part with its own id, the time
//! and encoder position of its edge, announces it to the task's controller
//! (so it enters the reject gate's register and gets a deadline) and asks the
//! camera for the next frame.
//!
//! Where the edge was ([`Placer`]): a poll only shows that the edge happened
//! between the previous reading and this one. With a latch (`trigger.latch`),
//! the PLC's high-speed counter captured the encoder count at the edge itself:
//! that count is the part's position, and its time is when the encoder passed
//! it. Without one, the edge is placed midway between the two readings (each
//! taken as the device read it, midway through its round trip), which is right
//! on average and off by up to half a poll interval either way; the position
//! is the encoder there, from the readings around it.
//!
//! A latch also catches the parts the poll does not see ([`LatchWatch`]): a photo-eye pulse
//! shorter than a stall of the poll loop goes by unseen, but the PLC latched it, so a latched
//! count that changes with no edge seen is a part of its own (counted in `triggers_from_latch`).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{PointType, TriggerOn};
use crate::part::announce::Announcer;
use crate::part::control::TaskControl;
use crate::part::sample::{Position, Quality, Sample};
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

/// Places each part's edge in time and on the encoder (see the module docs).
#[derive(Debug)]
pub struct Placer {
    /// The trigger point's poll interval.
    poll: Duration,
    /// The trigger point's previous reading, as the device read it.
    last_read: Option<Instant>,
    /// Recent encoder positions, oldest first.
    track: VecDeque<Position>,
    /// The encoder's (and the latch's) counter width in bits.
    bits: u32,
    /// The last latched count used, to tell a latch the PLC did not renew.
    last_latch: Option<u64>,
    /// A latch that keeps failing is logged when it starts, once a minute, and when it works
    /// again: at 50 parts/s a line per part would flood the journal.
    latch_log: crate::util::throttle::Throttle,
}

/// Where and when a part's edge was.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Edge {
    pub at: Instant,
    /// Unwrapped encoder counts, when the line has an encoder.
    pub position: Option<i64>,
    /// Whether `position` is the PLC's latched count (else an estimate).
    pub latched: bool,
}

/// Encoder readings kept to place edges: a few poll cycles.
const TRACK: usize = 16;

impl Placer {
    pub fn new(poll: Duration, encoder: PointType) -> Self {
        let bits = if encoder == PointType::U16 { 16 } else { 32 };
        Placer { poll, last_read: None, track: VecDeque::new(), bits, last_latch: None, latch_log: Default::default() }
    }

    /// An encoder position, as the encoder follower publishes it.
    pub fn encoder(&mut self, p: Position) {
        if self.track.back().is_some_and(|l| l.at >= p.at) {
            self.track.clear(); // not after the last one: start again rather than mix
        }
        self.track.push_back(p);
        if self.track.len() > TRACK {
            self.track.pop_front();
        }
    }

    /// A reading of the trigger point taken at `read_at`: returns the edge's estimated time if
    /// this reading shows one, midway since the previous reading (or half a poll interval
    /// before this one, when the previous is unknown or more than a few intervals old).
    pub fn reading(&mut self, read_at: Instant) -> Instant {
        let est = match self.last_read {
            Some(prev) if read_at > prev && read_at - prev <= self.poll * 4 => prev + (read_at - prev) / 2,
            _ => read_at.checked_sub(self.poll / 2).unwrap_or(read_at),
        };
        self.last_read = Some(read_at);
        est
    }

    /// The encoder's position at `t`: between the two readings around it, else from the nearest
    /// reading and its speed.
    pub fn position_at(&self, t: Instant) -> Option<f64> {
        let (first, last) = (self.track.front()?, self.track.back()?);
        if t >= last.at {
            return Some(last.at_time(t));
        }
        if t <= first.at {
            return Some(first.at_time(t));
        }
        let i = self.track.iter().position(|p| p.at >= t)?;
        let (a, b) = (&self.track[i - 1], &self.track[i]);
        let f = (t - a.at).as_secs_f64() / (b.at - a.at).as_secs_f64();
        Some(a.counts as f64 + f * (b.counts - a.counts) as f64)
    }

    /// When the encoder was (or will be) at `counts`: between the two readings around it, else
    /// from the nearest reading and its speed; None while the line stands there.
    pub fn time_at(&self, counts: i64) -> Option<Instant> {
        let last = self.track.back()?;
        let pairs = self.track.iter().zip(self.track.iter().skip(1));
        for (a, b) in pairs {
            if a.counts <= counts && counts <= b.counts && b.counts > a.counts {
                let f = (counts - a.counts) as f64 / (b.counts - a.counts) as f64;
                return Some(a.at + (b.at - a.at).mul_f64(f));
            }
        }
        let near = if counts < self.track.front()?.counts { self.track.front()? } else { last };
        if near.speed <= 1e-9 {
            return None;
        }
        let secs = (counts - near.counts) as f64 / near.speed;
        if secs.abs() > 60.0 {
            return None;
        }
        if secs >= 0.0 {
            Some(near.at + Duration::from_secs_f64(secs))
        } else {
            near.at.checked_sub(Duration::from_secs_f64(-secs))
        }
    }

    /// A raw latched value of the encoder's counter on the unwrapped scale, by the shortest way
    /// round the wrap from the last encoder reading.
    pub fn unwrap_latch(&self, raw: u64) -> Option<i64> {
        let last = self.track.back()?;
        let modulus = 1i64 << self.bits;
        let mut step = (raw as i64 - last.raw as i64).rem_euclid(modulus);
        if step >= modulus / 2 {
            step -= modulus;
        }
        Some(last.counts + step)
    }

    /// The last latched count a part was placed at.
    pub fn last_latch(&self) -> Option<u64> {
        self.last_latch
    }

    /// A part placed without its latch, and why: logged through the throttle.
    pub fn latch_failed(&mut self, why: &str) {
        use crate::util::throttle::Report;
        match self.latch_log.failed(Instant::now().into_std(), why) {
            Some(Report::First) => tracing::warn!("{why}"),
            Some(Report::Still { repeats, total, for_s }) => {
                tracing::warn!(repeats, total, for_s, "{why} (still; logged once a minute)")
            }
            None => {}
        }
    }

    /// Place an edge estimated at `est` (from [`Placer::reading`]), with the latch register's
    /// value read in the same poll cycle, when there is one.
    pub fn place(&mut self, est: Instant, latch: Option<u64>) -> Edge {
        let estimate = Edge { at: est, position: self.position_at(est).map(|c| c.round() as i64), latched: false };
        let Some(raw) = latch else { return estimate };
        if self.last_latch == Some(raw) {
            self.latch_failed(
                "the trigger's latch register holds the same count as for the last part (is the PLC latching the encoder at the photo-eye edge?); the edge is estimated instead",
            );
            return estimate;
        }
        self.last_latch = Some(raw);
        if let Some((away, parts)) = self.latch_log.recovered(Instant::now().into_std()) {
            tracing::info!(away_s = away.as_secs(), parts, "the trigger's latch register works again");
        }
        match self.unwrap_latch(raw) {
            Some(counts) => Edge { at: self.time_at(counts).unwrap_or(est), position: Some(counts), latched: true },
            None => estimate, // no encoder reading yet
        }
    }
}

/// Latched counts that change without a photo-eye edge: parts the poll did not see.
#[derive(Debug, Default)]
pub struct LatchWatch {
    /// The latch register's last reading (its `reads` counter and value).
    seen: Option<(u64, u64)>,
    /// Whether that value had held since the reading before: a capture register holds its
    /// count between parts, a live counter (a misconfigured point) moves on every poll.
    held: bool,
    /// When the last part made from the latch alone was, by the latch reading's time, until the
    /// next photo-eye edge: that edge, with the same latched count, is that part.
    made_at: Option<Instant>,
    /// When the last part placed by estimate (no latch read for its edge) was: a new latched
    /// count just after it is that part's late latch, not another part.
    estimated_at: Option<Instant>,
    /// Latch-only parts in a row with no photo-eye edge between them.
    streak: u32,
}

/// Latch-only parts in a row that are worth a warning: a healthy line shows nearly every edge on
/// the photo-eye. They are still parts: dropping them would let parts pass uninspected.
const LATCH_ONLY_STREAK: u32 = 5;

impl LatchWatch {
    /// Whether a photo-eye edge read at `read_at`, whose latch is `raw`, is the part already
    /// made from that latch (`last` is the placer's last used latch): the first edge after a
    /// latch-only part, with its count, within a few polls. The window is generous (a stalled
    /// poller reads the eye late): counting the part twice would hand it the next part's frame.
    pub fn claims(&mut self, raw: Option<u64>, last: Option<u64>, read_at: Instant, poll: Duration) -> bool {
        let window = poll * 4 + Duration::from_millis(100);
        let made =
            raw.is_some() && raw == last && self.made_at.take().is_some_and(|m| read_at >= m && read_at - m <= window);
        if made {
            self.streak = 0; // the photo-eye works, a poll late
        }
        made
    }

    /// A photo-eye edge made a part; `latched` is whether its latch was read.
    pub fn edge(&mut self, at: Instant, latched: bool) {
        self.streak = 0;
        self.made_at = None;
        if !latched {
            self.estimated_at = Some(at);
        }
    }

    /// A reading of the latch register. Returns the raw count when it is a part the photo-eye
    /// did not show: a new value after a held one (not the first reading, not the last used
    /// latch), not the late latch of a part just placed by estimate.
    pub fn reading(&mut self, s: &Sample, last: Option<u64>, poll: Duration) -> Option<u64> {
        if s.quality != Quality::Good {
            return None;
        }
        let (raw, read_at) = (s.as_u64()?, s.read_at?);
        let prev = match self.seen.replace((s.reads, raw)) {
            Some((reads, _)) if reads == s.reads => return None, // the same reading again
            Some((_, prev)) => prev,
            None => return None, // where the count stands, not a part
        };
        let held = std::mem::replace(&mut self.held, prev == raw);
        if prev == raw || last == Some(raw) || !held {
            return None;
        }
        if self.estimated_at.take().is_some_and(|e| read_at >= e && read_at - e <= poll * 4) {
            return None;
        }
        self.streak += 1;
        if self.streak == LATCH_ONLY_STREAK {
            tracing::warn!(
                "{LATCH_ONLY_STREAK} parts in a row came from the trigger's latch alone, with no photo-eye edge seen: are the photo-eye's pulses shorter than the poll interval, or is `latch` not the capture register of this photo-eye?"
            );
        }
        self.made_at = Some(read_at);
        Some(raw)
    }
}

/// What a trigger reads besides its point.
pub struct LineInputs {
    /// The trigger point's poll interval.
    pub poll: Duration,
    /// The line's position (from [`super::encoder::follow`]) and its counter type.
    pub encoder: Option<(watch::Receiver<Option<Position>>, PointType)>,
    /// The latch register: the encoder count at the photo-eye's edge.
    pub latch: Option<watch::Receiver<Sample>>,
}

/// The latch's value from the poll cycle of the trigger reading at `t` (read after it), waiting
/// at most `within`. None when it does not come or cannot be read.
async fn latch_after(rx: &mut watch::Receiver<Sample>, t: Instant, within: Duration) -> Option<u64> {
    let deadline = Instant::now() + within;
    loop {
        {
            let s = rx.borrow_and_update();
            if s.quality == Quality::Good && s.read_at.is_some_and(|r| r >= t) {
                return s.as_u64();
            }
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => return None,
        }
    }
}

/// Parts waiting for their frame at most; more than a line holds between a trigger and its
/// camera's frame, unless the camera is gone.
pub const MAX_WAITING: usize = 1024;

/// Run until the point's poller stops.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    camera: Arc<str>,
    mut point: watch::Receiver<Sample>,
    mut detector: Detector,
    inputs: LineInputs,
    waiting: Waiting,
    events: Announcer,
    stats: Arc<TaskStats>,
    control: Arc<TaskControl>,
) {
    let mut next_id: u64 = 1;
    let mut last_reads = 0;
    let enc_ty = inputs.encoder.as_ref().map_or(PointType::U32, |e| e.1);
    let mut placer = Placer::new(inputs.poll, enc_ty);
    let mut encoder = inputs.encoder.map(|e| e.0);
    let mut latch = inputs.latch;
    let mut latch_watch = LatchWatch::default();
    loop {
        if let Some(p) = encoder.as_mut().and_then(|e| *e.borrow_and_update()) {
            placer.encoder(p);
        }
        let (parts, at) = {
            let s = point.borrow_and_update();
            if s.reads == last_reads && s.quality == Quality::Good {
                (0, None) // the same reading seen again
            } else {
                last_reads = s.reads;
                let parts = detector.update(&s);
                let est = s.read_at.filter(|_| s.quality == Quality::Good).map(|t| (t, placer.reading(t)));
                (parts, est)
            }
        };
        let (mut parts, mut edge) = (parts, None);
        if let (1.., Some((read_at, est))) = (parts, at) {
            let latched = match latch.as_mut() {
                // The latch register is read after the trigger point in the same cycle.
                Some(rx) => {
                    let v = latch_after(rx, read_at, inputs.poll * 2 + Duration::from_millis(50)).await;
                    if v.is_none() {
                        placer.latch_failed("the trigger's latch register was not read after its edge (is it polled?); the edge is estimated instead");
                    }
                    v
                }
                None => None,
            };
            if let Some(p) = encoder.as_mut().and_then(|e| *e.borrow_and_update()) {
                placer.encoder(p);
            }
            if latch_watch.claims(latched, placer.last_latch(), read_at, inputs.poll) {
                parts = 0; // the edge came a poll after its latch, which already made the part
            } else {
                let e = placer.place(est, latched);
                latch_watch.edge(read_at, e.latched);
                edge = Some(e);
            }
        }
        // A latched count with no edge seen for it: the photo-eye pulse went by between polls.
        if let (0, Some(rx)) = (parts, latch.as_mut()) {
            let made = latch_watch.reading(&rx.borrow_and_update(), placer.last_latch(), inputs.poll);
            if let Some(raw) = made {
                if let Some(p) = encoder.as_mut().and_then(|e| *e.borrow_and_update()) {
                    placer.encoder(p);
                }
                let e = placer.place(Instant::now(), Some(raw));
                if e.latched {
                    tracing::debug!(raw, "a part from its latched count alone (the photo-eye pulse was not seen)");
                    stats.triggers_from_latch.fetch_add(1, Ordering::Relaxed);
                    (parts, edge) = (1, Some(e));
                }
            }
        }
        for _ in 0..parts {
            let captured = edge.map(|e| e.at.into_std()).unwrap_or_else(std::time::Instant::now);
            let part = PartInfo {
                camera: camera.clone(),
                part_id: next_id,
                captured,
                position: edge.and_then(|e| e.position),
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
        tokio::select! {
            r = point.changed() => if r.is_err() {
                return;
            },
            r = async { encoder.as_mut().expect("guarded").changed().await }, if encoder.is_some() => if r.is_err() {
                encoder = None;
            },
            r = async { latch.as_mut().expect("guarded").changed().await }, if latch.is_some() => if r.is_err() {
                latch = None;
            },
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

    fn pos(counts: i64, raw: u64, at: Instant, speed: f64) -> Position {
        Position { counts, at, speed, raw }
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_latch_the_edge_is_midway_between_readings() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut p = Placer::new(Duration::from_millis(2), PointType::U32);
        // Encoder at 10,000 counts/s, read every 2 ms.
        for i in 0..4u64 {
            p.encoder(pos(20 * i as i64, 20 * i, ms(2 * i), 10_000.0));
        }
        assert_eq!(p.reading(ms(2)), ms(1), "no previous reading: half a poll before");
        let est = p.reading(ms(4));
        assert_eq!(est, ms(3));
        let e = p.place(est, None);
        assert_eq!(e, Edge { at: ms(3), position: Some(30), latched: false });
        // A previous reading long ago (an outage) is not used.
        assert_eq!(p.reading(ms(100)), ms(99));
        // Past the last reading, the speed carries the position on.
        assert_eq!(p.position_at(ms(10)), Some(100.0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_latch_places_the_part_exactly_across_the_wrap() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut p = Placer::new(Duration::from_millis(2), PointType::U32);
        let top = u64::from(u32::MAX);
        // 10,000 counts/s through the u32 wrap: raw top-9 at 0 ms, 10 at 2 ms (20 counts on).
        p.encoder(pos(1000, top - 9, ms(0), 10_000.0));
        p.encoder(pos(1020, 10, ms(2), 10_000.0));
        let est = p.reading(ms(2));
        // Latched at raw 4: 14 counts after the first reading, 1.4 ms.
        let e = p.place(est, Some(4));
        assert_eq!(e, Edge { at: ms(0) + Duration::from_micros(1400), position: Some(1014), latched: true });
        // The PLC did not latch the next edge: the same count again is not trusted.
        let e2 = p.place(ms(3), Some(4));
        assert!(!e2.latched, "{e2:?}");
        // A latch before the first reading is placed back in time by the speed.
        assert_eq!(p.time_at(990), Some(ms(0) - Duration::from_millis(1)));
        // Standing still there: no time.
        let mut q = Placer::new(Duration::from_millis(2), PointType::U16);
        q.encoder(pos(0, 65_530, ms(0), 0.0));
        assert_eq!(q.unwrap_latch(2), Some(8), "u16 wrap");
        assert_eq!(q.time_at(8), None);
        assert_eq!(q.place(ms(1), Some(2)), Edge { at: ms(1), position: Some(8), latched: true });
    }

    #[tokio::test(start_paused = true)]
    async fn a_triggered_part_gets_its_latched_position_read_in_the_same_cycle() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let good = |v: Value, at: Instant, reads: u64| Sample {
            value: Some(v),
            quality: Quality::Good,
            read_at: Some(at),
            read_wall: None,
            error: None,
            reads,
        };
        let (eye_tx, eye_rx) = watch::channel(good(Value::Bool(false), ms(0), 1));
        let (latch_tx, latch_rx) = watch::channel(good(Value::UInt(0), ms(0), 1));
        let (enc_tx, enc_rx) = watch::channel(Some(pos(0, 5000, ms(0), 10_000.0)));
        let inputs = LineInputs {
            poll: Duration::from_millis(2),
            encoder: Some((enc_rx, PointType::U32)),
            latch: Some(latch_rx),
        };
        let (events, mut announced) = Announcer::channel(16, Default::default());
        let stats = Arc::new(TaskStats::default());
        let detector = Detector::new(TriggerOn::RisingEdge, PointType::Bool);
        let task =
            tokio::spawn(run("cam".into(), eye_rx, detector, inputs, Default::default(), events, stats, control()));
        tokio::time::sleep(Duration::from_millis(2)).await;
        enc_tx.send(Some(pos(20, 5020, ms(2), 10_000.0))).unwrap();
        eye_tx.send(good(Value::Bool(false), ms(2), 2)).unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        // The eye is on at 4 ms; the latch (read right after it) says the edge was at raw 5027.
        eye_tx.send(good(Value::Bool(true), ms(4), 3)).unwrap();
        tokio::time::sleep(Duration::from_micros(300)).await;
        assert!(announced.try_recv().is_err(), "the part waits for the latch of its cycle");
        enc_tx.send(Some(pos(40, 5040, ms(4), 10_000.0))).unwrap();
        latch_tx.send(good(Value::UInt(5027), ms(4) + Duration::from_micros(300), 2)).unwrap();
        let Some(PartEvent::Captured(p)) = announced.recv().await else { panic!("no part") };
        assert_eq!(p.position, Some(27));
        assert_eq!(tokio::time::Instant::from_std(p.captured), ms(2) + Duration::from_micros(700));
        // The next edge, whose latch never comes: placed midway, from the encoder.
        eye_tx.send(good(Value::Bool(false), ms(6), 4)).unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        eye_tx.send(good(Value::Bool(true), ms(8), 5)).unwrap();
        let Some(PartEvent::Captured(p)) = announced.recv().await else { panic!("no part") };
        assert_eq!(tokio::time::Instant::from_std(p.captured), ms(7));
        assert_eq!(p.position, Some(70));
        drop(eye_tx);
        task.await.unwrap();
    }

    /// The trigger task with a photo-eye, an encoder at 10,000 counts/s and a latch, all read
    /// every 2 ms; `cycle(eye, latch)` is one poll cycle.
    struct Line {
        t0: Instant,
        n: u64,
        eye: watch::Sender<Sample>,
        latch: watch::Sender<Sample>,
        enc: watch::Sender<Option<Position>>,
        announced: tokio::sync::mpsc::Receiver<PartEvent>,
        stats: Arc<TaskStats>,
        task: tokio::task::JoinHandle<()>,
    }

    fn good(v: Value, at: Instant, reads: u64) -> Sample {
        Sample { value: Some(v), quality: Quality::Good, read_at: Some(at), read_wall: None, error: None, reads }
    }

    impl Line {
        fn start() -> Line {
            let t0 = Instant::now();
            let (eye, eye_rx) = watch::channel(good(Value::Bool(false), t0, 1));
            let (latch, latch_rx) = watch::channel(good(Value::UInt(100), t0, 1));
            let (enc, enc_rx) = watch::channel(Some(pos(0, 0, t0, 10_000.0)));
            let inputs = LineInputs {
                poll: Duration::from_millis(2),
                encoder: Some((enc_rx, PointType::U32)),
                latch: Some(latch_rx),
            };
            let (events, announced) = Announcer::channel(64, Default::default());
            let stats = Arc::new(TaskStats::default());
            let detector = Detector::new(TriggerOn::RisingEdge, PointType::Bool);
            let task = tokio::spawn(run(
                "cam".into(),
                eye_rx,
                detector,
                inputs,
                Default::default(),
                events,
                stats.clone(),
                control(),
            ));
            Line { t0, n: 1, eye, latch, enc, announced, stats, task }
        }

        /// One poll cycle 2 ms after the last: encoder, eye, then latch (as one poll group reads them).
        async fn cycle(&mut self, eye: bool, latch: u64) {
            tokio::time::sleep(Duration::from_millis(2)).await;
            self.n += 1;
            let at = self.t0 + Duration::from_millis(2 * (self.n - 1));
            let counts = 20 * (self.n - 1);
            self.enc.send(Some(pos(counts as i64, counts, at, 10_000.0))).unwrap();
            self.eye.send(good(Value::Bool(eye), at, self.n)).unwrap();
            tokio::task::yield_now().await;
            self.latch.send(good(Value::UInt(latch), at + Duration::from_micros(200), self.n)).unwrap();
            for _ in 0..5 {
                tokio::task::yield_now().await;
            }
        }

        /// Started, and three poll cycles with the eye off and the latch at rest (100).
        async fn resting() -> Line {
            let mut l = Line::start();
            for _ in 0..3 {
                l.cycle(false, 100).await;
            }
            l
        }

        /// `n` poll cycles that never happen (the poller stalled).
        fn stall(&mut self, n: u64) {
            self.n += n;
        }

        fn parts(&mut self) -> Vec<Option<i64>> {
            let mut v = Vec::new();
            while let Ok(e) = self.announced.try_recv() {
                if let PartEvent::Captured(p) = e {
                    v.push(p.position);
                }
            }
            v
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_latched_count_with_no_edge_seen_is_a_part_at_that_count() {
        let mut l = Line::resting().await;
        // The photo-eye pulse fell between two polls; the PLC latched it at 130.
        l.cycle(false, 130).await;
        l.cycle(false, 130).await;
        assert_eq!(l.parts(), vec![Some(130)]);
        assert_eq!(l.stats.triggers_from_latch.load(Ordering::Relaxed), 1);
        // The next part is seen on the eye and latched in the same cycle: one part, not two.
        l.cycle(true, 250).await;
        l.cycle(true, 250).await;
        l.cycle(false, 250).await;
        assert_eq!(l.parts(), vec![Some(250)]);
        // The edge fell between the eye's read and the latch's: the latch shows it a cycle
        // before the eye does. Still one part.
        l.cycle(false, 310).await;
        l.cycle(true, 310).await;
        l.cycle(false, 310).await;
        assert_eq!(l.parts(), vec![Some(310)]);
        assert_eq!(l.stats.triggers.load(Ordering::Relaxed), 3);
        assert_eq!(l.stats.triggers_from_latch.load(Ordering::Relaxed), 2);
        drop(l.eye);
        l.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_edge_read_late_after_a_stalled_poll_is_still_the_latched_part() {
        let mut l = Line::resting().await;
        // The edge fell between the eye's read and the latch's; then the poller stalled for
        // 30 ms, and the eye (still on) shows the edge only after it.
        l.cycle(false, 400).await;
        l.stall(15);
        l.cycle(true, 400).await;
        l.cycle(false, 400).await;
        assert_eq!(l.parts(), vec![Some(400)], "one part, not a second from the late edge");
        // The next part's edge, latched: a part of its own.
        l.cycle(true, 900).await;
        l.cycle(false, 900).await;
        assert_eq!(l.parts(), vec![Some(900)]);
        drop(l.eye);
        l.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_latch_that_moves_by_itself_makes_no_parts() {
        let mut l = Line::start();
        // A live counter configured as the latch: a new value every poll. No part from it.
        for i in 0..20 {
            l.cycle(false, 110 + 20 * i).await;
        }
        assert_eq!(l.parts(), Vec::<Option<i64>>::new());
        // A latch that holds and jumps with no edge ever seen: every jump is a part (warned
        // about after five in a row, never dropped: a part must not pass uninspected).
        let mut v = 1000;
        for _ in 0..10 {
            l.cycle(false, v).await;
            l.cycle(false, v).await;
            v += 40;
        }
        assert_eq!(l.parts().len(), 9, "every held count after the first");
        drop(l.eye);
        l.task.await.unwrap();
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
        let inputs = LineInputs { poll: Duration::from_millis(2), encoder: None, latch: None };
        let task =
            tokio::spawn(run("cam".into(), rx, detector, inputs, waiting.clone(), events, stats.clone(), control()));
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
