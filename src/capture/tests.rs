use std::time::UNIX_EPOCH;

use opencv::core::{Scalar, CV_8UC3};

use super::*;
use crate::config::Size;

fn cfg(queue: usize) -> CaptureConfig {
    CaptureConfig {
        dir: None,
        ng: true,
        uncertain: true,
        error: true,
        ok_every: None,
        ok_per_hour: None,
        format: ImageFormat::Png,
        jpeg_quality: 95,
        max_bytes: Size(1_000_000_000),
        max_files: 1000,
        queue,
    }
}

fn image() -> Mat {
    Mat::new_rows_cols_with_default(24, 32, CV_8UC3, Scalar::new(10.0, 200.0, 30.0, 0.0)).unwrap()
}

fn record(part_id: u64, verdict: &str, secs: u64) -> Record {
    Record {
        task: "t".into(),
        camera: "c".into(),
        part_id,
        at: UNIX_EPOCH + Duration::from_secs(1_790_000_000 + secs),
        reason: if verdict == "OK" { Reason::OkSample } else { Reason::Ng },
        image: image(),
        sidecar: json!({ "part_id": part_id, "verdict": verdict, "task": "t" }),
    }
}

fn start(dir: &Path, c: CaptureConfig) -> (Capture, Arc<CaptureStats>) {
    let stats = Arc::new(CaptureStats::default());
    let cap = Capture::start(dir, vec![TaskCapture { task: "t".into(), config: c, stats: stats.clone() }]).unwrap();
    (cap, stats)
}

fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for day in std::fs::read_dir(dir.join("capture/t")).unwrap() {
        for f in std::fs::read_dir(day.unwrap().path()).unwrap() {
            out.push(f.unwrap().file_name().to_string_lossy().to_string());
        }
    }
    out.sort();
    out
}

#[test]
fn a_record_is_an_image_and_its_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let (cap, stats) = start(dir.path(), cfg(4));
    assert!(cap.offer("t", record(7, "NG", 0)));
    cap.stop();
    let names = files(dir.path());
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[0].starts_with("000007-NG-") && names[0].ends_with(".json"), "{names:?}");
    assert!(names[1].ends_with(".png"), "{names:?}");
    let day = std::fs::read_dir(dir.path().join("capture/t")).unwrap().next().unwrap().unwrap().path();
    let doc: Value = serde_json::from_slice(&std::fs::read(day.join(&names[0])).unwrap()).unwrap();
    assert_eq!(doc["image"], json!(names[1]));
    assert_eq!((doc["width"].as_i64(), doc["height"].as_i64()), (Some(32), Some(24)));
    assert_eq!(doc["reason"], "ng");
    let back =
        opencv::imgcodecs::imread(day.join(&names[1]).to_str().unwrap(), opencv::imgcodecs::IMREAD_COLOR).unwrap();
    let px = *back.at_2d::<opencv::core::Vec3b>(3, 3).unwrap();
    assert_eq!(px.0, [10, 200, 30], "PNG is lossless, BGR kept");
    assert_eq!(stats.written.load(Ordering::Relaxed), 1);
    assert_eq!(stats.files.load(Ordering::Relaxed), 1);
    assert!(stats.bytes.load(Ordering::Relaxed) > 0);
}

#[test]
fn a_full_queue_drops_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (cap, stats) = start(dir.path(), cfg(2));
    // Hold the writer: it needs the index lock to finish a record.
    let store = cap.inner.tasks["t"].clone();
    let held = store.index.lock().unwrap();
    let mut accepted = 0;
    for i in 0..10 {
        if cap.offer("t", record(i, "NG", i)) {
            accepted += 1;
        }
    }
    // The writer may have taken one record off the queue before blocking: 2 or 3 accepted.
    assert!((2..=3).contains(&accepted), "{accepted}");
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 10 - accepted);
    drop(held);
    cap.stop();
    assert_eq!(stats.written.load(Ordering::Relaxed), accepted);
}

