//! The reject gate: a shift register of the parts between camera and gate.
//!
//! One task owns one gate output. Every part enters the register when it is
//! announced (trigger or capture), with its arrival at the gate as a time
//! (`delay` after the trigger) or an encoder count (`distance` after the
//! trigger). Its verdict follows when inference has judged it. When a part
//! arrives:
//! - NG or ERROR: the gate fires (on, `pulse`, off);
//! - OK: nothing;
//! - no verdict yet: a deadline miss, counted, and the configured action
//!   (reject by default: nothing passes uninspected).
//!
//! Overlapping pulses merge: the output stays on until the last one ends,
//! instead of switching off under a part that must be thrown out. While the
//! line stands (the line-running input is off), time-scheduled parts freeze
//! and resume with it; count-scheduled parts follow the encoder anyway.
//!
//! Timing: tokio's timer has a 1 ms resolution, which alone would put the
//! p99 firing error above 1 ms. With `precise`, the task sleeps on tokio's
//! timer until shortly before the arrival and hands the rest to a blocking
//! thread's `nanosleep` (the kernel's high-resolution timer): sub-millisecond
//! without burning a core, which spinning on the clock did (it cost the
//! pipeline 15 % of its throughput on two cores). Tests on tokio's paused
//! clock turn it off.
//!
//! A write takes time to reach the device: half a round trip, and the wait
//! behind a poll already on the wire. The output measures it on its last
//! writes ([`Actuator::lead`], the median), and the gate sends each "on" that
//! much before the part is due, so that it lands when the part does.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};

use crate::config::MissAction;
use crate::part::actuator::Actuator;
use crate::part::sample::{Position, Quality, Sample};
use crate::stats::TaskStats;

/// Where a part reaches the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// At this time (while the line runs).
    Time(Instant),
    /// When the encoder reaches this position.
    Counts(i64),
}

/// What happened to a part at the gate.
#[derive(Debug, Clone, PartialEq)]
pub enum GateOutcome {
    /// Thrown out: the device acknowledged the "on" write at `acked_at`,
    /// `late` after the part's arrival. `deadline_miss`: its verdict was not
    /// ready at the gate, and it was thrown out for that.
    Fired { acked_at: Instant, late: Duration, deadline_miss: bool },
    /// A good part went by.
    Passed,
    /// Its verdict was not ready and the configured action is to pass it.
    PassedUninspected,
    /// The "on" write failed, or the gate stopped first: the part may have passed.
    Failed(String),
}

/// How a gate behaves.
pub struct GateSettings {
    pub pulse: Duration,
    pub on_deadline_miss: MissAction,
    /// Spin for the last stretch before an arrival (see the module docs).
    pub precise: bool,
    /// The line's position, for count arrivals.
    pub encoder: Option<watch::Receiver<Option<Position>>>,
    /// The line-running input.
    pub running: Option<watch::Receiver<Sample>>,
    /// A sensor that must confirm each pulse within the window.
    pub confirm: Option<(watch::Receiver<Sample>, Duration)>,
}

impl GateSettings {
    pub fn timed(pulse: Duration) -> Self {
        GateSettings {
            pulse,
            on_deadline_miss: MissAction::Reject,
            precise: false,
            encoder: None,
            running: None,
            confirm: None,
        }
    }
}

enum Cmd {
    Enter { part_id: u64, arrival: Arrival, reply: oneshot::Sender<GateOutcome> },
    Verdict { part_id: u64, reject: bool },
    Hold { until: Arrival, reply: oneshot::Sender<Result<(), String>> },
}

/// A handle to send parts to the gate task.
#[derive(Clone)]
pub struct Gate {
    tx: mpsc::Sender<Cmd>,
    stats: Arc<TaskStats>,
}

/// Commands waiting for the gate task: far more than the parts between a camera and its gate on
/// any line. The gate task takes them at once; only a stuck one fills this, and then the
/// controller is never made to wait on it: an entry is reported as a failed reject, a verdict as
/// `gate_overflows` (the part is then "uninspected" at the gate: `on_deadline_miss` applies).
pub const GATE_BUFFER: usize = 8192;

