use super::*;

fn cfg(dir: &Path) -> StoreConfig {
    StoreConfig {
        dir: dir.to_path_buf(),
        max_bytes: 1 << 20,
        segment_bytes: 4096,
        fsync_every: Duration::ZERO,
        when_full: WhenFull::DropOldest,
    }
}

fn open(c: &StoreConfig) -> (Store, Recovery) {
    Store::open(c.clone()).expect("open")
}

fn push_n(s: &mut Store, n: usize) -> Vec<u64> {
    (0..n).map(|i| s.push("line/1/verdict", format!("payload-{i:04}").as_bytes(), 1, false).unwrap()).collect()
}

fn seqs(s: &Store) -> Vec<u64> {
    s.try_peek(usize::MAX).unwrap().iter().map(|r| r.seq).collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn push_peek_ack_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, rec) = open(&cfg(dir.path()));
    assert_eq!((rec.records, rec.next_seq), (0, 1));
    assert_eq!(push_n(&mut s, 5), [1, 2, 3, 4, 5]);
    s.push("t/retained", b"r", 2, true).unwrap();
    let all = s.peek(10);
    assert_eq!(all.len(), 6);
    assert_eq!(
        all[0],
        Record { seq: 1, topic: "line/1/verdict".into(), payload: b"payload-0000".to_vec(), qos: 1, retain: false }
    );
    assert_eq!((all[5].qos, all[5].retain, all[5].topic.as_str()), (2, true, "t/retained"));
    assert_eq!(s.peek(2).iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
    s.ack(3).unwrap();
    assert_eq!(seqs(&s), [4, 5, 6]);
    assert_eq!(s.len(), 3);
    s.ack(2).unwrap(); // behind the position: nothing happens
    assert_eq!(s.len(), 3);
    assert!(matches!(s.ack(7), Err(StoreError::AckBeyondEnd { seq: 7, last: 6 })));
    assert!(matches!(s.push("t", b"", 3, false), Err(StoreError::Invalid(_))));
}

#[test]
fn seq_is_never_reused_after_a_lost_tail() {
    // Records pushed (and maybe sent) but lost to a power cut before fsync: their numbers must
    // not be given to new messages, or de-duplication downstream would drop those.
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.fsync_every = Duration::from_secs(3600);
    {
        let (mut s, _) = open(&c);
        push_n(&mut s, 5);
        assert_eq!(seqs(&s), [1, 2, 3, 4, 5], "unsynced records are peekable");
    }
    let seg = segment_files(dir.path()).pop().unwrap();
    OpenOptions::new().write(true).open(&seg).unwrap().set_len(0).unwrap(); // the power cut
    let (mut s, rec) = open(&c);
    assert_eq!(rec.records, 0);
    assert_eq!(rec.next_seq, SEQ_BLOCK + 1);
    assert_eq!(s.last_seq(), SEQ_BLOCK);
    assert_eq!(s.push("t", b"x", 1, false).unwrap(), SEQ_BLOCK + 1);
}

#[test]
fn reopen_keeps_unacked_and_seq_continues() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    {
        let (mut s, _) = open(&c);
        push_n(&mut s, 10);
        s.ack(4).unwrap();
    }
    let (mut s, rec) = open(&c);
    // Numbers continue after the block reserved by the previous run.
    let next = SEQ_BLOCK + 1;
    assert_eq!((rec.records, rec.acked, rec.next_seq, rec.lost_records), (6, 4, next, 0));
    assert_eq!(s.last_seq(), next - 1);
    assert_eq!(seqs(&s), (5..=10).collect::<Vec<_>>());
    assert_eq!(s.push("t", b"x", 0, false).unwrap(), next);
    // Everything acknowledged, then reopened: the seq still increases.
    s.ack(next).unwrap();
    drop(s);
    let (mut s, rec) = open(&c);
    assert_eq!((rec.records, rec.next_seq), (0, next + SEQ_BLOCK));
    assert_eq!(s.push("t", b"x", 0, false).unwrap(), next + SEQ_BLOCK);
}

