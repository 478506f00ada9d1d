//! The writer's own logic over a simulated file layer that fails, or hangs in fsync, on demand.
//! No test here measures time: a slow fsync is one held until the test lets it go.

use super::*;
use std::sync::mpsc as std_mpsc;

const ENOSPC: i32 = 28;
const EROFS: i32 = 30;
const EIO: i32 = 5;

/// What the simulated disk does now, and what it holds (it outlives each opened log).
#[derive(Default)]
struct Disk {
    full: bool,
    fsync_fails: bool,
    open_fails: bool,
    /// While set, an fsync waits for a message on it (a slow disk, under the test's control).
    fsync_gate: Option<std_mpsc::Receiver<()>>,
    /// Announces each fsync that started.
    fsync_started: Option<std_mpsc::Sender<()>>,
    records: Vec<Record>,
    next: u64,
    acked: u64,
    opens: u32,
}

type Shared = Arc<Mutex<Disk>>;

fn io(op: &'static str, errno: i32) -> StoreError {
    StoreError::Io {
        op,
        path: PathBuf::from("/q/00000000000000000001.seg"),
        source: io::Error::from_raw_os_error(errno),
    }
}

struct MockLog {
    disk: Shared,
    dirty: bool,
    poisoned: bool,
}

impl MockLog {
    fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
        self.disk.lock().unwrap()
    }
}

impl Log for MockLog {
    fn push(&mut self, topic: &str, payload: &[u8], qos: u8, retain: bool) -> Result<u64, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned("earlier fsync".into()));
        }
        let mut d = self.disk();
        if d.full {
            return Err(io("write", ENOSPC));
        }
        d.next += 1;
        let seq = d.next;
        d.records.push(Record { seq, topic: topic.into(), payload: payload.to_vec(), qos, retain });
        drop(d);
        self.dirty = true;
        Ok(seq)
    }
    fn read_after(&self, after: u64, n: usize) -> Result<Vec<Record>, StoreError> {
        let d = self.disk();
        Ok(d.records.iter().filter(|r| r.seq > after && r.seq > d.acked).take(n).cloned().collect())
    }
    fn ack(&mut self, seq: u64) -> Result<(), StoreError> {
        let mut d = self.disk();
        if d.full {
            return Err(io("create", ENOSPC));
        }
        d.acked = d.acked.max(seq);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned("earlier fsync".into()));
        }
        let (gate, started) = {
            let mut d = self.disk();
            (d.fsync_gate.take(), d.fsync_started.clone())
        };
        if let Some(s) = started {
            let _ = s.send(());
        }
        if let Some(g) = gate {
            let _ = g.recv();
        }
        if self.disk().fsync_fails {
            self.poisoned = true;
            return Err(io("fsync", EIO));
        }
        self.dirty = false;
        Ok(())
    }
    fn maybe_flush(&mut self) -> Result<(), StoreError> {
        if self.dirty {
            self.flush()
        } else {
            Ok(())
        }
    }
    fn unacked(&self) -> usize {
        let d = self.disk();
        d.records.iter().filter(|r| r.seq > d.acked).count()
    }
    fn last_seq(&self) -> u64 {
        self.disk().next
    }
    fn dropped(&self) -> u64 {
        0
    }
    fn lost(&self) -> u64 {
        0
    }
    fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}

fn config(capacity: usize) -> WriterConfig {
    WriterConfig {
        name: "test queue".into(),
        dir: PathBuf::from("/q"),
        capacity,
        // Short, so the tests do not wait long for a retry; nothing asserts on them.
        retry_first: Duration::from_millis(1),
        retry_cap: Duration::from_millis(20),
    }
}

fn start(disk: &Shared, capacity: usize) -> Writer {
    let d = disk.clone();
    Writer::start(
        config(capacity),
        Box::new(move || {
            let mut g = d.lock().unwrap();
            g.opens += 1;
            if g.open_fails {
                return Err(io("create directory", EROFS));
            }
            drop(g);
            Ok((MockLog { disk: d.clone(), dirty: false, poisoned: false }, Recovery::default()))
        }),
    )
    .unwrap()
}

fn msg(i: u64) -> Message {
    Message { topic: "t".into(), payload: format!("{i}").into_bytes(), qos: 1, retain: false }
}

async fn next(w: &Writer) -> Event {
    tokio::time::timeout(Duration::from_secs(10), w.recv()).await.expect("the writer answers")
}

