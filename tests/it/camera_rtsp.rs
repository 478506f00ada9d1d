//! A real RTSP camera (GStreamer's RTSP server, tests/rtsp/serve.py) that
//! freezes, dies, comes back, and hangs. The camera's retained status must
//! follow: `online`, `stalled` when the picture freezes (identical frames are
//! never inspected), `offline` when the server is killed, `online` again after
//! a reconnect to the restarted server on the same port, and `stalled` then
//! `offline` when the server stops answering with its socket still open (the
//! read timeout, not FFmpeg's 30 s, decides how long that takes). The figures
//! are printed; nothing here asserts a duration. The documented GStreamer pipeline for an
//! RTSP MJPEG camera (`rtpjpegdepay ! image/jpeg ! appsink`) is read against the same server.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opencv::prelude::*;

use crate::common::*;
use linesight::sim::plc::SimPlc;

pub(crate) struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0.id().to_string()]).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start the server; returns it and its URL once it says READY.
pub(crate) fn serve(port: u16, extra: &[&str]) -> (Server, String) {
    let mut child = Command::new("/usr/bin/python3")
        .arg(repo().join("tests/rtsp/serve.py"))
        .args(["--port", &port.to_string(), "--path", "/cam", "--fps", "10"])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 tests/rtsp/serve.py (scripts/setup.sh installs python3-gi and gst-rtsp-server)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("READY ")
        .unwrap_or_else(|| panic!("no READY line from serve.py: {line:?}"))
        .to_string();
    (Server(child), url)
}

pub(crate) fn signal(server: &Server, sig: &str) {
    assert!(Command::new("kill").args([sig, &server.0.id().to_string()]).status().unwrap().success());
}

/// Wait until the camera's status messages, in order, end with `want` after `from` messages.
fn wait_status(sub: &Subscriber, from: usize, want: &str, what: &str, log: &std::path::Path) -> (usize, Duration) {
    let t = Instant::now();
    loop {
        let seen: Vec<String> = sub
            .messages("/cameras/top/status")
            .iter()
            .map(|m| m["status"].as_str().unwrap_or_default().to_string())
            .collect();
        if let Some(i) = seen.iter().skip(from).position(|s| s == want) {
            return (from + i + 1, t.elapsed());
        }
        if t.elapsed() > Duration::from_secs(60) {
            panic!(
                "{what}: no `{want}` status after {from} messages; seen {seen:?}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_real_rtsp_camera_that_freezes_dies_returns_and_hangs_is_reported_each_time() {
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(SimPlc::start("127.0.0.1:0")).unwrap();
    let broker = Broker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sub = Subscriber::start(broker.port, "linesight/test-line/cell-1/#");
    // Moving for 3 s after the daemon's PLAY, then the same picture at 10 fps.
    let (first, url) = serve(0, &["--freeze-after", "3", "--freeze-from", "play"]);
    let port: u16 = url.rsplit(':').next().unwrap().split('/').next().unwrap().parse().unwrap();
    let yaml = node_yaml(&plc.addr.to_string(), broker.port, "", 10.0).replace(
        &format!("source: {{ file: {} }}\n    fps: 10\n", repo().join("samples/line.avi").display()),
        &format!("source: {{ rtsp: \"{url}\" }}\n    mode: free-running\n    timeout: 2s\n"),
    );
    assert!(yaml.contains("rtsp:"), "{yaml}");
    let cfg = write_config(dir.path(), &yaml);
    let log = dir.path().join("daemon.log");
    let mut daemon = run_daemon(&cfg, &log);

    let (n, t) = wait_status(&sub, 0, "online", "first connection", &log);
    eprintln!("online {t:?} after the daemon started");
    let (n, t) = wait_status(&sub, n, "stalled", "frozen picture", &log);
    eprintln!("stalled {t:?} after online (the picture freezes 3 s after PLAY)");
    let before = sub.messages("/tasks/inspect/result").len();

    signal(&first, "-KILL");
    let killed = Instant::now();
    let (n, _) = wait_status(&sub, n, "offline", "server killed", &log);
    eprintln!("offline {:?} after SIGKILL", killed.elapsed());
    drop(first);

    let (second, _) = serve(port, &[]);
    let restarted = Instant::now();
    let (n, _) = wait_status(&sub, n, "online", "server restarted", &log);
    eprintln!("online again {:?} after the server restarted on port {port}", restarted.elapsed());
    assert!(
        sub.wait_for(|t, _| t.ends_with("/tasks/inspect/result"), Duration::from_secs(20)) && {
            let deadline = Instant::now() + Duration::from_secs(20);
            while sub.messages("/tasks/inspect/result").len() <= before && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            sub.messages("/tasks/inspect/result").len() > before
        },
        "fresh frames are inspected again after the reconnect"
    );

    // A camera that hangs: the socket stays open, nothing comes.
    signal(&second, "-STOP");
    let stopped = Instant::now();
    let (n, t1) = wait_status(&sub, n, "stalled", "server hung", &log);
    let (_, t2) = wait_status(&sub, n, "offline", "server hung", &log);
    eprintln!("hung server: stalled {t1:?}, offline {:?} after SIGSTOP (read timeout 2 s)", t1 + t2);
    let _ = stopped;
    let last = sub.messages("/cameras/top/status").last().cloned().unwrap();
    assert!(last["reconnects"].as_u64().unwrap() >= 2, "{last}");

    assert!(Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap().success());
    let status = wait_exit(&mut daemon, Duration::from_secs(30));
    assert!(status.success(), "{}", std::fs::read_to_string(&log).unwrap_or_default());
    drop(second);
    let alarms = sub.raw("/alarms").join("\n");
    assert!(alarms.contains("stalled") || alarms.contains("top"), "the lost camera raised an alarm: {alarms}");
}

/// The RTSP MJPEG pipeline docs/configuration.md gives (`rtpjpegdepay ! image/jpeg ! appsink`), on
/// a real RTSP server streaming 1920x1080 MJPG: the camera's frames arrive as JPEG images and
/// decode at the reduction asked for, 1/8 here, from the first frame on.
#[test]
fn an_rtsp_mjpeg_stream_through_gstreamer_decodes_reduced() {
    let (_server, url) = serve(0, &["--size", "1920x1080"]);
    let pipeline = format!("rtspsrc location={url} latency=0 ! rtpjpegdepay ! image/jpeg ! appsink sync=false");
    let source = linesight::config::SourceConfig::Gstreamer(pipeline.clone());
    let mut cam = linesight::camera::source::open(&source, Duration::from_secs(5)).expect(&pipeline);
    assert_eq!(cam.reduce(8), 8, "{pipeline} hands over JPEG images");
    for _ in 0..5 {
        let frame = cam.next_frame().expect("a frame").expect("a live stream does not end");
        assert_eq!((frame.image.cols(), frame.image.rows()), (240, 135), "1920x1080 at 1/8");
    }
}
