//! Rotation and crop on real frames: a camera mounted on its side whose view
//! is wider than the part. The stills are turned a quarter left and placed
//! off-centre on a larger canvas; `rotate: 90` and `crop` must give the model
//! the original picture back, so every verdict matches the still's label.
//! A crop that does not fit the frame is a camera fault that names the camera
//! and the sizes, not a panic.

use std::time::Duration;

use crate::common::*;
use linesight::sim::plc::SimPlc;
use opencv::core::{Mat, Rect, Scalar, Vector, CV_8UC3};
use opencv::prelude::*;
use opencv::{core, imgcodecs};

/// Writes each still turned 90° counter-clockwise at (20, 10) on a 300x320 canvas.
fn sideways_stills(dir: &std::path::Path) -> Vec<(String, bool)> {
    let mut labels = Vec::new();
    let mut names: Vec<_> =
        std::fs::read_dir(repo().join("samples/parts")).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    for p in names {
        let img = imgcodecs::imread(&*p.to_string_lossy(), imgcodecs::IMREAD_COLOR).unwrap();
        assert_eq!((img.cols(), img.rows()), (256, 256));
        let mut turned = Mat::default();
        core::rotate(&img, &mut turned, core::ROTATE_90_COUNTERCLOCKWISE).unwrap();
        let mut canvas =
            Mat::new_rows_cols_with_default(320, 300, CV_8UC3, Scalar::new(30.0, 90.0, 160.0, 0.0)).unwrap();
        let mut slot = Mat::roi_mut(&mut canvas, Rect::new(20, 10, 256, 256)).unwrap();
        turned.copy_to(&mut slot).unwrap();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        imgcodecs::imwrite(dir.join(&name), &canvas, &Vector::new()).unwrap();
        labels.push((name.clone(), !name.contains("_good")));
    }
    labels
}

#[test]
fn a_sideways_camera_is_turned_and_cropped_back_to_the_part() {
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(SimPlc::start("127.0.0.1:0")).unwrap();
    let broker = Broker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stills = dir.path().join("stills");
    std::fs::create_dir(&stills).unwrap();
    let labels = sideways_stills(&stills);
    let sub = Subscriber::start(broker.port, "linesight/test-line/cell-1/#");
    // Turned clockwise, the canvas is 320x300 and the part sits at x 320-266 = 54, y 20.
    let yaml = node_yaml(&plc.addr.to_string(), broker.port, "rotate: 90\n    crop: [54, 20, 256, 256]", 10.0).replace(
        &format!("file: {}", repo().join("samples/line.avi").display()),
        &format!("directory: {}", stills.display()),
    );
    let cfg = write_config(dir.path(), &yaml);
    let log = dir.path().join("daemon.log");
    let mut child = run_daemon(&cfg, &log);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let status = wait_exit(&mut child, Duration::from_secs(60));
    assert!(status.success(), "{}", logs());
    let mut results = sub.messages("/result");
    assert_eq!(results.len(), labels.len(), "{}", logs());
    results.sort_by_key(|r| r["part_id"].as_u64());
    for (r, (name, ng)) in results.iter().zip(&labels) {
        let verdict = r["verdict"].as_str().unwrap();
        assert_eq!(verdict == "NG", *ng, "{name}: {r}");
    }

    // The same camera with a crop drawn for another resolution.
    let bad = yaml.replace("crop: [54, 20, 256, 256]", "crop: [100, 20, 256, 256]");
    let cfg = write_config(dir.path(), &bad);
    let log2 = dir.path().join("daemon2.log");
    let child = run_daemon(&cfg, &log2);
    let sub_deadline = std::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let t = std::fs::read_to_string(&log2).unwrap_or_default();
        if t.contains("does not fit") || std::time::Instant::now() > sub_deadline {
            break t;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(child);
    assert!(
        text.contains("camera `top`")
            && text.contains("crop [100, 20, 256, 256] does not fit the 320x300 frame (after rotating by 90)"),
        "{text}"
    );
}