#[test]
fn the_oldest_records_go_first_by_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(16);
    c.max_files = 3;
    let (cap, stats) = start(dir.path(), c);
    for i in 1..=5 {
        assert!(cap.offer("t", record(i, "NG", i)));
    }
    cap.stop();
    let ids: Vec<String> =
        files(dir.path()).into_iter().filter(|n| n.ends_with(".json")).map(|n| n[..6].to_string()).collect();
    assert_eq!(ids, vec!["000003", "000004", "000005"]);
    assert_eq!(stats.deleted.load(Ordering::Relaxed), 2);
    assert_eq!(stats.files.load(Ordering::Relaxed), 3);
}

#[test]
fn the_oldest_records_go_first_by_bytes_and_a_restart_knows_them() {
    let dir = tempfile::tempdir().unwrap();
    let (cap, stats) = start(dir.path(), cfg(16));
    cap.offer("t", record(1, "NG", 1));
    cap.stop();
    let one = stats.bytes.load(Ordering::Relaxed);
    // Room for two records and a half: the third write deletes the first.
    let mut c = cfg(16);
    c.max_bytes = Size(one * 5 / 2);
    let (cap, stats) = start(dir.path(), c);
    assert_eq!(stats.files.load(Ordering::Relaxed), 1, "the scan at start found the record");
    cap.offer("t", record(2, "NG", 2));
    cap.offer("t", record(3, "NG", 3));
    cap.stop();
    let jsons: Vec<String> = files(dir.path()).into_iter().filter(|n| n.ends_with(".json")).collect();
    assert_eq!(jsons.len(), 2, "{jsons:?}");
    assert!(jsons[0].starts_with("000002") && jsons[1].starts_with("000003"), "{jsons:?}");
    assert_eq!(stats.deleted.load(Ordering::Relaxed), 1);
    assert!(stats.bytes.load(Ordering::Relaxed) <= one * 5 / 2);
}

#[test]
fn temp_files_and_orphan_images_are_never_records() {
    let dir = tempfile::tempdir().unwrap();
    let day = dir.path().join("capture/t/2026-12-01");
    std::fs::create_dir_all(&day).unwrap();
    std::fs::write(day.join("000001-NG-101010000.png.tmp"), b"half").unwrap();
    std::fs::write(day.join("000002-NG-101011000.json.tmp"), b"{").unwrap();
    // A crash between the image's rename and the sidecar's.
    std::fs::write(day.join("000002-NG-101011000.png"), b"image").unwrap();
    std::fs::write(day.join("000003-NG-101012000.png"), b"image").unwrap();
    std::fs::write(day.join("000003-NG-101012000.json"), b"{}").unwrap();
    let readonly = store::Index::scan_readonly(&dir.path().join("capture/t")).unwrap();
    assert_eq!(readonly.len(), 1, "export never sees a temp file or an orphan: {readonly:?}");
    assert!(day.join("000001-NG-101010000.png.tmp").exists(), "a read-only scan touches nothing");
    let (cap, stats) = start(dir.path(), cfg(4));
    assert_eq!(stats.files.load(Ordering::Relaxed), 1);
    cap.stop();
    let mut left: Vec<String> =
        std::fs::read_dir(&day).unwrap().map(|f| f.unwrap().file_name().to_string_lossy().to_string()).collect();
    left.sort();
    assert_eq!(left, vec!["000003-NG-101012000.json", "000003-NG-101012000.png"], "leftovers cleaned at start");
}

