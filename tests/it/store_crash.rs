//! Crash tests of the disk queue ([`linesight::store`]): a child process (this test binary,
//! re-executed) pushes and acknowledges as fast as it can and prints what the store confirmed;
//! the parent SIGKILLs it at an arbitrary moment, reopens the store and checks that everything
//! confirmed is there, in order, once.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use linesight::store::{Store, StoreConfig, WhenFull};

const CHILD_DIR: &str = "LINESIGHT_STORE_CRASH_CHILD";
const CHILD_FSYNC_MS: &str = "LINESIGHT_STORE_CRASH_FSYNC_MS";
/// The child's test, by its full name in the `it` test binary (tests/it/main.rs), run with
/// `--exact` so that the child runs nothing else.
const CHILD_TEST: &str = "store_crash::crash_child";

fn config(dir: &Path, fsync_every: Duration) -> StoreConfig {
    StoreConfig {
        dir: dir.to_path_buf(),
        max_bytes: 64 << 20, // never reached here: nothing may be dropped
        segment_bytes: 4096, // small: segments roll and get deleted all the time
        fsync_every,
        when_full: WhenFull::DropOldest,
    }
}

/// The child's body; a no-op unless the parent started this binary with `CHILD_DIR` set.
/// Prints `push N` once a push of N returned (with `fsync_every` zero: after its fsync) and
/// `ack N` once an ack returned; acknowledges every 50 pushes, leaving the last 20 unacked.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else { return };
    let ms: u64 = std::env::var(CHILD_FSYNC_MS).ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let (mut store, _) = Store::open(config(Path::new(&dir), Duration::from_millis(ms))).expect("child open");
    let mut out = std::io::stdout().lock();
    let started = Instant::now();
    let mut i = 0u64;
    // Bounded, so a child the parent failed to kill does not run forever.
    while started.elapsed() < Duration::from_secs(20) {
        let seq = store.push("line/1/verdict", format!("{{\"n\":{i}}}").as_bytes(), 1, false).expect("push");
        writeln!(out, "push {seq}").unwrap();
        out.flush().unwrap();
        i += 1;
        if i % 50 == 0 {
            let oldest = store.peek(usize::MAX);
            if oldest.len() > 20 {
                let upto = oldest[oldest.len() - 21].seq;
                store.ack(upto).expect("ack");
                writeln!(out, "ack {upto}").unwrap();
                out.flush().unwrap();
            }
        }
    }
}

/// Kills the child if a check fails while it runs.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Default)]
struct Confirmed {
    pushed: Vec<u64>,
    acked: u64,
}

/// Runs the child on `dir`, SIGKILLs it `run_for` after its first confirmed push, and returns
/// what it confirmed (only complete lines count).
fn run_child(dir: &Path, fsync_ms: u64, run_for: Duration) -> Confirmed {
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .env(CHILD_FSYNC_MS, fsync_ms.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let mut guard = Guard(child);
    let stdout = guard.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut got = Confirmed::default();
        let mut line = Vec::new();
        let mut first = Some(tx);
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if line.last() != Some(&b'\n') {
                break; // cut off by the kill: not confirmed
            }
            let text = String::from_utf8_lossy(&line);
            let mut words = text.split_whitespace();
            match (words.next(), words.next().and_then(|n| n.parse::<u64>().ok())) {
                (Some("push"), Some(n)) => {
                    got.pushed.push(n);
                    if let Some(tx) = first.take() {
                        let _ = tx.send(());
                    }
                }
                (Some("ack"), Some(n)) => got.acked = got.acked.max(n),
                _ => {} // the test harness's own lines
            }
        }
        got
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("child confirmed no push within 10 s");
    thread::sleep(run_for);
    guard.0.kill().expect("SIGKILL child"); // Child::kill is SIGKILL on Unix
    guard.0.wait().unwrap();
    reader.join().unwrap()
}

/// Reopens the store after a kill and returns the queued sequence numbers, checking recovery
/// found no damage (a SIGKILL loses nothing written) and the order holds.
fn reopen(dir: &Path) -> (Vec<u64>, u64, u64) {
    let (store, rec) = Store::open(config(dir, Duration::ZERO)).expect("recovery must not fail");
    assert!(rec.corrupt_segments.is_empty(), "{rec:?}");
    assert_eq!(rec.lost_records, 0, "{rec:?}");
    let seqs: Vec<u64> = store.try_peek(usize::MAX).expect("read back").iter().map(|r| r.seq).collect();
    assert_eq!(seqs.len(), store.len());
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "order: {seqs:?}");
    // Acknowledged segments were deleted (records here are under 64 bytes): no disk leak.
    assert!(store.bytes() <= 2 * 4096 + 64 * seqs.len() as u64, "{} bytes for {} records", store.bytes(), seqs.len());
    (seqs, rec.acked, store.next_seq())
}

#[test]
fn sigkill_loses_nothing_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let mut all_pushed: Vec<u64> = Vec::new();
    let mut acked_confirmed = 0;
    let mut last_next = 1;
    for round in 0..5u64 {
        let got = run_child(dir.path(), 0, Duration::from_millis(150 + 61 * round));
        assert!(!got.pushed.is_empty());
        assert!(got.pushed.windows(2).all(|w| w[1] == w[0] + 1), "round {round}: gaps within a run");
        assert!(got.pushed[0] >= last_next, "round {round}: seq went back");
        all_pushed.extend(&got.pushed);
        acked_confirmed = acked_confirmed.max(got.acked);

        let (seqs, acked, next) = reopen(dir.path());
        assert!(acked >= acked_confirmed, "round {round}: ack {acked} < confirmed {acked_confirmed}");
        let present: BTreeSet<u64> = seqs.iter().copied().collect();
        assert_eq!(present.len(), seqs.len(), "duplicates");
        let missing: Vec<u64> = all_pushed.iter().copied().filter(|&q| q > acked && !present.contains(&q)).collect();
        assert!(missing.is_empty(), "round {round}: confirmed but lost: {missing:?}");
        // Unconfirmed extras: at most the one push per run that was killed before its line.
        let confirmed: BTreeSet<u64> = all_pushed.iter().copied().collect();
        let extra = seqs.iter().filter(|q| !confirmed.contains(q)).count() as u64;
        assert!(extra <= round + 1, "round {round}: {extra} records nobody pushed");
        assert!(next > *all_pushed.last().unwrap());
        last_next = next;
        eprintln!(
            "round {round}: {} confirmed, ack {acked}, {} queued, {extra} unconfirmed",
            got.pushed.len(),
            seqs.len()
        );
    }
    assert!(acked_confirmed > 0, "the children never acknowledged: ack crash points untested");
}

#[test]
fn sigkill_with_fsync_interval_recovers_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let got = run_child(dir.path(), 200, Duration::from_millis(500));
    assert!(!got.pushed.is_empty());
    let (_, _, next) = reopen(dir.path());
    assert!(next > *got.pushed.last().unwrap());
    // And once more on top of what is left.
    let got = run_child(dir.path(), 200, Duration::from_millis(300));
    assert!(got.pushed[0] >= next);
    reopen(dir.path());
}
