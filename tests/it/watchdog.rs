//! The systemd watchdog, as systemd runs it: the real daemon with `NOTIFY_SOCKET` and
//! `WATCHDOG_USEC` set, the test playing systemd's notify socket.
//!
//! - An idle line is alive: with its only camera unreachable (a fault on MQTT and the stack
//!   light, not a hang), `WATCHDOG=1` keeps coming. Before, pings came only while frames were
//!   judged, and systemd killed an idle node every ~12 s, forever.
//! - A hung inference is not: with a model whose inference on a real frame runs for tens of
//!   minutes (tests/models/slow-classifier.onnx, made by tools/make_slow_model.py), the pings
//!   stop within the stall time (twice the task's inference timeout, at least 2 s).

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// Every datagram the daemon sends, with when it came (relative to the socket's creation).
struct NotifySocket {
    sock: UnixDatagram,
    t0: Instant,
    got: Vec<(Duration, String)>,
}

impl NotifySocket {
    fn bind(path: &Path) -> NotifySocket {
        let sock = UnixDatagram::bind(path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        NotifySocket { sock, t0: Instant::now(), got: Vec::new() }
    }

    /// Collect for `d`.
    fn collect(&mut self, d: Duration) {
        let until = Instant::now() + d;
        let mut buf = [0u8; 4096];
        while Instant::now() < until {
            if let Ok(n) = self.sock.recv(&mut buf) {
                self.got.push((self.t0.elapsed(), String::from_utf8_lossy(&buf[..n]).into_owned()));
            }
        }
    }

    /// Collect until a message satisfies `f`, or `d` passes.
    fn wait_for(&mut self, d: Duration, f: impl Fn(&str) -> bool) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            let seen = self.got.len();
            self.collect(Duration::from_millis(200));
            if self.got[seen..].iter().any(|(_, m)| f(m)) {
                return true;
            }
        }
        false
    }

    fn pings_between(&self, from: Duration, to: Duration) -> usize {
        self.got.iter().filter(|(t, m)| *t >= from && *t < to && m.lines().any(|l| l == "WATCHDOG=1")).count()
    }
}

fn run_under_watchdog(cfg: &Path, log: &Path, sock: &Path) -> KillOnDrop {
    KillOnDrop(
        Command::new(bin())
            .args(["run", "--log-format", "text", "--config"])
            .arg(cfg)
            .env("NOTIFY_SOCKET", sock)
            .env("WATCHDOG_USEC", "2000000") // systemd's WatchdogSec=2s: a ping due every second
            .env_remove("WATCHDOG_PID")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

fn config(camera: &str, model: &Path) -> String {
    format!(
        "node: {{ group_id: test-line, node_id: wd-1 }}\ncameras:\n  cam:\n{camera}\nmodels:\n  m: {{ path: {} }}\ntasks:\n  inspect: {{ camera: cam, model: m, inference_timeout: 500ms }}\n",
        model.display()
    )
}

#[test]
fn an_idle_line_keeps_the_watchdog_fed() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    // Accepts the connection and never answers: the camera stays offline, nothing to judge.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let camera = format!(
        "    source: {{ rtsp: \"rtsp://{}/stream1\" }}\n    mode: free-running\n    timeout: 500ms",
        mute.local_addr().unwrap()
    );
    let cfg = write_config(dir.path(), &config(&camera, &repo().join("models/surface-classifier.onnx")));
    let (log, sock_path) = (dir.path().join("daemon.log"), dir.path().join("notify.sock"));
    let mut sock = NotifySocket::bind(&sock_path);
    let mut child = run_under_watchdog(&cfg, &log, &sock_path);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(sock.wait_for(Duration::from_secs(60), |m| m.contains("READY=1")), "no READY: {}", logs());
    let ready = sock.t0.elapsed();
    sock.collect(Duration::from_secs(20));
    // A ping due every second: at least 15 in 20 s, and none of the last 5 s missing.
    let pings = sock.pings_between(ready, ready + Duration::from_secs(20));
    let late = sock.pings_between(ready + Duration::from_secs(15), ready + Duration::from_secs(20));
    assert!(pings >= 15 && late >= 3, "{pings} pings in 20 s idle, {late} in the last 5 s:\n{}", logs());
    assert!(logs().contains("camera=cam"), "the camera fault is reported: {}", logs());
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success(), "{}", logs());
}

#[test]
fn a_hung_inference_starves_the_watchdog() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let camera = format!(
        "    source: {{ file: {} }}\n    mode: free-running\n    fps: 10",
        repo().join("samples/line.avi").display()
    );
    let cfg = write_config(dir.path(), &config(&camera, &repo().join("tests/models/slow-classifier.onnx")));
    let (log, sock_path) = (dir.path().join("daemon.log"), dir.path().join("notify.sock"));
    let mut sock = NotifySocket::bind(&sock_path);
    let _child = run_under_watchdog(&cfg, &log, &sock_path);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    // The warm-up's blank frame is fast: READY comes; the first real frame hangs the worker.
    assert!(sock.wait_for(Duration::from_secs(60), |m| m.contains("READY=1")), "no READY: {}", logs());
    let ready = sock.t0.elapsed();
    sock.collect(Duration::from_secs(8));
    // Stall time: twice the 500 ms inference timeout, raised to the 2 s minimum; the first frame
    // comes ~0.1 s after READY, so no ping from 3 s on.
    let after = sock.pings_between(ready + Duration::from_secs(3), ready + Duration::from_secs(8));
    assert_eq!(after, 0, "the watchdog was fed while inference hung:\n{}", logs());
    assert!(logs().contains("not feeding the systemd watchdog"), "{}", logs());
    // KillOnDrop ends it: a hung worker thread cannot be stopped from inside (systemd would SIGABRT it).
}
