//! Disk-backed store-and-forward queue for MQTT telemetry.
//!
//! Every message goes to disk before it is sent; it leaves the disk only once the broker has
//! acknowledged it. Delivery is at-least-once and in order, across restarts and crashes.
//!
//! # Why no storage crate
//!
//! This is a small segmented append-only log written here, not sled, sqlite or the like:
//! few dependencies (only `crc32fast`), a format simple enough to recover by hand (see
//! [`segment`]), and crash behaviour we test ourselves (unit tests here, SIGKILL tests in
//! `tests/it/store_crash.rs`). sled is unmaintained; sqlite is a large C dependency to cross-build
//! for every target.
//!
//! # On disk
//!
//! In [`StoreConfig::dir`]:
//! - `NNNNNNNNNNNNNNNNNNNN.seg`: segments, named by the (20-digit) sequence number of their first
//!   record; records are appended to the newest one only. Format in [`segment`].
//! - `ack`: the ledger, 28 bytes: `LSACK001`, the highest acknowledged sequence number (u64 LE),
//!   the highest reserved sequence number (u64 LE), CRC-32 of the first 24 bytes (u32 LE).
//!   Replaced atomically (write `ack.tmp`, fsync, rename, fsync the directory). An `ack.tmp` left
//!   by a crash is removed at open.
//!
//! # Guarantees and their limits
//!
//! - Sequence numbers start at 1 and strictly increase across restarts; a number is never given
//!   to two messages, even when a power cut ate an unsynced tail of the log that had already been
//!   sent: numbers are reserved in blocks of [`SEQ_BLOCK`] in the ledger before use, and a
//!   reopened store starts after the reserved block. So the numbers jump (by less than
//!   [`SEQ_BLOCK`]) at each restart; consumers de-duplicate by number and must not expect them to
//!   be contiguous.
//! - Loss window: a record is durable once [`Store::flush`] returned after its push. `push`
//!   fsyncs by itself when [`StoreConfig::fsync_every`] has elapsed since the last fsync (zero:
//!   every push); call [`Store::maybe_flush`] at least that often (a timer) so an idle queue does
//!   not keep unsynced records. A process crash (SIGKILL) loses nothing written; a power cut loses
//!   at most what was pushed in the last `fsync_every`.
//! - Bounded: segments never hold more than [`StoreConfig::max_bytes`]; [`WhenFull`] says what
//!   gives, and [`Store::dropped`] counts it.
//! - Damage: at open every segment is scanned. A bad record at the end of the newest segment is a
//!   torn write from a crash and is cut off. Elsewhere the scan resynchronises on the next valid
//!   record, so only the damaged records are lost; they are counted in [`Recovery`]. A damaged
//!   segment stays on disk until nothing in it is left to send, then it is deleted like any other.
//!   Numbers read from the disk are bounded by [`MAX_SEQ`]: a segment named above it holds nothing
//!   that can be sent, so it is reported in [`Recovery::corrupt_segments`], its records counted as
//!   lost, and deleted; a record numbered above it is damage; a ledger beyond it is unreadable.
//! - I/O errors (a full disk) come back as [`StoreError::Io`] naming the file; nothing panics.
//!   A failed write is undone (the store stays usable: push again when there is space). After a
//!   failed fsync the store refuses further work ([`StoreError::Poisoned`]): what reached the
//!   disk is unknown, so reopen it (which rescans). [`writer`] does both, with backoff.
//! - [`Store::ack`] fsyncs the ledger twice (file and directory): ack in batches (e.g. the
//!   highest contiguous acknowledged seq once per loop tick), not per PUBACK.
//! - [`Store::peek`] returns records at once, synced or not (a record lost to a power cut after
//!   it was sent was delivered; its number is not reused, see above).
//! - Private: the folder (and any parent it creates) is 0700, segments and ledger 0600, set
//!   explicitly, so a daemon run by hand with a lax umask does not leave messages readable to others.
//! - One owner: [`writer::Writer`]'s thread owns the `Store` (it is `Send`, not `Sync`) and does
//!   all of its file I/O, off the async runtime; the MQTT session talks to it through channels.
//!   Two processes must not open the same directory (there is no lock file).

