//! The queue's one file writer: a thread that owns the [`Store`] and does all of its file I/O.
//!
//! # Why a thread
//!
//! An fsync can take hundreds of milliseconds on a slow or busy disk (an SD card, a drive
//! doing its own housekeeping). Run on a tokio worker, it holds that worker; the reject gates'
//! timers share those workers. Here no file I/O of the queue ever runs on the async runtime: the
//! MQTT session hands requests to this thread and reads its answers, and neither side ever waits
//! for the other on the inspection path.
//!
//! # How it is used
//!
//! The async side holds a [`Writer`]. It hands over [`Request`]s with [`Writer::try_send`], which
//! never waits: a full channel (the disk is far behind) gives the request back, and the caller
//! counts the message as dropped (and may send it without the queue). Answers come back in
//! request order as [`Event`]s ([`Writer::recv`], cancel-safe). The thread takes every request
//! waiting at once (a batch, up to [`BATCH`]), answers them, then fsyncs by the store's policy
//! ([`StoreConfig::fsync_every`](super::StoreConfig::fsync_every), checked at least every
//! [`TICK`]). The loss window and the at-least-once, in-order guarantees are the store's,
//! unchanged: a push is stored (in the page cache, safe from a crash) before its [`Event::Stored`]
//! is sent, and acknowledged positions reach the ledger in request order.
//!
//! Batches are where later speed comes from: stored pushes are reported as runs
//! ([`Event::Stored`] covers `first..=last`), a read returns a whole window, and the protocol
//! leaves room for many pushes per fsync and one ledger write per batch of acknowledgements.
//!
//! # When the disk fails
//!
//! Nothing here poisons the queue until a restart, and nothing stops the caller.
//! - The directory cannot be opened (a read-only remount, a missing permission, a missing
//!   mount): the thread runs anyway, refuses every push ([`Event::Refused`] gives the message
//!   back) and tries to open the directory again after [`WriterConfig::retry_first`], doubling
//!   to [`WriterConfig::retry_cap`] with jitter ([`crate::util::backoff`]). [`Event::Opened`]
//!   says when it works.
//! - A write fails (a full disk): the store undid the partial record and stays usable. That
//!   push is refused, and so is every push until the backoff delay has passed; the first push
//!   after it is the probe (no test record is written), and the delay grows while probes fail.
//!   Nothing is deleted to make room: messages already waiting for the broker are kept, new ones
//!   are refused. A write failure keeps the store open on purpose: a reopen rescans every
//!   segment (up to `max_bytes` read back), which a full disk does not need.
//! - An fsync fails: what reached the disk is unknown and the store refuses further work
//!   ([`StoreError::Poisoned`]), so the thread closes it and reopens it (a full rescan) with the
//!   same backoff. Records pushed since the last good fsync are there again if the rescan finds
//!   them intact (sent again, at-least-once), or gone.
//!
//! While any of these lasts, [`Figures::problem`] says why (naming the directory and what to do)
//! and [`Figures::refused`] counts the pushes refused; the log has a line when it starts, one a
//! minute while it lasts ([`crate::util::throttle`]), and one when it ends.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Record, Recovery, Store, StoreConfig, StoreError};
use crate::util::backoff::Backoff;
use crate::util::throttle::{Report, Throttle};

/// The longest the thread sleeps without checking the fsync policy and the retry time.
pub const TICK: Duration = Duration::from_millis(50);
/// Requests taken in one batch before the thread fsyncs and answers.
pub const BATCH: usize = 1024;

/// What the writer needs of a queue: [`Store`]'s operations. A trait so that the writer's own
/// logic (batches, refusals, retries) is tested with a file layer that fails or is slow on
/// demand; the daemon uses [`Store`] only.
pub trait Log: Send + 'static {
    fn push(&mut self, topic: &str, payload: &[u8], qos: u8, retain: bool) -> Result<u64, StoreError>;
    fn read_after(&self, after: u64, n: usize) -> Result<Vec<Record>, StoreError>;
    fn ack(&mut self, seq: u64) -> Result<(), StoreError>;
    fn flush(&mut self) -> Result<(), StoreError>;
    fn maybe_flush(&mut self) -> Result<(), StoreError>;
    /// Unacknowledged records ([`Store::len`]).
    fn unacked(&self) -> usize;
    fn last_seq(&self) -> u64;
    fn dropped(&self) -> u64;
    fn lost(&self) -> u64;
    /// After a failed fsync: the log refuses all work until reopened.
    fn is_poisoned(&self) -> bool;
}