#[test]
fn torn_tail_recovers_all_complete_records() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    {
        let (mut s, _) = open(&c);
        push_n(&mut s, 5);
    }
    let seg = segment_files(dir.path()).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    let one = len / 5;
    // Cut the last record in the middle.
    OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - one / 2).unwrap();
    let (mut s, rec) = open(&c);
    assert_eq!(rec.records, 4);
    assert_eq!(rec.torn_tail_bytes, one - one / 2);
    assert!(rec.corrupt_segments.is_empty());
    assert_eq!(fs::metadata(&seg).unwrap().len(), 4 * one, "tail cut off");
    assert_eq!(seqs(&s), [1, 2, 3, 4]);
    // Appends continue after the last good record and read back.
    let after = s.push("t", b"after", 1, false).unwrap();
    assert!(after > 5);
    drop(s);
    let (s, rec) = open(&c);
    assert_eq!(rec.torn_tail_bytes, 0);
    assert_eq!(seqs(&s), [1, 2, 3, 4, after]);
}

#[test]
fn corrupt_byte_in_earlier_segment_loses_only_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    {
        let (mut s, _) = open(&c);
        push_n(&mut s, 600); // several 4 KiB segments
    }
    let files = segment_files(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    let victim = &files[1];
    let first = segment::parse_segment_name(victim.file_name().unwrap().to_str().unwrap()).unwrap();
    let mut data = fs::read(victim).unwrap();
    let one = data.len()
        / (segment::parse_segment_name(files[2].file_name().unwrap().to_str().unwrap()).unwrap() - first) as usize;
    // A byte in the payload of the third record of the segment.
    data[2 * one + 30] ^= 0x5a;
    fs::write(victim, &data).unwrap();
    let (mut s, rec) = open(&c);
    assert_eq!(rec.corrupt_segments, vec![victim.clone()]);
    assert_eq!(rec.lost_records, 1);
    assert_eq!(rec.lost_bytes, one as u64);
    assert_eq!(rec.torn_tail_bytes, 0);
    assert_eq!(rec.records, 599);
    let got = seqs(&s);
    let want: Vec<u64> = (1..=600).filter(|&q| q != first + 2).collect();
    assert_eq!(got, want);
    assert!(s.push("t", b"x", 1, false).unwrap() > 600);
}

#[test]
fn damage_at_end_of_earlier_segment_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    {
        let (mut s, _) = open(&c);
        push_n(&mut s, 300);
    }
    let files = segment_files(dir.path());
    let victim = &files[0];
    let len = fs::metadata(victim).unwrap().len();
    // Zero the last 100 bytes (more than one record) of the first segment.
    let mut data = fs::read(victim).unwrap();
    let n = data.len();
    data[n - 100..].fill(0);
    fs::write(victim, &data).unwrap();
    let (s, rec) = open(&c);
    assert_eq!(rec.corrupt_segments, vec![victim.clone()]);
    assert_eq!(rec.torn_tail_bytes, 0);
    let got = seqs(&s);
    assert_eq!(got.len() as u64 + rec.lost_records, 300);
    assert!(rec.lost_records >= 2 && rec.lost_bytes >= 100 && rec.lost_bytes < len);
    assert!(got.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn bounds_drop_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.segment_bytes = 1024;
    c.max_bytes = 4096;
    let (mut s, _) = open(&c);
    let pushed = push_n(&mut s, 400);
    assert_eq!(pushed.last(), Some(&400));
    assert!(s.bytes() <= c.max_bytes, "{}", s.bytes());
    assert!(s.dropped() > 0);
    let got = seqs(&s);
    assert_eq!(got.len() as u64 + s.dropped(), 400);
    // The newest survive, contiguous.
    assert_eq!(*got.last().unwrap(), 400);
    assert!(got.windows(2).all(|w| w[1] == w[0] + 1));
    let on_disk: u64 = segment_files(dir.path()).iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    assert_eq!(on_disk, s.bytes());
}