pub mod segment;
pub mod writer;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::private_fs;
use segment::Entry;

const LEDGER: &str = "ack";
const LEDGER_TMP: &str = "ack.tmp";
const LEDGER_MAGIC: &[u8; 8] = b"LSACK001";
const LEDGER_LEN: usize = 28;
/// Sequence numbers reserved in the ledger at a time (one ledger write per block).
pub const SEQ_BLOCK: u64 = 4096;
/// The highest sequence number a record may carry: 2^63 - 1, out of reach of any real queue (a
/// million records a second for 290,000 years) and far enough below `u64::MAX` that no arithmetic
/// on numbers read from the disk can overflow. A segment named above it, a record numbered above
/// it and a ledger beyond it are damage; a push that would need a number above it is refused
/// ([`StoreError::Exhausted`]).
pub const MAX_SEQ: u64 = i64::MAX as u64;
/// Smallest accepted `segment_bytes`.
pub const MIN_SEGMENT_BYTES: u64 = 64;
/// Largest accepted `segment_bytes` (record offsets are kept as u32).
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;

/// What gives when a push would exceed [`StoreConfig::max_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Delete the oldest segment (its unacknowledged records are counted as dropped).
    DropOldest,
    /// Refuse the new record with [`StoreError::Full`] (counted as dropped).
    DropNewest,
}

/// Where and how the queue is kept.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory of the queue; created if missing. Nothing else should be in it.
    pub dir: PathBuf,
    /// Cap on the segments' total size. At least twice `segment_bytes`.
    pub max_bytes: u64,
    /// A segment is closed once the next record would take it past this size. Also the largest
    /// record accepted.
    pub segment_bytes: u64,
    /// The loss window: longest time a pushed record may stay unsynced. Zero: fsync every push.
    pub fsync_every: Duration,
    /// Full-queue policy.
    pub when_full: WhenFull,
}

impl StoreConfig {
    /// Defaults: 256 MiB in 8 MiB segments, fsync every 500 ms (as Vector's disk buffer),
    /// drop the oldest when full.
    pub fn new(dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            dir: dir.into(),
            max_bytes: 256 << 20,
            segment_bytes: 8 << 20,
            fsync_every: Duration::from_millis(500),
            when_full: WhenFull::DropOldest,
        }
    }
}

/// One queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

/// What [`Store::open`] found, for logs and telemetry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Unacknowledged records recovered.
    pub records: usize,
    /// Records known to be lost to damage (gaps in the sequence around damaged bytes; records
    /// already acknowledged are not counted).
    pub lost_records: u64,
    /// Bytes skipped as damaged, torn tail included.
    pub lost_bytes: u64,
    /// Bytes cut off the end of the newest segment (a write torn by a crash; not corruption).
    pub torn_tail_bytes: u64,
    /// Segments with damage other than a torn tail.
    pub corrupt_segments: Vec<PathBuf>,
    /// Segment files found.
    pub segments: usize,
    /// Acknowledged position read from the ledger.
    pub acked: u64,
    /// The ledger existed but was unreadable; everything on disk will be sent again.
    pub ledger_reset: bool,
    /// Sequence number the next push gets.
    pub next_seq: u64,
}