impl Log for Store {
    fn push(&mut self, topic: &str, payload: &[u8], qos: u8, retain: bool) -> Result<u64, StoreError> {
        Store::push(self, topic, payload, qos, retain)
    }
    fn read_after(&self, after: u64, n: usize) -> Result<Vec<Record>, StoreError> {
        Store::read_after(self, after, n)
    }
    fn ack(&mut self, seq: u64) -> Result<(), StoreError> {
        Store::ack(self, seq)
    }
    fn flush(&mut self) -> Result<(), StoreError> {
        Store::flush(self)
    }
    fn maybe_flush(&mut self) -> Result<(), StoreError> {
        Store::maybe_flush(self)
    }
    fn unacked(&self) -> usize {
        Store::len(self)
    }
    fn last_seq(&self) -> u64 {
        Store::last_seq(self)
    }
    fn dropped(&self) -> u64 {
        Store::dropped(self)
    }
    fn lost(&self) -> u64 {
        Store::lost(self)
    }
    fn is_poisoned(&self) -> bool {
        Store::is_poisoned(self)
    }
}

/// A message to queue.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Message({}, {} bytes)", self.topic, self.payload.len())
    }
}

/// What the async side asks. Each is answered by one [`Event`], in order (consecutive stored
/// pushes by one [`Event::Stored`]).
#[derive(Debug)]
pub enum Request {
    /// Append a message: [`Event::Stored`] or [`Event::Refused`].
    Push(Message),
    /// Up to `max` unacknowledged records numbered above `after`: [`Event::Records`] with `tag`.
    Read { after: u64, max: usize, tag: u64 },
    /// Everything up to this number is delivered: [`Event::Acked`].
    Ack(u64),
    /// Fsync now (a clean stop): [`Event::Flushed`].
    Flush,
}

/// What the thread answers, in request order.
#[derive(Debug)]
pub enum Event {
    /// The store is open: at start, or again after a failure (`first` false). `last_seq`: every
    /// number up to it was given before this open.
    Opened { last_seq: u64, len: usize, first: bool },
    /// Consecutive pushes stored as `first..=last` (one number each, in request order); `len`:
    /// records waiting in the store now.
    Stored { first: u64, last: u64, len: usize },
    /// A push the queue could not take (full with `drop-newest`, a disk error, not open): the
    /// message, given back.
    Refused(Message),
    /// Answer to a [`Request::Read`]: the records, and `upto`, the highest number the read
    /// covered (an empty answer still moves the reader past records since dropped or damaged).
    /// `failed`: the store could not be read (or is not open); try again later.
    Records { tag: u64, records: Vec<Record>, upto: u64, failed: bool },
    /// Answer to a [`Request::Ack`]; `ok` false: not recorded, ask again later.
    Acked { upto: u64, ok: bool, len: usize },
    /// Answer to a [`Request::Flush`].
    Flushed { ok: bool },
}

/// The writer's figures, read by telemetry at any time.
#[derive(Debug, Default)]
pub struct Figures {
    /// Pushes refused because the store could not take them (not open, a disk error, a record
    /// it cannot hold); the full-queue policy's drops are in `dropped`.
    pub refused: AtomicU64,
    /// Messages the full-queue policy dropped, over every open of the store.
    pub dropped: AtomicU64,
    /// Records found damaged on read-back, over every open of the store.
    pub lost: AtomicU64,
    /// Why the queue cannot be used now (None while it works), with the directory and the fix.
    pub problem: Mutex<Option<String>>,
}

impl Figures {
    pub fn problem(&self) -> Option<String> {
        self.problem.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_problem(&self, why: Option<String>) {
        *self.problem.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }
}

/// How the writer runs.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// For the thread's name and the log, e.g. "MQTT queue".
    pub name: String,
    /// The queue's directory, named in problems.
    pub dir: PathBuf,
    /// Requests waiting for the thread at most; beyond, [`Writer::try_send`] gives them back.
    pub capacity: usize,
    /// First delay before the store is tried again after a failure.
    pub retry_first: Duration,
    /// Longest delay between tries.
    pub retry_cap: Duration,
}

impl WriterConfig {
    /// Defaults: 4096 requests (seconds of a busy line), retries from 500 ms to 10 s: a disk
    /// that got space back is used again within about 10 s, and a failing one is tried at most
    /// once every few seconds.
    pub fn new(name: &str, dir: impl Into<PathBuf>) -> WriterConfig {
        WriterConfig {
            name: name.into(),
            dir: dir.into(),
            capacity: 4096,
            retry_first: Duration::from_millis(500),
            retry_cap: Duration::from_secs(10),
        }
    }
}