impl Gate {
    /// Start the task that owns `output`. It ends when every `Gate` is
    /// dropped and every part that can still arrive has arrived.
    pub fn start(
        output: Arc<dyn Actuator>,
        settings: GateSettings,
        stats: Arc<TaskStats>,
    ) -> (Gate, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(GATE_BUFFER);
        let task = tokio::spawn(run(output, settings, stats.clone(), rx));
        (Gate { tx, stats }, task)
    }

    /// A part entered the register; the receiver yields what happened to it at the gate.
    pub fn enter(&self, part_id: u64, arrival: Arrival) -> oneshot::Receiver<GateOutcome> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Cmd::Enter { part_id, arrival, reply }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Cmd::Enter { reply, .. })) => {
                self.stats.gate_overflows.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(GateOutcome::Failed(format!(
                    "reject gate queue full ({GATE_BUFFER} commands): the gate task is stuck"
                )));
            }
            Err(mpsc::error::TrySendError::Closed(Cmd::Enter { reply, .. })) => {
                let _ = reply.send(GateOutcome::Failed("reject gate task has stopped".into()));
            }
            Err(_) => unreachable!("an Enter was sent"),
        }
        rx
    }

    /// The part's verdict: whether it must be thrown out.
    pub fn verdict(&self, part_id: u64, reject: bool) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(Cmd::Verdict { part_id, reject }) {
            self.stats.gate_overflows.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Hold the gate in reject from now until `until`, whatever the parts' verdicts (the
    /// purge after an unclean stop: parts judged before it, or never judged, are between the
    /// camera and the gate, and none may pass). `until` counts like a part's arrival: a time
    /// stands still while the line stands (the parts on the belt do not move), a position waits
    /// for the encoder. Pulses during the hold merge with it; the gate goes off at the later of
    /// the two (a position hold adds one pulse, so the last part is thrown out, not just reached).
    /// Resolves once the "on" write was answered.
    pub async fn hold(&self, until: Arrival) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Hold { until, reply }).await.map_err(|_| "reject gate task has stopped".to_string())?;
        rx.await.unwrap_or_else(|_| Err("reject gate task has stopped".into()))
    }
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Time(Instant),
    /// Time left when the line stopped.
    Frozen(Duration),
    Counts(i64),
}

struct Entry {
    slot: Slot,
    /// Order of entry, to keep parts in line order when arrivals tie.
    seq: u64,
    verdict: Option<bool>,
    reply: oneshot::Sender<GateOutcome>,
}

/// How long before an arrival the precise wait leaves tokio's timer (which
/// may fire up to about 1 ms late, more on a busy machine).
const TIMER_LEAD: Duration = Duration::from_micros(2_000);
const OFF_RETRY_MIN: Duration = Duration::from_millis(50);

struct State {
    output: Arc<dyn Actuator>,
    s: GateSettings,
    stats: Arc<TaskStats>,
    parts: HashMap<u64, Entry>,
    seq: u64,
    position: Option<Position>,
    running: bool,
    off_at: Option<Instant>,
    off_retry: Duration,
    /// (pulse start, confirmation deadline) of pulses not yet confirmed.
    confirms: Vec<(Instant, Instant)>,
    /// Parts that went by without a verdict, so the late verdict is recognised.
    missed: std::collections::VecDeque<u64>,
    /// Last state of the confirmation sensor.
    confirm_on: bool,
    /// A purge in progress: until when (or where) the gate stays on whatever the verdicts.
    hold: Option<Slot>,
    /// The output is on by an "on" the device acknowledged, and no "off" was written since. A
    /// part that reaches the gate meanwhile is covered by stretching the pulse: another "on"
    /// would change nothing at the device and spend the output's write budget (its rate
    /// limit), which dense rejects (a bad batch) would otherwise run into.
    on: bool,
}