/// Errors of the store. I/O errors name the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error("store full ({bytes} of {max_bytes} bytes); record refused")]
    Full { bytes: u64, max_bytes: u64 },
    #[error("record of {size} bytes does not fit (limit {limit})")]
    TooLarge { size: u64, limit: u64 },
    #[error("invalid store config: {0}")]
    Config(String),
    #[error("invalid record: {0}")]
    Invalid(&'static str),
    #[error("ack of seq {seq} beyond the last pushed record {last}")]
    AckBeyondEnd { seq: u64, last: u64 },
    #[error("sequence numbers used up (the next would be above {MAX_SEQ}); move the queue directory aside")]
    Exhausted,
    #[error("store unusable after a failed fsync ({0}); reopen it")]
    Poisoned(String),
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> StoreError {
    StoreError::Io { op, path: path.to_path_buf(), source }
}

struct Segment {
    first_seq: u64,
    path: PathBuf,
    file: File,
    size: u64,
    /// Unacknowledged records, oldest first.
    entries: VecDeque<Entry>,
}

/// The queue. Single owner (its writer thread, [`writer`]); not meant to be shared.
pub struct Store {
    cfg: StoreConfig,
    /// Oldest first; the last one is the one appended to.
    segments: VecDeque<Segment>,
    next_seq: u64,
    acked: u64,
    /// Highest sequence number reserved in the ledger.
    reserved: u64,
    bytes: u64,
    len: usize,
    dropped: u64,
    /// Records found damaged on read-back since open, left out of `peek`, until acknowledged past.
    bad: RefCell<BTreeSet<u64>>,
    lost: Cell<u64>,
    dirty: bool,
    dir_dirty: bool,
    /// The newest segment may end in a partial record (a failed write could not be undone).
    needs_roll: bool,
    poisoned: Option<String>,
    last_flush: Instant,
    buf: Vec<u8>,
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err("fsync directory", dir, e))
}