/// The async side's handle. Dropping it ends the thread after a last fsync.
pub struct Writer {
    tx: flume::Sender<Request>,
    rx: flume::Receiver<Event>,
    figures: Arc<Figures>,
    thread: Option<JoinHandle<()>>,
}

type Opener<L> = Box<dyn FnMut() -> Result<(L, Recovery), StoreError> + Send>;

impl Writer {
    /// The writer of the real queue: [`Store::open`] with `store`, retried as described above.
    /// Fails only when the thread cannot be started.
    pub fn open(cfg: WriterConfig, store: StoreConfig) -> io::Result<Writer> {
        Writer::start(cfg, Box::new(move || Store::open(store.clone())))
    }

    /// A writer over any [`Log`]; `open` is called at start and after each failure.
    pub fn start<L: Log>(cfg: WriterConfig, open: Opener<L>) -> io::Result<Writer> {
        let (tx, requests) = flume::bounded(cfg.capacity.max(1));
        // Each request gets at most one answer, and stored runs merge: twice the requests is
        // room enough that the thread waits on a full answer channel only if the async side
        // stopped reading, which it never does while it runs.
        let (answers, rx) = flume::bounded(cfg.capacity.max(1) * 2);
        let figures = Arc::new(Figures::default());
        let backoff = Backoff::new(cfg.retry_first, cfg.retry_cap);
        let name = cfg.name.to_lowercase().replace(' ', "-");
        let thread = Thread {
            cfg,
            open,
            log: None,
            opened_once: false,
            requests,
            answers,
            figures: figures.clone(),
            backoff,
            retry_at: None,
            dropped_before: 0,
            lost_before: 0,
            run: None,
            throttle: Throttle::default(),
        };
        let handle = std::thread::Builder::new().name(name).spawn(move || thread.run())?;
        Ok(Writer { tx, rx, figures, thread: Some(handle) })
    }

    /// Hands a request to the thread without waiting; gives it back when the channel is full
    /// (or the thread is gone).
    pub fn try_send(&self, req: Request) -> Result<(), Request> {
        self.tx.try_send(req).map_err(|e| e.into_inner())
    }

    /// The next answer; pending forever if the thread is gone (it ends only when this handle is
    /// dropped, or if it panicked). Cancel-safe: an answer is never lost to a dropped future.
    pub async fn recv(&self) -> Event {
        match self.rx.recv_async().await {
            Ok(ev) => ev,
            Err(_) => std::future::pending().await,
        }
    }

    /// An answer already there, if any.
    pub fn try_recv(&self) -> Option<Event> {
        self.rx.try_recv().ok()
    }

    /// The thread's figures.
    pub fn figures(&self) -> &Arc<Figures> {
        &self.figures
    }

    /// Ends the thread (after a last fsync) and returns it, to be joined where blocking is fine.
    pub fn close(mut self) -> Option<JoinHandle<()>> {
        self.thread.take()
    }
}

struct Thread<L> {
    cfg: WriterConfig,
    open: Opener<L>,
    log: Option<L>,
    opened_once: bool,
    requests: flume::Receiver<Request>,
    answers: flume::Sender<Event>,
    figures: Arc<Figures>,
    backoff: Backoff,
    /// While the store cannot be used: when to try it again (open it, or the next push).
    retry_at: Option<Instant>,
    /// Counts of stores closed before (a reopened store counts from zero).
    dropped_before: u64,
    lost_before: u64,
    /// Pushes stored and not yet reported: first..=last, and the store's length after the last.
    run: Option<(u64, u64, usize)>,
    throttle: Throttle,
}

impl<L: Log> Thread<L> {
    fn run(mut self) {
        self.try_open();
        loop {
            let wait = match (&self.log, self.retry_at) {
                (None, Some(at)) => at.saturating_duration_since(Instant::now()).min(TICK),
                _ => TICK,
            };
            match self.requests.recv_timeout(wait) {
                Ok(req) => {
                    self.handle(req);
                    for _ in 1..BATCH {
                        let Ok(req) = self.requests.try_recv() else { break };
                        self.handle(req);
                    }
                }
                Err(flume::RecvTimeoutError::Timeout) => {}
                Err(flume::RecvTimeoutError::Disconnected) => break,
            }
            self.report_run();
            self.housekeeping();
        }
        self.report_run();
        if let Some(log) = &mut self.log {
            if let Err(e) = log.flush() {
                tracing::error!(error = %e, "{}: the last flush before stopping failed", self.cfg.name);
            }
        }
    }