#[test]
fn bounds_drop_newest() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.segment_bytes = 1024;
    c.max_bytes = 4096;
    c.when_full = WhenFull::DropNewest;
    let (mut s, _) = open(&c);
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..400 {
        match s.push("line/1/verdict", format!("payload-{i:04}").as_bytes(), 1, false) {
            Ok(q) => accepted.push(q),
            Err(StoreError::Full { .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused > 0);
    assert_eq!(s.dropped(), refused);
    assert!(s.bytes() <= c.max_bytes);
    // The oldest are kept; refused pushes do not use up sequence numbers.
    assert_eq!(accepted, (1..=accepted.len() as u64).collect::<Vec<_>>());
    assert_eq!(seqs(&s), accepted);
    // Acknowledging frees room again.
    s.ack(*accepted.last().unwrap()).unwrap();
    assert_eq!(s.push("t", b"x", 1, false).unwrap(), accepted.len() as u64 + 1);
}

#[test]
fn too_large_and_bad_config_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.segment_bytes = 256;
    c.max_bytes = 512;
    let (mut s, _) = open(&c);
    assert!(matches!(s.push("t", &[0; 300], 1, false), Err(StoreError::TooLarge { .. })));
    c.max_bytes = 511;
    assert!(matches!(Store::open(c.clone()), Err(StoreError::Config(_))));
    c.segment_bytes = 10;
    assert!(matches!(Store::open(c), Err(StoreError::Config(_))));
}

#[test]
fn ack_deletes_segments() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let (mut s, _) = open(&c);
    push_n(&mut s, 600);
    let before = segment_files(dir.path());
    assert!(before.len() >= 3);
    // Ack up to the middle of the second segment: only the first goes.
    let second = segment::parse_segment_name(before[1].file_name().unwrap().to_str().unwrap()).unwrap();
    s.ack(second + 1).unwrap();
    assert_eq!(segment_files(dir.path()), before[1..].to_vec());
    // Ack everything: one fresh, empty segment is left.
    s.ack(600).unwrap();
    let after = segment_files(dir.path());
    assert_eq!(after.len(), 1);
    assert_eq!(fs::metadata(&after[0]).unwrap().len(), 0);
    assert_eq!((s.len(), s.bytes()), (0, 0));
    assert_eq!(s.push("t", b"x", 1, false).unwrap(), 601);
}

#[test]
fn ledger_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    {
        let (mut s, _) = open(&c);
        push_n(&mut s, 20);
        s.ack(13).unwrap();
    }
    assert_eq!(fs::read(dir.path().join(LEDGER)).unwrap().len(), LEDGER_LEN);
    let (s, rec) = open(&c);
    assert_eq!((rec.acked, rec.ledger_reset), (13, false));
    assert_eq!(s.acked(), 13);
    assert_eq!(seqs(&s), (14..=20).collect::<Vec<_>>());
}

#[test]
fn crashed_ledger_tmp_write_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    {
        let (mut s, _) = open(&c);
        push_n(&mut s, 10);
        s.ack(3).unwrap();
    }
    // A crash after writing (part of) ack.tmp, before the rename: a torn tmp file claiming more.
    let mut torn = Vec::new();
    torn.extend_from_slice(LEDGER_MAGIC);
    torn.extend_from_slice(&9u64.to_le_bytes());
    torn.extend_from_slice(&[0xff; 5]);
    fs::write(dir.path().join(LEDGER_TMP), &torn).unwrap();
    let (s, rec) = open(&c);
    assert_eq!((rec.acked, rec.ledger_reset), (3, false));
    assert!(!dir.path().join(LEDGER_TMP).exists());
    assert_eq!(seqs(&s), (4..=10).collect::<Vec<_>>());
}

#[test]
fn damaged_ledger_resends_everything() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    {
        let (mut s, _) = open(&c);
        push_n(&mut s, 10);
        s.ack(3).unwrap();
    }
    let path = dir.path().join(LEDGER);
    let mut b = fs::read(&path).unwrap();
    b[9] ^= 1;
    fs::write(&path, b).unwrap();
    let (s, rec) = open(&c);
    assert_eq!((rec.acked, rec.ledger_reset, rec.next_seq), (0, true, 11), "numbers continue after the log");
    assert_eq!(seqs(&s), (1..=10).collect::<Vec<_>>());
}