/// The ledger: (acked, reserved, unreadable).
fn read_ledger(dir: &Path) -> Result<(u64, u64, bool), StoreError> {
    let path = dir.join(LEDGER);
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    match fs::read(&path) {
        Ok(b) => {
            let ok = b.len() == LEDGER_LEN
                && &b[..8] == LEDGER_MAGIC
                && crc32fast::hash(&b[..24]).to_le_bytes() == b[24..28];
            // Numbers beyond MAX_SEQ cannot have been written by a store: not trusted.
            let (acked, reserved) = if ok { (u64_at(&b, 8), u64_at(&b, 16)) } else { (0, 0) };
            if ok && acked <= MAX_SEQ && reserved <= MAX_SEQ {
                Ok((acked, reserved, false))
            } else {
                Ok((0, 0, true))
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((0, 0, false)),
        Err(e) => Err(io_err("read", &path, e)),
    }
}

fn write_ledger(dir: &Path, acked: u64, reserved: u64) -> Result<(), StoreError> {
    let tmp = dir.join(LEDGER_TMP);
    let mut b = Vec::with_capacity(LEDGER_LEN);
    b.extend_from_slice(LEDGER_MAGIC);
    b.extend_from_slice(&acked.to_le_bytes());
    b.extend_from_slice(&reserved.to_le_bytes());
    b.extend_from_slice(&crc32fast::hash(&b).to_le_bytes());
    let mut f = private_fs::create(&tmp).map_err(|e| io_err("create", &tmp, e))?;
    f.write_all(&b).map_err(|e| io_err("write", &tmp, e))?;
    f.sync_all().map_err(|e| io_err("fsync", &tmp, e))?;
    drop(f);
    let path = dir.join(LEDGER);
    fs::rename(&tmp, &path).map_err(|e| io_err("rename", &path, e))?;
    sync_dir(dir)
}

impl Store {
    /// Opens (or creates) the queue in `cfg.dir`, scanning every segment.
    ///
    /// One piece on purpose: recovery is a single pass whose steps (ledger, segment scan,
    /// truncation of a torn tail, sequence numbering) each rely on what the one before found;
    /// reading it top to bottom is how it is checked against the crash tests.
    pub fn open(cfg: StoreConfig) -> Result<(Store, Recovery), StoreError> {
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&cfg.segment_bytes) {
            return Err(StoreError::Config(format!(
                "segment_bytes {} outside {MIN_SEGMENT_BYTES}..={MAX_SEGMENT_BYTES}",
                cfg.segment_bytes
            )));
        }
        if cfg.max_bytes < cfg.segment_bytes.saturating_mul(2) {
            return Err(StoreError::Config(format!(
                "max_bytes {} must be at least twice segment_bytes {}",
                cfg.max_bytes, cfg.segment_bytes
            )));
        }
        let dir = cfg.dir.clone();
        private_fs::create_dir_all(&dir).map_err(|e| io_err("create directory", &dir, e))?;
        let tmp = dir.join(LEDGER_TMP);
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &tmp, e)),
        }
        let (acked, reserved, ledger_reset) = read_ledger(&dir)?;

        let mut names = Vec::new();
        let mut out_of_range = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| io_err("list", &dir, e))? {
            let entry = entry.map_err(|e| io_err("list", &dir, e))?;
            match entry.file_name().to_str().and_then(segment::parse_segment_name) {
                Some(first) if first <= MAX_SEQ => names.push(first),
                Some(first) => out_of_range.push(first),
                None => {}
            }
        }
        names.sort_unstable();
        out_of_range.sort_unstable();

        let mut rec =
            Recovery { acked, ledger_reset, segments: names.len() + out_of_range.len(), ..Recovery::default() };
        for first in out_of_range {
            // Not a name this store gives (numbering would overflow from it): damage.
            let path = dir.join(segment::segment_name(first));
            let data = fs::read(&path).map_err(|e| io_err("read", &path, e))?;
            let records = segment::scan_range(&data, 0, u64::MAX).entries.len() as u64;
            tracing::warn!(path = %path.display(), records, "store: segment named beyond the highest sequence number; counted as lost and deleted");
            rec.lost_records += records;
            rec.lost_bytes += data.len() as u64;
            fs::remove_file(&path).map_err(|e| io_err("remove", &path, e))?;
            rec.corrupt_segments.push(path);
        }
        let mut segments = VecDeque::new();
        let mut last_seq = 0u64; // highest valid seq seen, acknowledged or not
        for (i, &first) in names.iter().enumerate() {
            let path = dir.join(segment::segment_name(first));
            let newest = i + 1 == names.len();
            let file =
                OpenOptions::new().read(true).append(newest).open(&path).map_err(|e| io_err("open", &path, e))?;
            let mut data = Vec::new();
            io::Read::read_to_end(&mut &file, &mut data).map_err(|e| io_err("read", &path, e))?;
            let scan = segment::scan(&data, last_seq);
            let damaged: u64 = scan.damaged.iter().map(|r| (r.end - r.start) as u64).sum();
            rec.lost_bytes += damaged;
            if newest {
                // The previous owner may have died with this only in the page cache.
                file.sync_data().map_err(|e| io_err("fsync", &path, e))?;
            }
            let mut size = data.len() as u64;
            let tail = data.len() - scan.valid_end;
            if newest && tail > 0 {
                // A torn tail: cut it off so appends continue after the last good record.
                file.set_len(scan.valid_end as u64).map_err(|e| io_err("truncate", &path, e))?;
                file.sync_all().map_err(|e| io_err("fsync", &path, e))?;
                rec.torn_tail_bytes = tail as u64;
                size = scan.valid_end as u64;
            }
            let corrupt = if newest { damaged > tail as u64 } else { damaged > 0 };
            if corrupt {
                rec.corrupt_segments.push(path.clone());
                // Records this segment should hold: up to the next segment's first, or (newest)
                // up to its last valid record.
                let last_in_seg = scan.entries.last().map_or(0, |e| e.seq);
                let end = match names.get(i + 1) {
                    Some(&next) => next,
                    None => last_in_seg + 1,
                };
                let start = first.max(acked + 1).max(last_seq + 1);
                let valid = scan.entries.iter().filter(|e| e.seq >= start && e.seq < end).count() as u64;
                rec.lost_records += end.saturating_sub(start).saturating_sub(valid);
            }
            if let Some(e) = scan.entries.last() {
                last_seq = e.seq;
            }
            let entries: VecDeque<Entry> = scan.entries.into_iter().filter(|e| e.seq > acked).collect();
            rec.records += entries.len();
            segments.push_back(Segment { first_seq: first, path, file, size, entries });
        }

        let next_seq = (acked + 1).max(reserved + 1).max(last_seq + 1).max(names.last().copied().unwrap_or(1));
        let mut store = Store {
            bytes: segments.iter().map(|s| s.size).sum(),
            len: rec.records,
            cfg,
            segments,
            next_seq,
            acked,
            reserved: next_seq - 1,
            dropped: 0,
            bad: RefCell::new(BTreeSet::new()),
            lost: Cell::new(0),
            dirty: false,
            dir_dirty: false,
            needs_roll: false,
            poisoned: None,
            last_flush: Instant::now(),
            buf: Vec::new(),
        };
        store.delete_acked_segments()?;
        if store.segments.is_empty() {
            store.new_segment()?;
        }
        sync_dir(&dir)?;
        store.dir_dirty = false;
        rec.next_seq = next_seq;
        Ok((store, rec))
    }

    fn check_poisoned(&self) -> Result<(), StoreError> {
        match &self.poisoned {
            Some(why) => Err(StoreError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    /// Starts a new newest segment named by the next sequence number.
    fn new_segment(&mut self) -> Result<(), StoreError> {
        let first = self.next_seq;
        let path = self.cfg.dir.join(segment::segment_name(first));
        let file = private_fs::open(OpenOptions::new().read(true).append(true).create(true), &path)
            .map_err(|e| io_err("create", &path, e))?;
        // A leftover file of that name (e.g. an empty segment) holds nothing we need.
        file.set_len(0).map_err(|e| io_err("truncate", &path, e))?;
        if self.segments.back().is_some_and(|s| s.first_seq == first) {
            self.segments.pop_back();
        }
        self.segments.push_back(Segment { first_seq: first, path, file, size: 0, entries: VecDeque::new() });
        self.dir_dirty = true;
        self.needs_roll = false;
        Ok(())
    }

    /// Closes the newest segment (synced) and starts a new one.
    fn roll(&mut self) -> Result<(), StoreError> {
        self.flush()?;
        self.new_segment()
    }

    /// Deletes the oldest segment whatever it holds; its unacknowledged records count as dropped.
    fn drop_oldest_segment(&mut self) -> Result<(), StoreError> {
        let seg = self.segments.front().expect("a segment");
        fs::remove_file(&seg.path).map_err(|e| io_err("remove", &seg.path, e))?;
        let seg = self.segments.pop_front().expect("a segment");
        let bad = self.bad.get_mut();
        let was_bad = seg.entries.iter().filter(|e| bad.remove(&e.seq)).count();
        self.dropped += (seg.entries.len() - was_bad) as u64;
        self.len -= seg.entries.len();
        self.bytes -= seg.size;
        Ok(())
    }

    /// Deletes older segments with nothing left to send (all acknowledged, or lost to damage).
    fn delete_acked_segments(&mut self) -> Result<(), StoreError> {
        while self.segments.len() > 1 && self.segments[0].entries.is_empty() {
            self.drop_oldest_segment()?;
        }
        Ok(())
    }

    /// Appends a record and returns its sequence number. The record is durable once a flush
    /// returned after this push (this push fsyncs itself when `fsync_every` elapsed); it can be
    /// peeked and sent at once.
    pub fn push(&mut self, topic: &str, payload: &[u8], qos: u8, retain: bool) -> Result<u64, StoreError> {
        self.check_poisoned()?;
        if qos > 2 {
            return Err(StoreError::Invalid("qos above 2"));
        }
        if topic.len() > usize::from(u16::MAX) {
            return Err(StoreError::TooLarge { size: topic.len() as u64, limit: u64::from(u16::MAX) });
        }
        let size = segment::encoded_len(topic.len(), payload.len());
        if size > self.cfg.segment_bytes {
            return Err(StoreError::TooLarge { size, limit: self.cfg.segment_bytes });
        }
        let active_size = self.segments.back().map_or(0, |s| s.size);
        if self.needs_roll || (active_size > 0 && active_size + size > self.cfg.segment_bytes) {
            self.roll()?;
        }
        while self.bytes + size > self.cfg.max_bytes {
            match self.cfg.when_full {
                WhenFull::DropNewest => {
                    self.dropped += 1;
                    return Err(StoreError::Full { bytes: self.bytes, max_bytes: self.cfg.max_bytes });
                }
                WhenFull::DropOldest if self.segments.len() > 1 => self.drop_oldest_segment()?,
                WhenFull::DropOldest => {
                    // Unreachable with max_bytes >= 2 * segment_bytes; refuse rather than loop.
                    self.dropped += 1;
                    return Err(StoreError::Full { bytes: self.bytes, max_bytes: self.cfg.max_bytes });
                }
            }
        }
        let seq = self.next_seq;
        if seq > MAX_SEQ {
            return Err(StoreError::Exhausted);
        }
        if seq > self.reserved {
            let reserved = seq.checked_add(SEQ_BLOCK - 1).map_or(MAX_SEQ, |r| r.min(MAX_SEQ));
            write_ledger(&self.cfg.dir, self.acked, reserved)?;
            self.reserved = reserved;
        }
        self.buf.clear();
        segment::encode(&mut self.buf, seq, topic, payload, qos, retain);
        let seg = self.segments.back_mut().expect("a segment");
        if let Err(e) = (&seg.file).write_all(&self.buf) {
            // Undo a partial write; if even that fails, burn the seq and start a new segment.
            if seg.file.set_len(seg.size).is_err() {
                self.next_seq += 1;
                self.needs_roll = true;
            }
            return Err(io_err("write", &seg.path, e));
        }
        seg.entries.push_back(Entry { seq, offset: seg.size as u32, len: size as u32 });
        seg.size += size;
        self.bytes += size;
        self.len += 1;
        self.next_seq += 1;
        self.dirty = true;
        self.maybe_flush()?;
        Ok(seq)
    }

    /// Fsyncs now: every record pushed so far becomes durable.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.check_poisoned()?;
        if self.dirty {
            let seg = self.segments.back().expect("a segment");
            if let Err(e) = seg.file.sync_data() {
                let err = io_err("fsync", &seg.path, e);
                self.poisoned = Some(err.to_string());
                return Err(err);
            }
        }
        if self.dir_dirty {
            if let Err(e) = sync_dir(&self.cfg.dir) {
                self.poisoned = Some(e.to_string());
                return Err(e);
            }
        }
        self.dirty = false;
        self.dir_dirty = false;
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Fsyncs if there is something unsynced and `fsync_every` has elapsed since the last fsync.
    pub fn maybe_flush(&mut self) -> Result<(), StoreError> {
        if (self.dirty || self.dir_dirty) && self.last_flush.elapsed() >= self.cfg.fsync_every {
            self.flush()
        } else {
            Ok(())
        }
    }

    /// Up to `n` unacknowledged records, oldest first. Infallible for the sending loop: an I/O
    /// error is logged and the records read before it are returned (the next call tries again);
    /// a record that no longer reads back intact (damaged on disk since open) is logged, left out
    /// and counted in [`Store::lost`]. [`Store::try_peek`] returns the error instead.
    pub fn peek(&self, n: usize) -> Vec<Record> {
        let mut out = Vec::new();
        if let Err(e) = self.peek_into(n, &mut out) {
            tracing::error!(error = %e, "store: records could not be read back");
        }
        out
    }

    /// [`Store::peek`], with read errors returned.
    pub fn try_peek(&self, n: usize) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        self.peek_into(n, &mut out)?;
        Ok(out)
    }

    /// Up to `n` unacknowledged records numbered above `after`, oldest first: what a sender that
    /// already has everything up to `after` in flight reads next, without reading those again.
    /// Read errors are returned (with nothing read); damaged records are skipped as in
    /// [`Store::peek`].
    pub fn read_after(&self, after: u64, n: usize) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        self.read_into(after, n, &mut out)?;
        Ok(out)
    }

    fn peek_into(&self, n: usize, out: &mut Vec<Record>) -> Result<(), StoreError> {
        self.read_into(0, n, out)
    }

    fn read_into(&self, after: u64, n: usize, out: &mut Vec<Record>) -> Result<(), StoreError> {
        let mut bad = self.bad.borrow_mut();
        for seg in &self.segments {
            if out.len() >= n {
                break;
            }
            // Entries are in seq order: skip what the reader has without looking at each.
            let from = seg.entries.partition_point(|e| e.seq <= after);
            let want: Vec<Entry> =
                seg.entries.range(from..).filter(|e| !bad.contains(&e.seq)).take(n - out.len()).copied().collect();
            let (Some(first), Some(last)) = (want.first(), want.last()) else { continue };
            let start = u64::from(first.offset);
            let end = u64::from(last.offset) + u64::from(last.len);
            let mut data = vec![0; (end - start) as usize];
            seg.file.read_exact_at(&mut data, start).map_err(|e| io_err("read", &seg.path, e))?;
            for e in &want {
                let at = (u64::from(e.offset) - start) as usize;
                match segment::decode_at(&data[..at + e.len as usize], at) {
                    Some(d) if d.seq == e.seq => out.push(Record {
                        seq: d.seq,
                        topic: d.topic.to_owned(),
                        payload: d.payload.to_vec(),
                        qos: d.qos,
                        retain: d.retain,
                    }),
                    _ => {
                        tracing::warn!(path = %seg.path.display(), seq = e.seq, "store: record damaged on disk, skipped");
                        if bad.insert(e.seq) {
                            self.lost.set(self.lost.get() + 1);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Marks everything up to `seq` delivered: persists the ledger, then deletes segments that
    /// hold nothing unacknowledged. Acking at or below the current position does nothing.
    pub fn ack(&mut self, seq: u64) -> Result<(), StoreError> {
        self.check_poisoned()?;
        if seq <= self.acked {
            return Ok(());
        }
        if seq >= self.next_seq {
            return Err(StoreError::AckBeyondEnd { seq, last: self.next_seq - 1 });
        }
        write_ledger(&self.cfg.dir, seq, self.reserved)?;
        self.acked = seq;
        self.bad.get_mut().retain(|&b| b > seq);
        for seg in &mut self.segments {
            while seg.entries.front().is_some_and(|e| e.seq <= seq) {
                seg.entries.pop_front();
                self.len -= 1;
            }
            if !seg.entries.is_empty() {
                break;
            }
        }
        // Everything acknowledged and the newest segment not empty: start afresh.
        if self.len == 0 && self.segments.back().is_some_and(|s| s.size > 0) && !self.dirty {
            self.new_segment()?;
        }
        self.delete_acked_segments()
    }

    /// Unacknowledged records (synced or not; records found damaged since open excluded).
    pub fn len(&self) -> usize {
        self.len - self.bad.borrow().len()
    }

    /// True when nothing is waiting for acknowledgement.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the segment files (what counts against `max_bytes`).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records dropped by the full-queue policy since open.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Records found damaged on read-back since open (damage found at open is in [`Recovery`]).
    pub fn lost(&self) -> u64 {
        self.lost.get()
    }

    /// Highest acknowledged sequence number.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Highest sequence number given out so far (0 if none ever). At open: everything up to here
    /// was stored before this run.
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Sequence number the next push gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// True after a failed fsync: the store refuses all work until it is opened again.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// The configuration in force.
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }
}

#[cfg(test)]
mod tests;