    fn send(&mut self, ev: Event) {
        if !matches!(ev, Event::Stored { .. }) {
            self.report_run();
        }
        // The async side gone (its session ended): nothing to tell.
        let _ = self.answers.send(ev);
    }

    fn report_run(&mut self) {
        if let Some((first, last, len)) = self.run.take() {
            let _ = self.answers.send(Event::Stored { first, last, len });
        }
    }

    fn handle(&mut self, req: Request) {
        match req {
            Request::Push(m) => self.push(m),
            Request::Read { after, max, tag } => {
                let ev = match &self.log {
                    None => Event::Records { tag, records: Vec::new(), upto: after, failed: true },
                    Some(log) => match log.read_after(after, max) {
                        Ok(records) => {
                            // A short answer covered everything up to the newest record.
                            let upto = if records.len() < max {
                                log.last_seq().max(after)
                            } else {
                                records.last().map_or(after, |r| r.seq)
                            };
                            Event::Records { tag, records, upto, failed: false }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "{}: records could not be read back; trying again", self.cfg.name);
                            Event::Records { tag, records: Vec::new(), upto: after, failed: true }
                        }
                    },
                };
                self.send(ev);
            }
            Request::Ack(seq) => {
                let ok = self.usable(Instant::now()) && self.ack(seq);
                let len = self.log.as_ref().map_or(0, |l| l.unacked());
                self.send(Event::Acked { upto: seq, ok, len });
            }
            Request::Flush => {
                let ok = match self.log.as_mut().map(|l| l.flush()) {
                    Some(Ok(())) => true,
                    Some(Err(e)) => {
                        self.failed(e);
                        false
                    }
                    None => false,
                };
                self.send(Event::Flushed { ok });
            }
        }
    }

    /// Open and not waiting for the retry time after a failure.
    fn usable(&self, now: Instant) -> bool {
        self.log.is_some() && self.retry_at.map_or(true, |at| now >= at)
    }

    fn ack(&mut self, seq: u64) -> bool {
        let log = self.log.as_mut().expect("usable");
        match log.ack(seq) {
            Ok(()) => true,
            // The store has fewer numbers than were acknowledged (its ledger was lost and a
            // tail cut at a reopen): everything it has up to its end is delivered too.
            Err(StoreError::AckBeyondEnd { last, .. }) => {
                let last = log.last_seq().min(last);
                match log.ack(last) {
                    Ok(()) => true,
                    Err(e) => {
                        self.failed(e);
                        false
                    }
                }
            }
            Err(e) => {
                self.failed(e);
                false
            }
        }
    }

    fn push(&mut self, m: Message) {
        let now = Instant::now();
        if !self.usable(now) {
            self.figures.refused.fetch_add(1, Ordering::Relaxed);
            return self.send(Event::Refused(m));
        }
        let log = self.log.as_mut().expect("usable");
        let pushed = log.push(&m.topic, &m.payload, m.qos, m.retain).map(|seq| (seq, log.unacked()));
        match pushed {
            Ok((seq, len)) => {
                if self.retry_at.take().is_some() {
                    self.recovered();
                }
                self.run = match self.run {
                    Some((first, last, _)) if last + 1 == seq => Some((first, seq, len)),
                    _ => {
                        self.report_run();
                        Some((seq, seq, len))
                    }
                };
            }
            // The full-queue policy (`drop-newest`): the store counted it as dropped.
            Err(StoreError::Full { .. }) => self.send(Event::Refused(m)),
            // This record, not the disk: refuse it, keep going.
            Err(e @ (StoreError::TooLarge { .. } | StoreError::Invalid(_) | StoreError::Exhausted)) => {
                tracing::error!(error = %e, topic = %m.topic, "{}: message refused", self.cfg.name);
                self.figures.refused.fetch_add(1, Ordering::Relaxed);
                self.send(Event::Refused(m));
            }
            Err(e) => {
                self.failed(e);
                self.figures.refused.fetch_add(1, Ordering::Relaxed);
                self.send(Event::Refused(m));
            }
        }
    }

    /// The store failed: refuse work until the backoff delay passes; closed (to be reopened)
    /// when it can no longer be trusted.
    fn failed(&mut self, e: StoreError) {
        let delay = self.backoff.delay();
        self.retry_at = Some(Instant::now() + delay);
        let poisoned = matches!(e, StoreError::Poisoned(_)) || self.log.as_ref().is_some_and(|l| l.is_poisoned());
        if poisoned {
            if let Some(log) = self.log.take() {
                self.dropped_before += log.dropped();
                self.lost_before += log.lost();
            }
        }
        let what = if poisoned { "closed and reopened (rescanned)" } else { "tried again" };
        let problem = self.problem(&e, "does not take messages", what);
        self.report(&e, &problem);
        self.figures.set_problem(Some(problem));
    }

    /// The queue's problem as the alarm and the log show it: stable while the cause is, so the
    /// alarm changes only when the cause does.
    fn problem(&self, e: &StoreError, what_fails: &str, then: &str) -> String {
        format!(
            "{} in {} {what_fails}: {}; {}; {then} with backoff (at most {} s apart)",
            self.cfg.name,
            self.cfg.dir.display(),
            cause(e),
            fix(e, &self.cfg.dir),
            self.cfg.retry_cap.as_secs_f64()
        )
    }

    /// The log line: the problem, and the failed operation on its file.
    fn report(&mut self, e: &StoreError, problem: &str) {
        match self.throttle.failed(Instant::now(), problem) {
            Some(Report::First) => tracing::error!(error = %e, "{problem}"),
            Some(Report::Still { repeats, total, for_s }) => {
                tracing::error!(error = %e, repeats, total, for_s, "{problem} (still; logged once a minute)")
            }
            None => {}
        }
    }

    fn recovered(&mut self) {
        self.backoff.reset();
        self.figures.set_problem(None);
        match self.throttle.recovered(Instant::now()) {
            Some((down, failures)) => tracing::info!(
                dir = %self.cfg.dir.display(),
                down_s = down.as_secs(),
                failures,
                "{} works again: messages are queued on disk again",
                self.cfg.name
            ),
            None => tracing::info!(dir = %self.cfg.dir.display(), "{} works again", self.cfg.name),
        }
    }

    fn try_open(&mut self) {
        match (self.open)() {
            Ok((log, recovery)) => {
                tracing::info!(dir = %self.cfg.dir.display(), ?recovery, waiting = log.unacked(), "{} opened", self.cfg.name);
                let ev = Event::Opened { last_seq: log.last_seq(), len: log.unacked(), first: !self.opened_once };
                self.opened_once = true;
                self.log = Some(log);
                if self.retry_at.take().is_some() {
                    self.recovered();
                }
                self.send(ev);
            }
            Err(e) => {
                let delay = self.backoff.delay();
                self.retry_at = Some(Instant::now() + delay);
                let problem = self.problem(&e, "cannot be opened", "tried again");
                self.report(&e, &problem);
                self.figures.set_problem(Some(problem));
            }
        }
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        if self.log.is_none() && self.retry_at.map_or(true, |at| now >= at) {
            self.try_open();
        }
        if let Some(log) = &mut self.log {
            if let Err(e) = log.maybe_flush() {
                self.failed(e);
            }
        }
        let (dropped, lost) = self.log.as_ref().map_or((0, 0), |l| (l.dropped(), l.lost()));
        self.figures.dropped.store(self.dropped_before + dropped, Ordering::Relaxed);
        self.figures.lost.store(self.lost_before + lost, Ordering::Relaxed);
    }
}

