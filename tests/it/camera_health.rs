//! A frozen camera must not look healthy: a file source whose frames are
//! all the same is reported `stalled` on the retained camera status topic
//! and as an alarm, and its repeated frames are never inspected as parts.

use std::time::{Duration, Instant};

use crate::common::*;
use linesight::sim::plc::SimPlc;
use opencv::core::{Mat, Scalar, Size, CV_8UC3};
use opencv::prelude::*;
use opencv::videoio::{VideoWriter, VideoWriterTrait};

/// A video of `frames` frames: `fresh` distinct ones, then the last one again and again.
fn frozen_video(path: &std::path::Path, frames: i32, fresh: i32) {
    let fourcc = VideoWriter::fourcc('M', 'J', 'P', 'G').unwrap();
    let mut w = VideoWriter::new(path, fourcc, 10.0, Size::new(320, 240), true).unwrap();
    assert!(w.is_opened().unwrap());
    for i in 0..frames {
        let shade = f64::from(i.min(fresh - 1) * 20 % 255);
        let frame = Mat::new_rows_cols_with_default(240, 320, CV_8UC3, Scalar::new(shade, 100.0, 50.0, 0.0)).unwrap();
        w.write(&frame).unwrap();
    }
    w.release().unwrap();
}

#[test]
fn a_frozen_stream_is_reported_stalled_and_its_repeats_are_not_inspected() {
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(SimPlc::start("127.0.0.1:0")).unwrap();
    let broker = Broker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("frozen.avi");
    frozen_video(&video, 60, 5);
    let sub = Subscriber::start(broker.port, "linesight/test-line/cell-1/#");
    let yaml = node_yaml(&plc.addr.to_string(), broker.port, "", 10.0)
        .replace(&repo().join("samples/line.avi").display().to_string(), &video.display().to_string());
    let cfg = write_config(dir.path(), &yaml);
    let log = dir.path().join("daemon.log");
    let started = Instant::now();
    let mut child = run_daemon(&cfg, &log);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    // Five fresh frames, then repeats: stalled after three in a row (stall_frames defaults to 3).
    assert!(
        sub.wait_for(|t, p| t.ends_with("/cameras/top/status") && p.contains("\"stalled\""), Duration::from_secs(30)),
        "no stalled status\n{}",
        logs()
    );
    eprintln!("stalled reported {:?} after start", started.elapsed());
    assert!(sub.wait_for(|t, p| t.ends_with("/alarms") && p.contains("stalled"), Duration::from_secs(5)), "no alarm");
    let status = wait_exit(&mut child, Duration::from_secs(60));
    assert!(status.success(), "{}", logs());
    let results = sub.messages("/result");
    assert_eq!(results.len(), 5, "only the fresh frames are parts: {results:?}");
    let stats = sub.messages("/stats");
    let last = stats.last().unwrap();
    assert!(logs().contains("the same frame again and again"), "{}", logs());
    assert!(last["tasks"]["inspect"]["frames_in"].as_u64().unwrap() <= 5, "{last}");
}