#[test]
fn a_mark_rewrites_the_sidecar_of_the_newest_record_of_the_part() {
    let dir = tempfile::tempdir().unwrap();
    let (cap, _) = start(dir.path(), cfg(4));
    cap.offer("t", record(5, "NG", 1));
    // The node restarted: part 5 again, later.
    cap.offer("t", record(5, "NG", 100));
    cap.stop();
    let (cap, _) = start(dir.path(), cfg(4));
    cap.mark("t", 5, Mark::FalseReject, "operator").unwrap();
    let jsons: Vec<String> = files(dir.path()).into_iter().filter(|n| n.ends_with(".json")).collect();
    let day = std::fs::read_dir(dir.path().join("capture/t")).unwrap().next().unwrap().unwrap().path();
    let read = |n: &str| -> Value { serde_json::from_slice(&std::fs::read(day.join(n)).unwrap()).unwrap() };
    assert!(read(&jsons[0])["review"].is_null(), "the older record of part 5 is untouched");
    let marked = read(&jsons[1]);
    assert_eq!(marked["review"]["mark"], "false-reject");
    assert_eq!(marked["review"]["by"], "operator");
    assert_eq!(marked["verdict"], "NG", "the rest of the sidecar is kept");
    assert!(files(dir.path()).iter().all(|n| !n.ends_with(".tmp")), "no temp file left");
    let e = cap.mark("t", 99, Mark::Good, "op").unwrap_err();
    assert!(e.contains("part 99") && e.contains("capture/t"), "{e}");
    let e = cap.mark("other", 5, Mark::Good, "op").unwrap_err();
    assert!(e.contains("`other`") && e.contains("t"), "{e}");
    assert!(Mark::parse("bogus").unwrap_err().contains("false-reject, missed-defect, good, defect"));
    cap.stop();
}

#[test]
fn ok_parts_are_sampled_one_in_n_and_by_the_hour() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(4);
    c.ok_every = Some(3);
    let (cap, _) = start(dir.path(), c);
    let now = Instant::now();
    let kept: Vec<bool> = (0..9).map(|_| cap.wants_ok_at("t", now)).collect();
    assert_eq!(kept, [false, false, true, false, false, true, false, false, true]);
    assert!(!cap.wants_ok("other"), "a task without capture keeps nothing");
    cap.stop();

    let mut c = cfg(4);
    c.ok_per_hour = Some(4);
    let (cap, _) = start(dir.path(), c);
    assert!(cap.wants_ok_at("t", now), "the first OK part is kept");
    assert!(!cap.wants_ok_at("t", now + Duration::from_secs(899)));
    assert!(cap.wants_ok_at("t", now + Duration::from_secs(900)), "then one each quarter of an hour");
    assert!(!cap.wants_ok_at("t", now + Duration::from_secs(1000)));
    cap.stop();
}

#[test]
fn a_write_error_is_counted_and_the_writer_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (cap, stats) = start(dir.path(), cfg(4));
    // A file where the day's folder must go: every write of that day fails.
    let day = dir.path().join("capture/t").join(&rfc3339(record(1, "NG", 0).at)[..10]);
    std::fs::write(&day, b"in the way").unwrap();
    cap.offer("t", record(1, "NG", 0));
    cap.offer("t", record(2, "NG", 86_400));
    cap.stop();
    assert_eq!(stats.errors.load(Ordering::Relaxed), 1);
    assert_eq!(stats.written.load(Ordering::Relaxed), 1, "the next day's record was written");
}

#[test]
fn export_labels_follow_marks_over_verdicts() {
    use export::{label, Label};
    let ng = json!({"verdict": "NG", "ng_class": "scratch"});
    assert_eq!(label(&ng), Label::Defect("scratch".into()));
    assert_eq!(label(&json!({"verdict": "OK"})), Label::Good);
    assert_eq!(label(&json!({"verdict": "ERROR"})), Label::Unknown);
    assert_eq!(label(&json!({"verdict": "NG", "review": {"mark": "false-reject"}})), Label::Good);
    assert_eq!(label(&json!({"verdict": "OK", "review": {"mark": "missed-defect"}})), Label::Defect("defect".into()));
    assert_eq!(label(&json!({"verdict": "ERROR", "review": {"mark": "good"}})), Label::Good);
    let b = export::boxes(
        &json!({"verdict": "NG", "width": 50, "height": 25, "image_scale": 2,
                "detections": [{"class": "dent", "score": 0.9, "box": [10.0, 5.0, 60.0, 45.0]}]}),
        &Label::Defect("dent".into()),
    );
    assert_eq!(b.len(), 1);
    assert!((b[0].cx - 0.35).abs() < 1e-9 && (b[0].cy - 0.5).abs() < 1e-9, "{b:?}");
    assert!((b[0].w - 0.5).abs() < 1e-9 && (b[0].h - 0.8).abs() < 1e-9, "full-frame pixels over the full frame: {b:?}");
}