#[test]
fn crash_between_ledger_and_segment_delete_is_harmless() {
    // Ledger written, segment deletes lost: reopen skips and deletes the acknowledged segments.
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    {
        let (mut s, _) = open(&c);
        push_n(&mut s, 600);
    }
    let files = segment_files(dir.path());
    write_ledger(dir.path(), 600, SEQ_BLOCK).unwrap();
    let (mut s, rec) = open(&c);
    assert_eq!((rec.records, rec.segments), (0, files.len()));
    assert!(seqs(&s).is_empty());
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert!(s.push("t", b"x", 1, false).unwrap() > 600);
}

#[test]
fn damage_after_open_is_skipped_on_peek() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let (mut s, _) = open(&c);
    push_n(&mut s, 3);
    let seg = segment_files(dir.path()).pop().unwrap();
    let mut data = fs::read(&seg).unwrap();
    let one = data.len() / 3;
    data[one + 25] ^= 0xff;
    fs::write(&seg, data).unwrap();
    assert_eq!(seqs(&s), [1, 3]);
    assert_eq!((s.lost(), s.len()), (1, 2));
}

#[test]
fn io_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    fs::write(&file, b"").unwrap();
    let err = Store::open(cfg(&file.join("q"))).err().expect("error");
    assert!(matches!(err, StoreError::Io { .. }));
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[test]
fn damaged_record_then_drop_oldest_keeps_counts_straight() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.segment_bytes = 1024;
    c.max_bytes = 4096;
    let (mut s, _) = open(&c);
    push_n(&mut s, 10);
    let seg = segment_files(dir.path()).remove(0);
    let mut data = fs::read(&seg).unwrap();
    data[30] ^= 0xff; // record 1
    fs::write(&seg, data).unwrap();
    assert_eq!(seqs(&s)[0], 2);
    assert_eq!((s.lost(), s.len()), (1, 9));
    push_n(&mut s, 400); // the damaged segment is dropped by the bound
    assert_eq!(s.len(), seqs(&s).len());
    assert_eq!(s.lost(), 1);
    assert_eq!(s.len() as u64 + s.dropped() + s.lost(), 410);
}

#[test]
fn ack_deletes_segments_across_a_restart_jump() {
    // After a restart the numbers jump by up to SEQ_BLOCK; acknowledged segments of the previous
    // run must still go.
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    {
        let (mut s, _) = open(&c);
        push_n(&mut s, 600);
    }
    let (mut s, _) = open(&c);
    let second = push_n(&mut s, 600);
    assert!(second[0] > SEQ_BLOCK);
    s.ack(600).unwrap();
    let old: Vec<PathBuf> = segment_files(dir.path())
        .into_iter()
        .filter(|p| segment::parse_segment_name(p.file_name().unwrap().to_str().unwrap()).unwrap() <= 600)
        .collect();
    assert!(old.len() <= 1, "{old:?}"); // the last segment of the first run holds the first of the second
    assert_eq!(seqs(&s), second);
    s.ack(*second.last().unwrap()).unwrap();
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert_eq!(s.bytes(), 0);
}

#[test]
fn a_segment_named_near_u64_max_is_damage_not_a_panic() {
    // Names and numbers come from the disk: a segment named with the largest u64 (20 digits, a
    // valid name) made `seq + SEQ_BLOCK - 1` and `last_seq + 1` overflow. Such a segment is
    // damage: reported with its path, its records counted as lost, deleted (nothing in it can be
    // sent); the intact queue is recovered and numbering goes on from it.
    for (name, rec_seq) in [(u64::MAX, u64::MAX), (u64::MAX - SEQ_BLOCK / 2, u64::MAX - 3), (MAX_SEQ + 1, 7)] {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path());
        {
            let (mut s, _) = open(&c);
            push_n(&mut s, 3);
        }
        let bad = dir.path().join(segment::segment_name(name));
        let mut b = Vec::new();
        segment::encode(&mut b, rec_seq, "line/1/verdict", b"x", 1, false);
        fs::write(&bad, &b).unwrap();
        let (mut s, rec) = open(&c);
        assert_eq!(rec.corrupt_segments, vec![bad.clone()], "{name}");
        assert_eq!((rec.lost_records, rec.lost_bytes), (1, b.len() as u64), "{name}");
        assert_eq!((rec.records, rec.next_seq), (3, SEQ_BLOCK + 1), "{name}");
        assert!(!bad.exists(), "{name}: nothing in it can be sent");
        assert_eq!(seqs(&s), [1, 2, 3]);
        assert_eq!(s.push("t", b"x", 1, false).unwrap(), SEQ_BLOCK + 1);
        drop(s);
        let (s, rec) = open(&c);
        assert!(rec.corrupt_segments.is_empty(), "{name}: reported once");
        assert_eq!(seqs(&s), [1, 2, 3, SEQ_BLOCK + 1]);
    }
}

