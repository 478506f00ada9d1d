//! The independent Sparkplug B decoder (tests/sparkplug/spdecode.py: Python
//! protobuf compiled from the spec's sparkplug_b.proto, paho-mqtt), driven
//! from the tests. Nothing here shares code with linesight's encoder.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::pyplc::venv_python;
use super::repo;

fn script() -> std::path::PathBuf {
    repo().join("tests/sparkplug/spdecode.py")
}

/// A decoding subscriber; every message it saw, in arrival order, with the arrival instant.
pub struct Decoder {
    child: Child,
    pub messages: Arc<Mutex<Vec<(Instant, Value)>>>,
}

impl Decoder {
    /// Subscribe to `topics` on the broker at `port`; `tls` adds e.g. `["--tls-ca", path]`.
    pub fn start(port: u16, topics: &[&str], tls: &[&str]) -> Decoder {
        let mut cmd = Command::new(venv_python());
        cmd.arg(script()).args(["--host", "127.0.0.1", "--port", &port.to_string()]);
        for t in topics {
            cmd.args(["--topic", t]);
        }
        let mut child = cmd
            .args(tls)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the Sparkplug decoder needs the venv: run scripts/setup.sh");
        let out = child.stdout.take().unwrap();
        let messages: Arc<Mutex<Vec<(Instant, Value)>>> = Arc::default();
        let m2 = messages.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
                if v.get("ready").is_some() || v.get("error").is_some() {
                    let _ = ready_tx.send(v.clone());
                }
                m2.lock().unwrap().push((Instant::now(), v));
            }
        });
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(v) if v.get("ready").is_some() => {}
            Ok(v) => panic!("the Sparkplug decoder could not subscribe: {v}"),
            Err(_) => panic!("the Sparkplug decoder did not subscribe within 30 s"),
        }
        Decoder { child, messages }
    }

    /// The decoded messages on topics containing `/<kind>/` (e.g. "NBIRTH"), in arrival order.
    pub fn of(&self, kind: &str) -> Vec<Value> {
        let needle = format!("/{kind}/");
        self.all().into_iter().filter(|m| m["topic"].as_str().is_some_and(|t| t.contains(&needle))).collect()
    }

    pub fn all(&self) -> Vec<Value> {
        self.messages.lock().unwrap().iter().filter(|(_, v)| v.get("topic").is_some()).map(|(_, v)| v.clone()).collect()
    }

    /// Wait until `f` holds for the message list.
    pub fn wait(&self, timeout: Duration, f: impl Fn(&[Value]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if f(&self.all()) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many messages have arrived so far (a mark for "after this point").
    pub fn count(&self) -> usize {
        self.all().len()
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A metric of a decoded message, by name.
pub fn metric<'a>(msg: &'a Value, name: &str) -> Option<&'a Value> {
    msg["payload"]["metrics"].as_array()?.iter().find(|m| m["name"] == name)
}

/// A metric's value, by name.
pub fn value<'a>(msg: &'a Value, name: &str) -> Option<&'a Value> {
    metric(msg, name).map(|m| &m["value"])
}

/// Publish a Sparkplug payload with these metrics (`[{name, datatype_name, value}]`).
pub fn publish(port: u16, topic: &str, metrics: Value) {
    run(&["--publish", topic, "--metrics", &metrics.to_string()], port);
}

/// Publish a Sparkplug payload with these metrics and this payload timestamp (ms since 1970):
/// the same metrics and timestamp give the same bytes.
pub fn publish_at(port: u16, topic: &str, metrics: Value, timestamp: u64) {
    run(&["--publish", topic, "--metrics", &metrics.to_string(), "--timestamp", &timestamp.to_string()], port);
}

/// Publish raw bytes (hex), for malformed payloads.
pub fn publish_raw(port: u16, topic: &str, hex: &str) {
    run(&["--publish", topic, "--raw-hex", hex], port);
}

/// A retained primary-host STATE message.
pub fn state(port: u16, host: &str, online: bool, ts: u64) {
    run(&["--state", host, "--online", if online { "true" } else { "false" }, "--ts", &ts.to_string()], port);
}

fn run(args: &[&str], port: u16) {
    let out = Command::new(venv_python())
        .arg(script())
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "spdecode.py {args:?}: {}", String::from_utf8_lossy(&out.stdout));
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}