/// Pushes `m` until the writer stores one (the others are refused while it waits to retry);
/// returns the seq and how many were refused before.
async fn push_until_stored(w: &Writer, m: impl Fn() -> Message) -> (u64, u64) {
    let mut refused = 0;
    loop {
        w.try_send(Request::Push(m())).unwrap();
        loop {
            match next(w).await {
                Event::Stored { first, .. } => return (first, refused),
                Event::Refused(_) => {
                    refused += 1;
                    break;
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn pushes_are_answered_in_order_and_reads_cover_what_they_skip() {
    let disk = Shared::default();
    let w = start(&disk, 64);
    assert!(matches!(next(&w).await, Event::Opened { last_seq: 0, len: 0, first: true }));
    for i in 1..=5 {
        w.try_send(Request::Push(msg(i))).unwrap();
    }
    let mut stored = Vec::new();
    while stored.len() < 5 {
        match next(&w).await {
            Event::Stored { first, last, len } => {
                stored.extend(first..=last);
                assert_eq!(len as u64, last, "the store's length after the run");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(stored, [1, 2, 3, 4, 5]);
    w.try_send(Request::Read { after: 2, max: 10, tag: 7 }).unwrap();
    match next(&w).await {
        Event::Records { tag: 7, records, upto: 5, failed: false } => {
            assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4, 5]);
            assert_eq!(records[0].payload, b"3");
        }
        other => panic!("{other:?}"),
    }
    w.try_send(Request::Read { after: 0, max: 2, tag: 8 }).unwrap();
    assert!(
        matches!(next(&w).await, Event::Records { tag: 8, upto: 2, failed: false, .. }),
        "a full read stops at its last record"
    );
    w.try_send(Request::Ack(3)).unwrap();
    assert!(matches!(next(&w).await, Event::Acked { upto: 3, ok: true, len: 2 }));
    w.try_send(Request::Flush).unwrap();
    assert!(matches!(next(&w).await, Event::Flushed { ok: true }));
}

#[tokio::test]
async fn a_full_disk_refuses_gives_the_message_back_counts_it_and_recovers_when_space_returns() {
    let disk = Shared::default();
    let w = start(&disk, 64);
    assert!(matches!(next(&w).await, Event::Opened { .. }));
    w.try_send(Request::Push(msg(1))).unwrap();
    assert!(matches!(next(&w).await, Event::Stored { first: 1, last: 1, .. }));

    disk.lock().unwrap().full = true;
    w.try_send(Request::Push(msg(2))).unwrap();
    match next(&w).await {
        Event::Refused(m) => assert_eq!(m, msg(2), "the message comes back whole, to be sent live"),
        other => panic!("{other:?}"),
    }
    let why = w.figures().problem().expect("a problem while the disk is full");
    assert!(why.contains("free space on the file system that holds /q"), "{why}");
    assert!(why.contains("test queue in /q"), "{why}");
    assert_eq!(w.figures().refused.load(Ordering::Relaxed), 1);
    // An acknowledgement on a full disk is not recorded either; asked again later.
    w.try_send(Request::Ack(1)).unwrap();
    assert!(matches!(next(&w).await, Event::Acked { upto: 1, ok: false, .. }));

    disk.lock().unwrap().full = false;
    let (seq, refused_meanwhile) = push_until_stored(&w, || msg(3)).await;
    assert_eq!(seq, 2, "the queue takes messages again, numbered on");
    assert_eq!(w.figures().refused.load(Ordering::Relaxed), 1 + refused_meanwhile, "every refusal counted");
    assert_eq!(w.figures().problem(), None, "the problem clears when a write works");
    assert_eq!(disk.lock().unwrap().opens, 1, "a write failure does not reopen (rescan) the store");
}

#[tokio::test]
async fn a_queue_that_cannot_be_opened_refuses_and_is_opened_when_it_can_be() {
    let disk = Shared::default();
    disk.lock().unwrap().open_fails = true;
    let w = start(&disk, 64);
    w.try_send(Request::Push(msg(1))).unwrap();
    assert!(matches!(next(&w).await, Event::Refused(_)));
    w.try_send(Request::Read { after: 0, max: 10, tag: 1 }).unwrap();
    assert!(matches!(next(&w).await, Event::Records { failed: true, .. }), "nothing to read while closed");
    let why = w.figures().problem().unwrap();
    assert!(why.contains("cannot be opened") && why.contains("remount it read-write"), "{why}");

    disk.lock().unwrap().open_fails = false; // the remount
    match next(&w).await {
        Event::Opened { first, .. } => assert!(first),
        other => panic!("{other:?}"),
    }
    assert!(disk.lock().unwrap().opens >= 2, "tried again");
    assert_eq!(w.figures().problem(), None);
    w.try_send(Request::Push(msg(2))).unwrap();
    assert!(matches!(next(&w).await, Event::Stored { first: 1, .. }));
}

#[tokio::test]
async fn a_failed_fsync_closes_the_store_and_reopens_it() {
    let disk = Shared::default();
    let w = start(&disk, 64);
    assert!(matches!(next(&w).await, Event::Opened { first: true, .. }));
    w.try_send(Request::Push(msg(1))).unwrap();
    assert!(matches!(next(&w).await, Event::Stored { .. }));
    {
        let mut d = disk.lock().unwrap();
        d.fsync_fails = true;
        d.open_fails = true; // held closed until the test has looked
    }
    w.try_send(Request::Flush).unwrap();
    loop {
        match next(&w).await {
            Event::Flushed { ok } => {
                assert!(!ok);
                break;
            }
            // The policy's own fsync may have failed first, and the store been reopened once.
            Event::Opened { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    let why = w.figures().problem().expect("a problem while the store is closed");
    assert!(why.contains("test queue in /q"), "{why}");
    w.try_send(Request::Push(msg(2))).unwrap();
    assert!(matches!(next(&w).await, Event::Refused(_)), "refused while closed");
    {
        let mut d = disk.lock().unwrap();
        d.fsync_fails = false;
        d.open_fails = false;
    }
    loop {
        if let Event::Opened { first, last_seq, .. } = next(&w).await {
            assert!(!first, "a reopen");
            assert_eq!(last_seq, 1, "what was stored is there after the rescan");
            break;
        }
    }
    assert!(disk.lock().unwrap().opens >= 2);
    assert_eq!(w.figures().problem(), None);
    let (seq, _) = push_until_stored(&w, || msg(3)).await;
    assert_eq!(seq, 2);
}

#[tokio::test]
async fn a_hung_fsync_never_makes_the_sender_wait() {
    let disk = Shared::default();
    let (release, gate) = std_mpsc::channel();
    let (started_tx, started) = std_mpsc::channel();
    let w = start(&disk, 4);
    assert!(matches!(next(&w).await, Event::Opened { .. }));
    {
        let mut d = disk.lock().unwrap();
        d.fsync_gate = Some(gate);
        d.fsync_started = Some(started_tx);
    }
    w.try_send(Request::Push(msg(1))).unwrap();
    // The writer is now inside an fsync that does not return until released.
    started.recv_timeout(Duration::from_secs(10)).expect("the fsync started");
    let mut taken = 0;
    let mut given_back = 0;
    for i in 2..=20 {
        match w.try_send(Request::Push(msg(i))) {
            Ok(()) => taken += 1,
            Err(Request::Push(m)) => {
                assert_eq!(m, msg(i));
                given_back += 1;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!((taken, given_back), (4, 15), "the channel holds 4; the rest come back at once, none waits");
    release.send(()).unwrap();
    let mut stored = Vec::new();
    while stored.len() < 5 {
        if let Event::Stored { first, last, .. } = next(&w).await {
            stored.extend(first..=last);
        }
    }
    assert_eq!(stored, [1, 2, 3, 4, 5], "what was taken is stored, in order");
}

#[test]
fn the_real_store_is_driven_through_the_trait() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let w = Writer::open(WriterConfig::new("test queue", dir.path()), StoreConfig::new(dir.path())).unwrap();
    rt.block_on(async {
        assert!(matches!(next(&w).await, Event::Opened { first: true, .. }));
        w.try_send(Request::Push(msg(1))).unwrap();
        assert!(matches!(next(&w).await, Event::Stored { first: 1, last: 1, len: 1 }));
        w.try_send(Request::Read { after: 0, max: 8, tag: 0 }).unwrap();
        assert!(matches!(next(&w).await, Event::Records { records, upto: 1, .. } if records.len() == 1));
    });
    w.close().unwrap().join().unwrap();
    let (store, _) = Store::open(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(store.len(), 1, "on disk after the writer ended");
}