async fn run(output: Arc<dyn Actuator>, settings: GateSettings, stats: Arc<TaskStats>, mut rx: mpsc::Receiver<Cmd>) {
    let mut encoder = settings.encoder.clone();
    let mut running_rx = settings.running.clone();
    let mut confirm_rx = settings.confirm.as_ref().map(|c| c.0.clone());
    let mut st = State {
        output,
        position: encoder.as_ref().and_then(|e| *e.borrow()),
        running: running_rx.as_ref().map(|r| line_running(&r.borrow())).unwrap_or(true),
        s: settings,
        stats,
        parts: HashMap::new(),
        seq: 0,
        off_at: None,
        off_retry: OFF_RETRY_MIN,
        confirms: Vec::new(),
        missed: std::collections::VecDeque::new(),
        confirm_on: confirm_rx.as_ref().is_some_and(|r| r.borrow().as_bool() == Some(true)),
        hold: None,
        on: false,
    };
    let mut open = true;
    loop {
        let now = Instant::now();
        st.process(now).await;
        if !open
            && st.off_at.is_none()
            && st.confirms.is_empty()
            && !st.parts.values().any(|e| matches!(e.slot, Slot::Time(_)))
            && !matches!(st.hold, Some(Slot::Time(_)))
        {
            // Nothing more can arrive by time; parts waiting for an encoder
            // that no longer moves will not arrive before the stop.
            for (id, e) in st.parts.drain() {
                tracing::warn!(output = %st.output.name(), part = id, "stopping before the part reached the gate");
                let _ = e.reply.send(GateOutcome::Failed("linesight stopped before the part reached the gate".into()));
            }
            return;
        }
        let next = st.next_event();
        let wake = match next {
            Some(t) if st.s.precise => Some(t.checked_sub(TIMER_LEAD).unwrap_or(t)),
            other => other,
        };
        tokio::select! {
            biased;
            cmd = rx.recv(), if open => match cmd {
                Some(Cmd::Enter { part_id, arrival, reply }) => st.enter(part_id, arrival, reply),
                Some(Cmd::Verdict { part_id, reject }) => st.verdict(part_id, reject),
                Some(Cmd::Hold { until, reply }) => {
                    let _ = reply.send(st.hold(until).await);
                }
                None => open = false,
            },
            _ = sleep_until(wake.unwrap_or(now)), if wake.is_some() => {
                if let Some(t) = next {
                    if st.s.precise {
                        fine_sleep_until(t).await;
                    }
                }
            }
            r = changed(&mut encoder) => match r {
                Some(p) => st.position = p,
                None => encoder = None,
            },
            r = changed(&mut running_rx) => match r {
                Some(s) => st.set_running(line_running(&s)),
                None => running_rx = None,
            },
            r = changed(&mut confirm_rx) => match r {
                Some(s) => st.confirmed(&s),
                None => confirm_rx = None,
            },
        }
    }
}