/// Why, without the file or the operation (the log line has them): one text per cause, so the
/// alarm built from it changes only when the cause does, not with every file a retry touches.
fn cause(e: &StoreError) -> String {
    match e {
        StoreError::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// What to do about `e`, said for an operator.
fn fix(e: &StoreError, dir: &std::path::Path) -> String {
    // Linux errno values: std's ErrorKind names for them (StorageFull, ReadOnlyFilesystem) are
    // newer than the toolchain this crate supports.
    const EPERM: i32 = 1;
    const EACCES: i32 = 13;
    const ENOSPC: i32 = 28;
    const EROFS: i32 = 30;
    const EDQUOT: i32 = 122;
    let dir = dir.display();
    match e {
        StoreError::Io { source, .. } => match source.raw_os_error() {
            Some(ENOSPC) | Some(EDQUOT) => format!("free space on the file system that holds {dir}"),
            Some(EROFS) => {
                format!("the file system that holds {dir} is read-only: remount it read-write, or set mqtt.queue.dir to a writable folder")
            }
            Some(EACCES) | Some(EPERM) => {
                format!("let the service's user write to {dir} (owner and mode 0700), or set mqtt.queue.dir elsewhere")
            }
            _ => format!("check the disk that holds {dir} (the kernel log says more)"),
        },
        StoreError::Config(_) => "fix mqtt.queue in the config".into(),
        StoreError::Exhausted => format!("move {dir} aside"),
        _ => format!("check the disk that holds {dir}"),
    }
}

#[cfg(test)]
mod tests;