#[test]
fn record_numbers_and_ledgers_beyond_max_seq_are_damage() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    {
        let (mut s, _) = open(&c);
        push_n(&mut s, 3);
    }
    // A valid record numbered u64::MAX appended to the newest segment: damage, not the last seq.
    let seg = segment_files(dir.path()).pop().unwrap();
    let mut b = Vec::new();
    segment::encode(&mut b, u64::MAX, "t", b"x", 1, false);
    OpenOptions::new().append(true).open(&seg).unwrap().write_all(&b).unwrap();
    let (mut s, rec) = open(&c);
    assert_eq!((rec.records, rec.next_seq, rec.torn_tail_bytes), (3, SEQ_BLOCK + 1, b.len() as u64));
    assert_eq!(s.push("t", b"x", 1, false).unwrap(), SEQ_BLOCK + 1);
    drop(s);
    // A ledger with a valid CRC whose numbers are beyond MAX_SEQ: unreadable, not trusted.
    write_ledger(dir.path(), u64::MAX, u64::MAX).unwrap();
    let (mut s, rec) = open(&c);
    assert!(rec.ledger_reset);
    assert_eq!((rec.acked, rec.records), (0, 4));
    assert!(s.push("t", b"x", 1, false).unwrap() > SEQ_BLOCK + 1);
}

#[test]
fn pushing_past_max_seq_is_an_error_not_an_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    // The highest number a segment may be named with: the store opens, takes one record, and
    // then refuses (the numbers are used up) instead of wrapping.
    fs::write(dir.path().join(segment::segment_name(MAX_SEQ)), b"").unwrap();
    let (mut s, rec) = open(&c);
    assert_eq!(rec.next_seq, MAX_SEQ);
    assert_eq!(s.push("t", b"x", 1, false).unwrap(), MAX_SEQ);
    assert!(matches!(s.push("t", b"x", 1, false), Err(StoreError::Exhausted)));
    assert_eq!(seqs(&s), [MAX_SEQ]);
}

#[test]
fn the_queue_is_for_the_services_user_alone_whatever_the_umask() {
    // Run by hand, the daemon inherits the shell's umask (0022 here): without explicit modes the
    // queue's messages were world-readable. Folders 0700, segments and ledger 0600.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(&dir.path().join("state/queue"));
    let (mut s, _) = open(&c);
    push_n(&mut s, 3);
    s.ack(1).unwrap();
    assert_eq!((mode(&dir.path().join("state")), mode(&c.dir)), (0o700, 0o700));
    assert_eq!(mode(&c.dir.join(LEDGER)), 0o600);
    let segs = segment_files(&c.dir);
    assert!(!segs.is_empty());
    for seg in segs {
        assert_eq!(mode(&seg), 0o600, "{}", seg.display());
    }
}

#[test]
fn read_after_skips_what_the_reader_has_across_segments_and_acks() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = open(&cfg(dir.path())); // 4 KiB segments: 200 records span several
    push_n(&mut s, 200);
    assert!(segment_files(dir.path()).len() > 2);
    let got: Vec<u64> = s.read_after(150, 5).unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(got, [151, 152, 153, 154, 155]);
    assert!(s.read_after(200, 5).unwrap().is_empty());
    s.ack(160).unwrap();
    let got: Vec<u64> = s.read_after(10, 3).unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(got, [161, 162, 163], "acknowledged records are not read, whatever `after` says");
    assert_eq!(s.read_after(0, usize::MAX).unwrap().len(), 40);
}