/// The next value of an optional watch; None when its sender is gone. Pends
/// forever without a receiver, so it can sit in a `select!`.
async fn changed<T: Clone>(rx: &mut Option<watch::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => match r.changed().await {
            Ok(()) => Some(r.borrow_and_update().clone()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

/// Whether the line runs, from the running input. A bad or missing reading
/// keeps nothing frozen: better to fire on time than to hold parts forever.
fn line_running(s: &Sample) -> bool {
    s.quality != Quality::Good || s.as_bool().unwrap_or(true)
}

/// The last stretch before `t`: the kernel's high-resolution timer (a
/// blocking thread's `nanosleep`) up to `SPIN_LAST` before it, then the
/// clock itself. Handing back from the blocking thread takes ~0.1-0.3 ms,
/// which the short spin absorbs at a cost of about `SPIN_LAST` CPU per part.
async fn fine_sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now + SPIN_LAST {
        let d = t - now - SPIN_LAST;
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(d)).await;
    }
    while Instant::now() < t {
        tokio::task::yield_now().await;
    }
}

/// The part of the wait spent on the clock rather than a timer.
const SPIN_LAST: Duration = Duration::from_micros(400);

impl State {
    /// Where an arrival stands now: a time is frozen while the line stands.
    fn slot(&self, arrival: Arrival) -> Slot {
        match arrival {
            Arrival::Time(t) if self.running => Slot::Time(t),
            Arrival::Time(t) => Slot::Frozen(t.saturating_duration_since(Instant::now())),
            Arrival::Counts(c) => Slot::Counts(c),
        }
    }

    fn enter(&mut self, part_id: u64, arrival: Arrival, reply: oneshot::Sender<GateOutcome>) {
        self.seq += 1;
        let slot = self.slot(arrival);
        self.parts.insert(part_id, Entry { slot, seq: self.seq, verdict: None, reply });
    }

    async fn hold(&mut self, until: Arrival) -> Result<(), String> {
        let slot = self.slot(until);
        // A second hold lasts to the later end; a time and a position are not comparable, and
        // the newer one is kept (a purge is one per start).
        self.hold = Some(match (self.hold, slot) {
            (Some(Slot::Time(a)), Slot::Time(b)) => Slot::Time(a.max(b)),
            (Some(Slot::Frozen(a)), Slot::Frozen(b)) => Slot::Frozen(a.max(b)),
            (Some(Slot::Counts(a)), Slot::Counts(b)) => Slot::Counts(a.max(b)),
            (_, s) => s,
        });
        let r = self.output.set(true).await;
        match &r {
            Ok(()) => {
                self.on = true;
                self.stats.purges.fetch_add(1, Ordering::Relaxed)
            }
            // The off-time stays: whatever the write did, the gate is switched off at `until`.
            Err(e) => {
                tracing::error!(output = %self.output.name(), error = %e, "reject gate could not be held on for the purge");
                0
            }
        };
        r
    }

    fn verdict(&mut self, part_id: u64, reject: bool) {
        match self.parts.get_mut(&part_id) {
            Some(e) => e.verdict = Some(reject),
            None => {
                if let Some(i) = self.missed.iter().position(|&p| p == part_id) {
                    self.missed.remove(i);
                    tracing::warn!(output = %self.output.name(), part = part_id, reject, "verdict came after the part passed the gate");
                } else {
                    tracing::warn!(output = %self.output.name(), part = part_id, "verdict for a part the gate does not know");
                }
            }
        }
    }

    fn set_running(&mut self, running: bool) {
        if running == self.running {
            return;
        }
        self.running = running;
        let now = Instant::now();
        let thaw = |slot: Slot| match slot {
            Slot::Time(t) if !running => Slot::Frozen(t.saturating_duration_since(now)),
            Slot::Frozen(left) if running => Slot::Time(now + left),
            other => other,
        };
        for e in self.parts.values_mut() {
            e.slot = thaw(e.slot);
        }
        self.hold = self.hold.map(thaw);
        tracing::info!(output = %self.output.name(), running, "line {}: time-scheduled rejects {}", if running { "runs" } else { "stopped" }, if running { "resume" } else { "freeze" });
    }

    /// A rising edge of the confirmation sensor confirms the pulses started
    /// before it was read. An edge, not a level: a sensor stuck on must not
    /// confirm every pulse.
    fn confirmed(&mut self, s: &Sample) {
        if s.quality != Quality::Good {
            return;
        }
        let on = s.as_bool() == Some(true);
        if on && !self.confirm_on {
            if let Some(read_at) = s.read_at {
                self.confirms.retain(|(started, _)| *started > read_at);
            }
        }
        self.confirm_on = on;
    }

    /// When the part is due at the gate, if that can be known now.
    fn due(&self, slot: Slot) -> Option<Instant> {
        match slot {
            Slot::Time(t) => Some(t),
            Slot::Frozen(_) => None,
            Slot::Counts(c) => self.position.and_then(|p| p.eta(c)),
        }
    }

    /// When a part due at `due` is fired: the output's lead earlier (see [`Actuator::lead`]).
    fn fire_at(due: Instant, lead: Duration) -> Instant {
        due.checked_sub(lead).unwrap_or(due)
    }

    fn next_event(&self) -> Option<Instant> {
        let lead = self.output.lead();
        let parts = self.parts.values().filter_map(|e| self.due(e.slot).map(|t| Self::fire_at(t, lead)));
        let confirms = self.confirms.iter().map(|c| c.1);
        let hold = self.hold.and_then(|h| self.due(h));
        parts.chain(self.off_at).chain(confirms).chain(hold).min()
    }

    async fn process(&mut self, now: Instant) {
        let lead = self.output.lead();
        let mut arrived: Vec<(Instant, u64, u64)> = self
            .parts
            .iter()
            .filter_map(|(id, e)| self.due(e.slot).filter(|t| Self::fire_at(*t, lead) <= now).map(|t| (t, e.seq, *id)))
            .collect();
        arrived.sort();
        for (due, _, id) in arrived {
            let e = self.parts.remove(&id).expect("listed above");
            self.arrive(id, e, due, lead).await;
        }
        let now = Instant::now();
        let before = self.confirms.len();
        self.confirms.retain(|c| c.1 > now);
        let missing = before - self.confirms.len();
        if missing > 0 {
            self.stats.confirm_missing.fetch_add(missing as u64, Ordering::Relaxed);
            tracing::error!(output = %self.output.name(), pulses = missing, "ALARM: the reject gate did not confirm a pulse; check the gate and its sensor");
        }
        if let Some(h) = self.hold {
            if self.due(h).is_some_and(|t| t <= now) {
                self.hold = None;
                let end = if matches!(h, Slot::Counts(_)) { now + self.s.pulse } else { now };
                self.off_at = Some(self.off_at.map_or(end, |o| o.max(end)));
            }
        }
        if let Some(t) = self.off_at {
            // During a purge the gate stays on: the hold's end schedules the off.
            if t <= now && self.hold.is_none() {
                self.off_at = None;
                // Whatever the answer, the output is no longer known to be on.
                self.on = false;
                match self.output.set(false).await {
                    Ok(()) => self.off_retry = OFF_RETRY_MIN,
                    Err(e) => {
                        // Keep trying, with backoff (the link backs off too);
                        // at stop the safe-state write takes over.
                        if self.off_retry == OFF_RETRY_MIN {
                            tracing::error!(output = %self.output.name(), error = %e, "reject gate could not be switched off; retrying");
                        }
                        self.off_at = Some(Instant::now() + self.off_retry);
                        self.off_retry = (self.off_retry * 2).min(Duration::from_secs(1));
                    }
                }
            } else if t <= now {
                self.off_at = None;
            }
        }
    }

    async fn arrive(&mut self, part_id: u64, e: Entry, due: Instant, lead: Duration) {
        let (fire, miss) = match e.verdict {
            Some(reject) => (reject, false),
            None => {
                self.stats.deadline_misses.fetch_add(1, Ordering::Relaxed);
                self.missed.push_back(part_id);
                if self.missed.len() > 1024 {
                    self.missed.pop_front();
                }
                let fire = self.s.on_deadline_miss == MissAction::Reject;
                tracing::error!(output = %self.output.name(), part = part_id, action = if fire { "reject" } else { "pass" }, "deadline miss: no verdict when the part reached the gate");
                (fire, true)
            }
        };
        if !fire {
            let _ = e.reply.send(if miss { GateOutcome::PassedUninspected } else { GateOutcome::Passed });
            return;
        }
        // Sent `lead` early, the write reaches the device about when the part reaches the gate.
        let start = Instant::now();
        let late = (start + lead).saturating_duration_since(due);
        let stretched = self.on;
        let outcome = if stretched {
            // On already (an earlier part's pulse, or a purge): the pulse covers this part too.
            GateOutcome::Fired { acked_at: start, late, deadline_miss: miss }
        } else {
            match self.output.set(true).await {
                Ok(()) => {
                    self.on = true;
                    GateOutcome::Fired { acked_at: Instant::now(), late, deadline_miss: miss }
                }
                Err(err) => {
                    tracing::error!(output = %self.output.name(), part = part_id, error = %err, "reject could not be written: the part may have passed the gate");
                    GateOutcome::Failed(err.to_string())
                }
            }
        };
        let end = start + self.s.pulse;
        self.off_at = Some(self.off_at.map_or(end, |o| o.max(end)));
        // A stretched pulse is the same pulse: its sensor edge confirms it once.
        if let (Some((_, within)), false) = (&self.s.confirm, stretched) {
            self.confirms.push((start, start + *within));
        }
        let _ = e.reply.send(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::part::actuator::testing::Recording;
    use crate::part::sample::Value;
    use std::time::SystemTime;

    #[tokio::test]
    async fn a_stuck_gate_task_never_makes_the_controller_wait_and_is_counted() {
        // A gate whose task takes nothing (stuck): its queue fills, and then every entry is
        // answered at once as a failed reject, every verdict counted.
        let stats = Arc::new(TaskStats::default());
        let (tx, _stuck) = mpsc::channel(GATE_BUFFER);
        let gate = Gate { tx, stats: stats.clone() };
        for id in 0..GATE_BUFFER as u64 {
            drop(gate.enter(id, Arrival::Time(Instant::now())));
        }
        let outcome = gate.enter(u64::MAX, Arrival::Time(Instant::now())).await.unwrap();
        assert!(matches!(&outcome, GateOutcome::Failed(e) if e.contains("queue full")), "{outcome:?}");
        gate.verdict(u64::MAX, true);
        assert_eq!(stats.gate_overflows.load(Ordering::Relaxed), 2);
    }

    fn setup(settings: GateSettings) -> (Arc<Recording>, Gate, tokio::task::JoinHandle<()>, Arc<TaskStats>) {
        let rec = Recording::new();
        let stats = Arc::new(TaskStats::default());
        let (gate, task) = Gate::start(rec.clone(), settings, stats.clone());
        (rec, gate, task, stats)
    }

    fn ms_since(rec: &Recording, t0: Instant) -> Vec<(u64, bool)> {
        rec.writes().iter().map(|(t, on)| ((*t - t0).as_millis() as u64, *on)).collect()
    }

    fn sample(v: Value, at: Instant) -> Sample {
        Sample {
            value: Some(v),
            quality: Quality::Good,
            read_at: Some(at),
            read_wall: Some(SystemTime::now()),
            error: None,
            reads: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pulses_fire_at_arrival_and_overlaps_merge() {
        let (rec, gate, task, _) = setup(GateSettings::timed(Duration::from_millis(80)));
        let t0 = Instant::now();
        let ms = |n| Arrival::Time(t0 + Duration::from_millis(n));
        // Entered out of order: the gate must still fire part 2 first.
        let a = gate.enter(1, ms(300));
        let b = gate.enter(2, ms(200));
        let c = gate.enter(3, ms(340));
        let ok = gate.enter(4, ms(250));
        for id in [1, 2, 3] {
            gate.verdict(id, true);
        }
        gate.verdict(4, false);
        for rx in [b, a, c] {
            match rx.await.unwrap() {
                GateOutcome::Fired { late, deadline_miss, .. } => {
                    assert_eq!((late, deadline_miss), (Duration::ZERO, false))
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(ok.await.unwrap(), GateOutcome::Passed);
        drop(gate);
        task.await.unwrap();
        // on at 200, off at 280; on at 300, stretched over part 3 at 340 (no second write: the
        // output is on), off at 420.
        assert_eq!(ms_since(&rec, t0), vec![(200, true), (280, false), (300, true), (420, false)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pulse_is_stretched_only_over_an_on_the_device_acknowledged() {
        let (rec, gate, task, _) = setup(GateSettings::timed(Duration::from_millis(80)));
        let t0 = Instant::now();
        let ms = |n| Arrival::Time(t0 + Duration::from_millis(n));
        let (a, b) = (gate.enter(1, ms(100)), gate.enter(2, ms(120)));
        gate.verdict(1, true);
        gate.verdict(2, true);
        rec.fail.store(true, Ordering::Relaxed);
        assert!(matches!(a.await.unwrap(), GateOutcome::Failed(_)));
        rec.fail.store(false, Ordering::Relaxed);
        // Part 1's "on" failed: part 2, inside part 1's pulse time, is written, not stretched.
        assert!(matches!(b.await.unwrap(), GateOutcome::Fired { .. }));
        drop(gate);
        task.await.unwrap();
        assert_eq!(ms_since(&rec, t0), vec![(120, true), (200, false)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_part_without_a_verdict_at_the_gate_is_a_deadline_miss() {
        let (rec, gate, task, stats) = setup(GateSettings::timed(Duration::from_millis(20)));
        let t0 = Instant::now();
        let rx = gate.enter(5, Arrival::Time(t0 + Duration::from_millis(100)));
        match rx.await.unwrap() {
            GateOutcome::Fired { deadline_miss, .. } => assert!(deadline_miss),
            other => panic!("{other:?}"),
        }
        // The verdict that comes afterwards changes nothing.
        gate.verdict(5, false);
        drop(gate);
        task.await.unwrap();
        assert_eq!(stats.deadline_misses.load(Ordering::Relaxed), 1);
        assert_eq!(ms_since(&rec, t0), vec![(100, true), (120, false)]);

        let mut pass = GateSettings::timed(Duration::from_millis(20));
        pass.on_deadline_miss = MissAction::Pass;
        let (rec, gate, _task, _) = setup(pass);
        let rx = gate.enter(6, Arrival::Time(Instant::now() + Duration::from_millis(10)));
        assert_eq!(rx.await.unwrap(), GateOutcome::PassedUninspected);
        assert!(rec.writes().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn time_rejects_freeze_while_the_line_stands() {
        let (run_tx, run_rx) = watch::channel(sample(Value::Bool(true), Instant::now()));
        let mut s = GateSettings::timed(Duration::from_millis(10));
        s.running = Some(run_rx);
        let (rec, gate, task, _) = setup(s);
        let t0 = Instant::now();
        let rx = gate.enter(1, Arrival::Time(t0 + Duration::from_millis(100)));
        gate.verdict(1, true);
        tokio::time::sleep(Duration::from_millis(40)).await;
        run_tx.send(sample(Value::Bool(false), Instant::now())).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(rec.writes().is_empty(), "nothing fires while the line stands");
        run_tx.send(sample(Value::Bool(true), Instant::now())).unwrap();
        assert!(matches!(rx.await.unwrap(), GateOutcome::Fired { .. }));
        drop(gate);
        task.await.unwrap();
        // 40 ms run + 500 ms stop + the remaining 60 ms.
        assert_eq!(ms_since(&rec, t0), vec![(600, true), (610, false)]);
    }

    #[tokio::test(start_paused = true)]
    async fn count_rejects_follow_the_encoder() {
        let t0 = Instant::now();
        let (enc_tx, enc_rx) = watch::channel(Some(Position { counts: 0, at: t0, speed: 0.0, raw: 0 }));
        let mut s = GateSettings::timed(Duration::from_millis(10));
        s.encoder = Some(enc_rx);
        let (rec, gate, task, _) = setup(s);
        let rx = gate.enter(1, Arrival::Counts(1000));
        gate.verdict(1, true);
        // Standing line: nothing happens, however long.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(rec.writes().is_empty());
        // Moving at 10,000 counts/s from 500 counts: due 50 ms after this reading.
        let at = Instant::now();
        enc_tx.send(Some(Position { counts: 500, at, speed: 10_000.0, raw: 500 })).unwrap();
        assert!(matches!(rx.await.unwrap(), GateOutcome::Fired { .. }));
        drop(gate);
        task.await.unwrap();
        assert_eq!(ms_since(&rec, t0), vec![(350, true), (360, false)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_confirmation_raises_an_alarm() {
        let (conf_tx, conf_rx) = watch::channel(sample(Value::Bool(false), Instant::now()));
        let mut s = GateSettings::timed(Duration::from_millis(20));
        s.confirm = Some((conf_rx, Duration::from_millis(50)));
        let (_rec, gate, task, stats) = setup(s);
        let t0 = Instant::now();
        let first = gate.enter(1, Arrival::Time(t0 + Duration::from_millis(10)));
        let second = gate.enter(2, Arrival::Time(t0 + Duration::from_millis(200)));
        gate.verdict(1, true);
        gate.verdict(2, true);
        first.await.unwrap();
        // The sensor sees the first pulse in time.
        tokio::time::sleep(Duration::from_millis(30)).await;
        conf_tx.send(sample(Value::Bool(true), Instant::now())).unwrap();
        second.await.unwrap();
        // ... but not the second.
        drop(gate);
        task.await.unwrap();
        assert_eq!(stats.confirm_missing.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_write_is_reported_not_hidden() {
        let (rec, gate, _task, _) = setup(GateSettings::timed(Duration::from_millis(5)));
        rec.fail.store(true, Ordering::Relaxed);
        let rx = gate.enter(9, Arrival::Time(Instant::now() + Duration::from_millis(10)));
        gate.verdict(9, true);
        assert!(matches!(rx.await.unwrap(), GateOutcome::Failed(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_keeps_the_gate_on_through_pulses_and_ends_at_the_later() {
        let (rec, gate, task, stats) = setup(GateSettings::timed(Duration::from_millis(50)));
        let t0 = Instant::now();
        gate.hold(Arrival::Time(t0 + Duration::from_millis(300))).await.unwrap();
        // A part rejected during the hold does not switch the gate off at its pulse's end...
        let a = gate.enter(1, Arrival::Time(t0 + Duration::from_millis(100)));
        gate.verdict(1, true);
        // ... and one whose pulse outlasts the hold extends it.
        let b = gate.enter(2, Arrival::Time(t0 + Duration::from_millis(280)));
        gate.verdict(2, true);
        for rx in [a, b] {
            assert!(matches!(rx.await.unwrap(), GateOutcome::Fired { .. }));
        }
        drop(gate);
        task.await.unwrap();
        // The hold's "on" covers both parts (stretched, not written again); off at 280 + 50.
        assert_eq!(ms_since(&rec, t0), vec![(0, true), (330, false)]);
        assert_eq!(stats.purges.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_purge_stands_still_while_the_line_stands() {
        let (run_tx, run_rx) = watch::channel(sample(Value::Bool(true), Instant::now()));
        let settings = GateSettings { running: Some(run_rx), ..GateSettings::timed(Duration::from_millis(30)) };
        let (rec, gate, task, _) = setup(settings);
        let t0 = Instant::now();
        gate.hold(Arrival::Time(t0 + Duration::from_millis(1000))).await.unwrap();
        // The line stands from 200 ms to 700 ms: the belt does not move, the hold does not count.
        tokio::time::sleep(Duration::from_millis(200)).await;
        run_tx.send(sample(Value::Bool(false), Instant::now())).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        run_tx.send(sample(Value::Bool(true), Instant::now())).unwrap();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        drop(gate);
        task.await.unwrap();
        assert_eq!(ms_since(&rec, t0), vec![(0, true), (1500, false)], "held 1000 ms of running line");
    }

    #[tokio::test(start_paused = true)]
    async fn a_purge_by_position_waits_for_the_encoder() {
        let (enc_tx, enc_rx) = watch::channel(Some(Position { counts: 0, at: Instant::now(), speed: 0.0, raw: 0 }));
        let settings = GateSettings { encoder: Some(enc_rx), ..GateSettings::timed(Duration::from_millis(30)) };
        let (rec, gate, task, _) = setup(settings);
        let t0 = Instant::now();
        gate.hold(Arrival::Counts(500)).await.unwrap();
        // Nothing moves for a second: the gate stays on.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(ms_since(&rec, t0), vec![(0, true)]);
        enc_tx.send(Some(Position { counts: 500, at: Instant::now(), speed: 0.0, raw: 500 })).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(gate);
        drop(enc_tx);
        task.await.unwrap();
        assert_eq!(ms_since(&rec, t0), vec![(0, true), (1030, false)], "off one pulse after the position");
    }
}
