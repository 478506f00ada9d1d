//! Reduced JPEG decoding (the camera's `decode`), end to end with the real daemon: a 1024x1024
//! MJPG video of the detector's held-out images (4x their size) judged twice, decoded in full and
//! with `decode: auto` (the 256x256 detector lets the camera decode at 1/4). Boxes come out in the
//! full frame's pixels either way, and the two runs agree: the same verdicts, boxes of the same
//! class in the same place. The figures are printed (`-- --nocapture`) for docs/benchmarks.md.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use opencv::core::{Mat, Size};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc, videoio};
use serde_json::Value;

use crate::common::*;
use linesight::sim::plc::SimPlc;

/// The detector's held-out test images, scaled 4x, as an MJPG video; the frames' order.
fn video(dir: &Path) -> (PathBuf, Vec<String>) {
    let mut images: Vec<PathBuf> = std::fs::read_dir(repo().join("models/surface-detector-samples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("test_") && p.extension().unwrap() == "png")
        .collect();
    images.sort();
    let out = dir.join("big.avi");
    let fourcc = videoio::VideoWriter::fourcc('M', 'J', 'P', 'G').unwrap();
    let mut w = videoio::VideoWriter::new(out.to_str().unwrap(), fourcc, 10.0, Size::new(1024, 1024), true).unwrap();
    assert!(w.is_opened().unwrap());
    for p in &images {
        let img = imgcodecs::imread(p.to_str().unwrap(), imgcodecs::IMREAD_COLOR).unwrap();
        let mut big = Mat::default();
        imgproc::resize(&img, &mut big, Size::new(1024, 1024), 0.0, 0.0, imgproc::INTER_LINEAR).unwrap();
        w.write(&big).unwrap();
    }
    w.release().unwrap();
    (out, images.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect())
}

/// One run of the daemon over the video with the camera's `decode`: results by part id, and
/// the final stats of the task.
fn run(video: &Path, decode: &str) -> (Vec<Value>, Value) {
    run_source(video, &format!("decode: {decode:?}"), None)
}

/// The same with `extra` camera keys, and with `source` in place of the video file: a live
/// source (GStreamer) does not end, so the daemon is stopped (SIGTERM) once `frames` results came.
fn run_source(video: &Path, extra: &str, source: Option<(&str, usize)>) -> (Vec<Value>, Value) {
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(SimPlc::start("127.0.0.1:0")).unwrap();
    let broker = Broker::start().unwrap();
    let sub = Subscriber::start(broker.port, "linesight/#");
    let dir = tempfile::tempdir().unwrap();
    let repo = repo();
    let file = format!("file: {}", repo.join("samples/line.avi").display());
    let yaml = node_yaml(&plc.addr.to_string(), broker.port, extra, 20.0)
        .replace(&file, &source.map_or(format!("file: {}", video.display()), |(s, _)| s.to_string()))
        .replace(
            &repo.join("models/surface-classifier.onnx").display().to_string(),
            &repo.join("models/surface-detector.onnx").display().to_string(),
        );
    // A live stream sets its own rate: `fps` is for files.
    let yaml: String =
        yaml.lines().filter(|l| source.is_none() || !l.starts_with("    fps:")).map(|l| format!("{l}\n")).collect();
    let cfg = write_config(dir.path(), &yaml);
    let log = dir.path().join("daemon.log");
    let mut child = run_daemon(&cfg, &log);
    if let Some((_, frames)) = source {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while sub.messages("/tasks/inspect/result").len() < frames {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(std::time::Instant::now() < deadline, "{frames} results within 60 s:\n{log}");
            assert!(child.0.try_wait().unwrap().is_none(), "the daemon ended early:\n{log}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().unwrap();
    }
    let status = wait_exit(&mut child.0, Duration::from_secs(90));
    assert!(status.success(), "linesight exited with {status}: {}", std::fs::read_to_string(&log).unwrap_or_default());
    assert!(sub.wait_for(|t, p| t.ends_with("/availability") && p == "offline", Duration::from_secs(5)));
    let mut results = sub.messages("/tasks/inspect/result");
    results.sort_by_key(|r| r["part_id"].as_u64());
    let stats = sub.messages("/stats");
    let last = stats.iter().find(|s| s["final"] == true).expect("final stats").clone();
    (results, last["tasks"]["inspect"].clone())
}

fn iou(a: &[f64], b: &[f64]) -> f64 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f64]| (r[2] - r[0]) * (r[3] - r[1]);
    inter / (area(a) + area(b) - inter)
}

fn boxes(r: &Value) -> Vec<(String, Vec<f64>)> {
    r["detections"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|d| {
                    (
                        d["class"].as_str().unwrap().to_string(),
                        d["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn reduced_decoding_reports_full_frame_boxes_and_agrees_with_full_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let (video, names) = video(dir.path());
    let (full, full_stats) = run(&video, "full");
    let (auto, auto_stats) = run(&video, "auto");
    assert_eq!(full_stats["camera_decode_scale"], 1, "{full_stats}");
    assert_eq!(auto_stats["camera_decode_scale"], 4, "the 256x256 detector lets a 1024x1024 frame decode at 1/4");
    assert_eq!((full.len(), auto.len()), (names.len(), names.len()), "one result per frame in each run");
    let (mut same_verdict, mut matched, mut full_boxes, mut worst_iou) = (0, 0, 0, 1.0f64);
    for (f, a) in full.iter().zip(&auto) {
        assert_eq!(f["part_id"], a["part_id"]);
        same_verdict += usize::from(f["verdict"] == a["verdict"]);
        let theirs = boxes(a);
        for (class, b) in boxes(f) {
            full_boxes += 1;
            // The best box of the same class in the reduced run: where the full run's is.
            let best = theirs.iter().filter(|(c, _)| *c == class).map(|(_, x)| iou(&b, x)).fold(0.0, f64::max);
            if best >= 0.5 {
                matched += 1;
                worst_iou = worst_iou.min(best);
            }
        }
    }
    println!(
        "reduced decoding (1/4) vs full, {} frames of 1024x1024: verdicts agree {same_verdict}/{}; boxes of the full run matched (same class, IoU >= 0.5) {matched}/{full_boxes}, worst matched IoU {worst_iou:.3}",
        names.len(),
        names.len()
    );
    assert!(full_boxes > 0, "the held-out images hold defects");
    // Boxes left in the decoded frame's pixels would be a quarter of the size: IoU 1/16.
    assert!(matched * 10 >= full_boxes * 8, "{matched} of {full_boxes} boxes found again");
    assert!(same_verdict + 1 >= names.len(), "{same_verdict} of {} verdicts agree", names.len());
}

/// The way for a GStreamer source: the pipeline decodes reduced itself (avdec_mjpeg `lowres`; on a
/// Jetson `nvjpegdec`/`nvv4l2decoder` + `nvvidconv` to the size), and the camera's frame is what
/// the pipeline delivers (its boxes in those pixels). The same frames as 1/4 through FFmpeg and
/// libjpeg: the same verdicts, boxes 1/4 of the full run's. The appsink plays the file at its own
/// 10 frames/s, as a camera would: a live source faster than inspection gets parts refused.
#[test]
fn a_gstreamer_pipeline_decodes_reduced_in_its_decoder() {
    let dir = tempfile::tempdir().unwrap();
    let (video, names) = video(dir.path());
    let pipeline = format!(
        "gstreamer: \"filesrc location={} ! avidemux ! avdec_mjpeg lowres=2 ! videoconvert ! video/x-raw,format=BGR ! appsink\"",
        video.display()
    );
    let (full, _) = run(&video, "full");
    let (gst, stats) = run_source(&video, "mode: part-per-frame", Some((&pipeline, names.len())));
    assert_eq!(stats["camera_decode_scale"], 1, "the camera decodes nothing itself: {stats}");
    let (mut same_verdict, mut matched, mut full_boxes) = (0, 0, 0);
    for (f, g) in full.iter().zip(&gst) {
        same_verdict += usize::from(f["verdict"] == g["verdict"]);
        let theirs: Vec<(String, Vec<f64>)> =
            boxes(g).into_iter().map(|(c, b)| (c, b.iter().map(|v| v * 4.0).collect())).collect();
        for (class, b) in boxes(f) {
            full_boxes += 1;
            let best = theirs.iter().filter(|(c, _)| *c == class).map(|(_, x)| iou(&b, x)).fold(0.0, f64::max);
            matched += usize::from(best >= 0.5);
        }
    }
    println!(
        "GStreamer avdec_mjpeg lowres=2 vs full decode, {} frames: verdicts agree {same_verdict}/{}, boxes matched {matched}/{full_boxes}",
        names.len(),
        names.len()
    );
    assert!(full_boxes > 0 && matched * 10 >= full_boxes * 8, "{matched} of {full_boxes} boxes");
    assert!(same_verdict + 1 >= names.len(), "{same_verdict} of {} verdicts agree", names.len());
}

/// A GStreamer source that hands its appsink JPEG images (`image/jpeg ! appsink`: how a V4L2
/// camera with `fourcc: MJPG` is read, and how an RTSP MJPEG stream can be) is decoded reduced by
/// linesight itself: `decode: auto` takes 1/4 as for FFmpeg's packets, and since the JPEG bytes
/// are the same, so are the results, box for box, in the full frame's pixels.
#[test]
fn a_gstreamer_jpeg_sink_decodes_reduced_like_ffmpeg_packets() {
    let dir = tempfile::tempdir().unwrap();
    let (video, names) = video(dir.path());
    let pipeline = format!("gstreamer: \"filesrc location={} ! avidemux ! image/jpeg ! appsink\"", video.display());
    let (ffmpeg, ffmpeg_stats) = run(&video, "auto");
    let (gst, stats) = run_source(&video, "decode: auto", Some((&pipeline, names.len())));
    assert_eq!(ffmpeg_stats["camera_decode_scale"], 4, "{ffmpeg_stats}");
    assert_eq!(stats["camera_decode_scale"], 4, "JPEG from the appsink decodes at 1/4: {stats}");
    assert!(gst.len() >= names.len(), "{} results for {} frames", gst.len(), names.len());
    let mut boxes_seen = 0;
    for (i, (f, g)) in ffmpeg.iter().zip(&gst).enumerate() {
        assert_eq!(f["verdict"], g["verdict"], "frame {i} ({})", names[i]);
        assert_eq!(boxes(f), boxes(g), "frame {i} ({}): the same boxes in full-frame pixels", names[i]);
        boxes_seen += boxes(f).len();
    }
    assert!(boxes_seen > 0, "the held-out images hold defects");
}

/// `linesight infer --decode 1/4` on 1024x1024 JPEGs: boxes in the full image's pixels, as the
/// daemon reports them, and in the place the full decode finds them.
#[test]
fn infer_decode_reports_boxes_in_full_image_pixels() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let mut jpegs = Vec::new();
    for e in std::fs::read_dir(repo().join("models/surface-detector-samples")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("test_") && name.ends_with(".png")) {
            continue;
        }
        let img = imgcodecs::imread(p.to_str().unwrap(), imgcodecs::IMREAD_COLOR).unwrap();
        let mut big = Mat::default();
        imgproc::resize(&img, &mut big, Size::new(1024, 1024), 0.0, 0.0, imgproc::INTER_LINEAR).unwrap();
        let out = dir.path().join(name.replace(".png", ".jpg"));
        let q = opencv::core::Vector::from_slice(&[imgcodecs::IMWRITE_JPEG_QUALITY, 95]);
        assert!(imgcodecs::imwrite(out.to_str().unwrap(), &big, &q).unwrap());
        jpegs.push(out.display().to_string());
    }
    jpegs.sort();
    let infer = |decode: &str| -> Vec<Value> {
        let model = repo().join("models/surface-detector.onnx");
        let out = Command::new(bin())
            .args(["infer", "--json", "--decode", decode, "--model", model.to_str().unwrap()])
            .args(&jpegs)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let (full, reduced) = (infer("full"), infer("1/4"));
    assert_eq!(full.len(), jpegs.len());
    let mut boxes = 0;
    for (f, r) in full.iter().zip(&reduced) {
        assert_eq!(f["verdict"], r["verdict"], "{f}\n{r}");
        for b in f["detections"].as_array().unwrap() {
            let bb: Vec<f64> = b["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            let found = r["detections"].as_array().unwrap().iter().any(|d| {
                let db: Vec<f64> = d["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
                d["class"] == b["class"] && iou(&bb, &db) >= 0.5
            });
            assert!(found, "a full-decode box not found at 1/4 in full-image pixels: {b}\n{r}");
            boxes += 1;
        }
    }
    assert!(boxes >= 8, "the held-out samples have boxes: {boxes}");
    // Not in the reduced image's pixels (256x256): boxes reach past it.
    assert!(reduced
        .iter()
        .flat_map(|r| r["detections"].as_array().unwrap())
        .any(|d| d["box"][2].as_f64() > Some(300.0)));
}
