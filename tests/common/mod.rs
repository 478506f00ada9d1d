//! Helpers shared by the integration tests: paths, a real mosquitto, an
//! independent MQTT subscriber (mosquitto_sub), the linesight binary.
#![allow(dead_code, unused_imports)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use linesight::sim::broker::Broker;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_linesight")
}

/// ONNX Runtime must be there: scripts/test.sh sets ORT_DYLIB_PATH.
pub fn require_ort() {
    let p = std::env::var("ORT_DYLIB_PATH")
        .expect("ORT_DYLIB_PATH is not set: run the tests through scripts/test.sh (or `source scripts/env.sh`)");
    assert!(Path::new(&p).is_file(), "ORT_DYLIB_PATH={p} does not exist: run scripts/setup.sh");
}

/// `frame,class,ng` labels of the sample video.
pub fn labels() -> Vec<bool> {
    linesight::cli::demo::read_labels(&repo().join("samples/line.labels.csv")).unwrap()
}

/// mosquitto_sub, an MQTT client nobody here wrote, printing `topic payload` per message.
pub struct Subscriber {
    child: Child,
    pub lines: Arc<Mutex<Vec<(String, String)>>>,
}

impl Subscriber {
    pub fn start(port: u16, topic: &str) -> Subscriber {
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic, "-t", "probe/#", "-v", "-q", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub (package mosquitto-clients) must be installed: run scripts/setup.sh");
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let (t, p) =
                    line.split_once(' ').map(|(t, p)| (t.to_string(), p.to_string())).unwrap_or((line, String::new()));
                l2.lock().unwrap().push((t, p));
            }
        });
        let sub = Subscriber { child, lines };
        // Subscribed once a probe comes back.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let _ = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "probe/x", "-m", "1"])
                .status();
            if sub.wait_for(|t, _| t == "probe/x", Duration::from_millis(300)) {
                return sub;
            }
        }
        panic!("mosquitto_sub did not subscribe within 10 s");
    }

    pub fn wait_for(&self, f: impl Fn(&str, &str) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.lines.lock().unwrap().iter().any(|(t, p)| f(t, p)) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn messages(&self, suffix: &str) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t.ends_with(suffix))
            .filter_map(|(_, p)| serde_json::from_str(p).ok())
            .collect()
    }

    pub fn raw(&self, suffix: &str) -> Vec<String> {
        self.lines.lock().unwrap().iter().filter(|(t, _)| t.ends_with(suffix)).map(|(_, p)| p.clone()).collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node config for the sample video, a PLC at `plc` and a broker on `port`.
pub fn node_yaml(plc: &str, port: u16, extra_camera: &str, fps: f64) -> String {
    let repo = repo();
    format!(
        r#"
node: {{ group_id: test-line, node_id: cell-1 }}
mqtt: {{ host: 127.0.0.1, port: {port}, client_id: "test-{client}", stats_interval: 1s, keep_alive: 5s }}
modbus:
  devices:
    plc: {{ tcp: "{plc}", timeout: 500ms }}
  outputs:
    reject_gate: {{ device: plc, area: coil, address: 10, safe_state: off }}
cameras:
  top:
    source: {{ file: {video} }}
    fps: {fps}
    {extra_camera}
models:
  surface:
    path: {model}
    providers:
      - cuda: {{ device: 0 }}
      - cpu: {{ threads: 1 }}
tasks:
  inspect:
    camera: top
    model: surface
    inference_timeout: 1s
    min_part_interval: 100ms
    reject: {{ output: reject_gate, delay: 1200ms, pulse: 30ms }}
"#,
        video = repo.join("samples/line.avi").display(),
        model = repo.join("models/surface-classifier.onnx").display(),
        // One client id per test (the PLC's port is unique): tests run in
        // parallel, and two daemons with one id would take over each other's
        // session on a shared broker, each takeover publishing a Last Will.
        client = plc.replace(['.', ':'], "-"),
    )
}

/// `yaml` (a config without a `runtime:` section) with the node's state (the ids of recent
/// commands, remembered so that a replay is refused) in `dir` instead of /var/lib/linesight.
/// Every test that sends commands needs it: the ids outlive the daemon.
pub fn with_state_dir(yaml: &str, dir: &Path) -> String {
    format!("{yaml}runtime:\n  state_dir: \"{}\"\n", dir.display())
}

/// Write `text` as `dir/node.yaml`. A config without a `runtime:` section gets its state
/// directory in `dir`: the node's state (command ids, the run marker that makes a restart after
/// a kill purge the gates) must not be shared between tests running side by side.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("node.yaml");
    let has_runtime = text.lines().any(|l| l.starts_with("runtime:"));
    let text = if has_runtime { text.to_string() } else { with_state_dir(text, &dir.join("state")) };
    std::fs::write(&p, text).unwrap();
    p
}

/// Publish each line on `topic` with QoS 1, in order, through one mosquitto_pub (a burst).
pub fn publish_lines(port: u16, topic: &str, lines: &[impl std::fmt::Display]) {
    use std::io::Write;
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic, "-q", "1", "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for line in lines {
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

/// A child process killed when dropped, so a failing test leaves no daemon behind
/// (a stray daemon reconnects to a later test's broker with the same client id).
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `promtool check metrics` (Debian's `prometheus`; scripts/setup.sh installs it) on a
/// `/metrics` exposition: panics with promtool's complaint and the text when it refuses it.
pub fn promtool_check(text: &str) {
    use std::io::Write;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/setup.sh installs it)");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `linesight run --config CFG`, its log appended to `log`, killed when dropped.
pub fn run_daemon(cfg: &Path, log: &Path) -> KillOnDrop {
    KillOnDrop(
        Command::new(bin())
            .args(["run", "--log-format", "text", "--config"])
            .arg(cfg)
            .stderr(std::fs::File::options().create(true).append(true).open(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// Wait for a child with a deadline; kill it if it overruns.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("linesight did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
/// Fresh test certificates in `dir` (tests/common/certs.py): ca.pem, client.pem/.key,
/// server.pem/.key, expired and wrong-CA variants, all PEM, readable by
/// mosquitto's own user (so `dir` and its parents must be searchable).
pub fn test_certs(dir: &Path) {
    let python = pyplc::venv_python();
    let out = Command::new(&python)
        .arg(repo().join("tests/common/certs.py"))
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup.sh for the test venv)", python.display()));
    assert!(out.status.success(), "certs.py failed: {}", String::from_utf8_lossy(&out.stderr));
}

pub mod pyplc;
pub mod sparkplug;
