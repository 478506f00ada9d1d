//! Behaviour snapshots ("golden files" in tests/snapshots/): what linesight shows the outside
//! world today, pinned so that a refactor of src/ cannot change it unnoticed.
//!
//! Only external interfaces are used: the `linesight` binary, a real mosquitto, mosquitto_sub,
//! the Python Sparkplug B decoder (tests/sparkplug/spdecode.py) and the pymodbus PLC simulator
//! (tests/plc/pymodbus_plc.py). Nothing here names a path inside the `linesight` crate.
//!
//! Volatile fields (timestamps, latencies, seq, bdSeq, host paths, ports) are replaced by
//! placeholders such as `<float>` or `<timestamp>`; keys, structure, verdicts, classes, part ids
//! and value types are kept. The part verdicts of the sample video are deterministic (the
//! pipeline test checks them against samples/line.labels.csv), so they are pinned.
//!
//! A snapshot that differs fails with a diff. If the change is intended, rewrite the golden
//! files and commit them with the change:
//!
//!     LINESIGHT_BLESS=1 cargo test --test it snapshots::

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::pyplc::PyPlc;
use crate::common::sparkplug::Decoder;
use crate::common::{bin, repo, wait_exit, KillOnDrop, Subscriber};
use serde_json::{json, Map, Value};

const BLESS_ENV: &str = "LINESIGHT_BLESS";
const BLESS_CMD: &str = "LINESIGHT_BLESS=1 cargo test --test it snapshots::";

// ---------------------------------------------------------------------------------------------
// Golden files

fn snapshot_dir() -> PathBuf {
    repo().join("tests/snapshots")
}

fn blessing() -> bool {
    std::env::var(BLESS_ENV).is_ok_and(|v| v == "1")
}

/// Compare `actual` with tests/snapshots/`name`, or (with `LINESIGHT_BLESS=1`) write it there.
fn assert_snapshot(name: &str, actual: &str) {
    let path = snapshot_dir().join(name);
    let mut actual = actual.to_string();
    if !actual.ends_with('\n') {
        actual.push('\n');
    }
    if blessing() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &actual).unwrap();
        eprintln!("blessed {}", path.display());
        return;
    }
    let expected = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) => panic!(
            "snapshot {} cannot be read ({e}).\nIf this is a new snapshot, write it with:\n    {BLESS_CMD}\n\
             and review and commit the new file.\nActual output:\n{actual}",
            path.display()
        ),
    };
    if expected == actual {
        return;
    }
    // The actual text, for a closer look, outside the source tree.
    let dump = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("snapshots").join(name);
    let _ = std::fs::create_dir_all(dump.parent().unwrap());
    let _ = std::fs::write(&dump, &actual);
    panic!(
        "snapshot tests/snapshots/{name} differs from the actual output (- golden, + actual):\n{}\n\
         The actual output is in {}.\n\
         If the change is intended, rewrite the golden files and commit them with the change:\n    {BLESS_CMD}",
        diff(&expected, &actual),
        dump.display()
    );
}

/// A unified-style line diff (longest common subsequence) with 3 lines of context.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    if a.len() * b.len() > 16_000_000 {
        let first = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
        return format!(
            "(too large for a diff) first difference at line {}:\n-{}\n+{}",
            first + 1,
            a.get(first).unwrap_or(&"<end of file>"),
            b.get(first).unwrap_or(&"<end of file>")
        );
    }
    // lcs[i][j]: length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    // Edit script: (' ' | '-' | '+', golden line number, actual line number, text).
    let mut ops: Vec<(char, usize, usize, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', i, j, a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            ops.push(('+', i, j, b[j]));
            j += 1;
        } else {
            ops.push(('-', i, j, a[i]));
            i += 1;
        }
    }
    const CONTEXT: usize = 3;
    const MAX_LINES: usize = 200;
    let changes = ops.iter().filter(|o| o.0 != ' ').count();
    // Print every change and the unchanged lines within CONTEXT of one; `@@` where lines are skipped.
    let mut show = vec![false; ops.len()];
    for (k, op) in ops.iter().enumerate() {
        if op.0 != ' ' {
            for s in &mut show[k.saturating_sub(CONTEXT)..(k + CONTEXT + 1).min(ops.len())] {
                *s = true;
            }
        }
    }
    let mut out = Vec::new();
    for (k, op) in ops.iter().enumerate() {
        if !show[k] {
            continue;
        }
        if k == 0 || !show[k - 1] {
            out.push(format!("@@ golden line {}, actual line {} @@", op.1 + 1, op.2 + 1));
        }
        out.push(format!("{}{}", op.0, op.3));
        if out.len() >= MAX_LINES {
            out.push(format!("... (cut; {changes} changed lines in all)"));
            break;
        }
    }
    out.join("\n")
}

// ---------------------------------------------------------------------------------------------
// Normalisation

/// Numbers kept as they are: counts that follow from the sample video and the config.
const KEEP_NUMBERS: &[&str] =
    &["part_id", "processed", "ok", "ng", "error", "rejects_fired", "rejects_failed", "ng_threshold", "threads"];
/// Strings that are wall-clock times.
const TIME_KEYS: &[&str] = &["ts", "since", "captured_at"];
/// Booleans that depend on timing.
const VOLATILE_BOOLS: &[&str] = &["deadline_miss"];

/// Text substitutions for host-specific strings (longest first).
struct Subst(Vec<(String, &'static str)>);

impl Subst {
    fn new(pairs: &[(&Path, &'static str)]) -> Subst {
        let mut v: Vec<(String, &'static str)> = pairs.iter().map(|(p, r)| (p.display().to_string(), *r)).collect();
        v.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        Subst(v)
    }

    fn apply(&self, s: &str) -> String {
        let mut s = s.to_string();
        for (from, to) in &self.0 {
            s = s.replace(from.as_str(), to);
        }
        s
    }
}

fn number_placeholder(n: &serde_json::Number) -> Value {
    Value::String(if n.is_f64() { "<float>" } else { "<int>" }.into())
}

/// A JSON document with volatile values replaced by typed placeholders.
fn normalise(v: &Value, key: &str, subst: &Subst) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), normalise(x, k, subst))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(|x| normalise(x, key, subst)).collect()),
        Value::Number(n) if KEEP_NUMBERS.contains(&key) => Value::Number(n.clone()),
        Value::Number(n) => number_placeholder(n),
        Value::String(_) if TIME_KEYS.contains(&key) => Value::String("<timestamp>".into()),
        Value::String(s) => Value::String(subst.apply(s)),
        Value::Bool(_) if VOLATILE_BOOLS.contains(&key) => Value::String("<bool>".into()),
        Value::Bool(_) | Value::Null => v.clone(),
    }
}

/// Every key path of a document (`a.b`, arrays as `a[]`), with the value's JSON type.
fn key_paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                key_paths(x, &p, out);
            }
        }
        Value::Array(a) => {
            out.insert(format!("{prefix}: array"));
            for x in a {
                key_paths(x, &format!("{prefix}[]"), out);
            }
        }
        other => {
            let t = match other {
                Value::Null => "null",
                Value::Bool(_) => "bool",
                Value::Number(n) if n.is_f64() => "float",
                Value::Number(_) => "int",
                _ => "string",
            };
            out.insert(format!("{prefix}: {t}"));
        }
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap()
}

// ---------------------------------------------------------------------------------------------
// External processes

/// A real mosquitto on a free loopback port (written here rather than borrowed from the crate,
/// so that these tests name nothing inside it). Killed when dropped.
struct Mosquitto {
    port: u16,
    child: KillOnDrop,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    fn start() -> Mosquitto {
        let exe = std::env::var_os("LINESIGHT_MOSQUITTO")
            .map(PathBuf::from)
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("/usr/sbin/mosquitto"));
        let mut last = String::new();
        // A port picked free may be taken by someone else before mosquitto binds it: retry.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let dir = tempfile::tempdir().unwrap();
            let conf = dir.path().join("mosquitto.conf");
            std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"))
                .unwrap();
            let child = Command::new(&exe)
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {} ({e}): run scripts/setup.sh", exe.display()));
            let mut m = Mosquitto { port, child: KillOnDrop(child), _dir: dir };
            match m.wait_listening() {
                Ok(()) => return m,
                Err(e) => last = e,
            }
        }
        panic!("mosquitto did not start: {last}");
    }

    fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("not listening on port {} within 5 s", self.port));
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                return Err(format!("exited at start: {s}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Something listens: make sure it is ours.
        std::thread::sleep(Duration::from_millis(100));
        match self.child.try_wait() {
            Ok(Some(s)) => Err(format!("exited at start ({s}): port {} was taken", self.port)),
            _ => Ok(()),
        }
    }
}

/// The pymodbus PLC simulator (an independent Modbus implementation), unit 1 on a free port.
fn start_plc() -> (tokio::runtime::Runtime, PyPlc) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(PyPlc::tcp(&[1]));
    (rt, plc)
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn require_ort() {
    let p = std::env::var("ORT_DYLIB_PATH")
        .expect("ORT_DYLIB_PATH is not set: run the tests through scripts/test.sh (or `. scripts/env.sh`)");
    assert!(Path::new(&p).is_file(), "ORT_DYLIB_PATH={p} does not exist: run scripts/setup.sh");
}

// ---------------------------------------------------------------------------------------------
// check-config and config-schema

/// `linesight ARGS` in `dir`: exit code, stdout and stderr, with `subst` applied.
fn run_cli(dir: &Path, args: &[&str], subst: &Subst) -> String {
    let out = Command::new(bin()).args(args).current_dir(dir).env_remove("RUST_LOG").output().unwrap();
    format!(
        "$ linesight {}\nexit code: {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        out.status.code().map_or("signal".to_string(), |c| c.to_string()),
        subst.apply(&String::from_utf8_lossy(&out.stdout)),
        subst.apply(&String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn check_config_on_the_firmware_configs() {
    // Only check-config: line-3-cell-07.yaml names hosts of a plant network, never `run` it.
    let repo = repo();
    let subst = Subst::new(&[(&repo, "<repo>")]);
    let mut files: Vec<String> = std::fs::read_dir(repo.join("firmware-config"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    for name in files {
        let shown = run_cli(&repo, &["check-config", &format!("firmware-config/{name}")], &subst);
        assert_snapshot(&format!("check-config/{name}.txt"), &shown);
    }
}

#[test]
fn check_config_on_broken_configs() {
    // The valid node of config_check.rs, so the line numbers in its tests match these.
    let valid = crate::config_check::valid();
    let cases: Vec<(&str, String)> = vec![
        ("valid", valid.clone()),
        ("unknown-key", valid.replace("mqtt:", "mqqt:")),
        ("unknown-field", valid.replace("      safe_state: off", "      safe_state: off\n      safe_sate: on")),
        ("bad-value-duration", valid.replace("delay: 350ms", "delay: 350")),
        ("bad-value-variant", valid.replace("      area: coil", "      area: coils")),
        ("missing-reference", valid.replace("    camera: top", "    camera: tpo")),
        ("syntax-error", valid.replace("  node_id: cell-07", "  node_id: [cell-07")),
        (
            "several-problems",
            valid
                .replace("mqtt:", "mqqt:")
                .replace("    camera: top", "    camera: tpo")
                .replace("ng_threshold: 0.5", "ng_threshold: 2")
                .replace("pulse: 80ms", "pulse: 120ms")
                .replace("      address: 11", "      address: 0"),
        ),
    ];
    let repo = repo();
    for (name, text) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("node.yaml"), &text).unwrap();
        let subst = Subst::new(&[(&repo, "<repo>"), (dir.path(), "<tmp>")]);
        let shown = run_cli(dir.path(), &["check-config", "node.yaml"], &subst);
        assert_snapshot(&format!("check-config/{name}.txt"), &shown);
    }
}

/// The binary's `config-schema` is the committed schema (tests/config_check.rs compares the
/// library's function; this pins the command). Not blessed: the committed file is the golden.
#[test]
fn config_schema_command_prints_the_committed_schema() {
    let out = Command::new(bin()).arg("config-schema").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let committed = std::fs::read_to_string(repo().join("firmware-config/linesight.schema.json")).unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed == committed,
        "`linesight config-schema` differs from firmware-config/linesight.schema.json (- committed, + printed):\n{}\n\
         If the change is intended: cargo run -- config-schema > firmware-config/linesight.schema.json",
        diff(&committed, &printed)
    );
}

// ---------------------------------------------------------------------------------------------
// A short real run

/// Two tasks on the sample video (played once, 10 fps): `inspect` on the committed classifier
/// with a reject gate on the PLC, and `inspect-side` on a model file that is not ONNX (its parts
/// are ERROR, its task state `failed`, and it raises an alarm). `mqtt_extra` goes into `mqtt:`.
fn run_yaml(plc: &str, port: u16, broken_model: &Path, client: &str, mqtt_extra: &str) -> String {
    let repo = repo();
    format!(
        r#"node: {{ group_id: snap-line, node_id: cell-1 }}
mqtt: {{ host: 127.0.0.1, port: {port}, client_id: "{client}", stats_interval: 1s, keep_alive: 5s{mqtt_extra} }}
modbus:
  devices:
    plc: {{ tcp: "{plc}", timeout: 500ms }}
  outputs:
    reject_gate: {{ device: plc, area: coil, address: 10, safe_state: off }}
cameras:
  top:
    source: {{ file: {video} }}
    fps: 10
  side:
    source: {{ file: {video} }}
    fps: 10
models:
  surface:
    path: {model}
    providers:
      - cuda: {{ device: 0 }}
      - cpu: {{ threads: 1 }}
  broken:
    path: {broken}
tasks:
  inspect:
    camera: top
    model: surface
    inference_timeout: 1s
    min_part_interval: 100ms
    reject: {{ output: reject_gate, delay: 1200ms, pulse: 30ms }}
  inspect-side: {{ camera: side, model: broken }}
"#,
        video = repo.join("samples/line.avi").display(),
        model = repo.join("models/surface-classifier.onnx").display(),
        broken = broken_model.display(),
    )
}

/// Parts of the sample video (samples/line.labels.csv has one line per part after its header).
fn parts_in_sample() -> usize {
    let text = std::fs::read_to_string(repo().join("samples/line.labels.csv")).unwrap();
    text.lines().skip(1).filter(|l| !l.trim().is_empty()).count()
}

/// Start the daemon on `cfg` (log to `log`), wait for it to end on its own.
fn run_to_the_end(cfg: &Path, log: &Path) -> i32 {
    let mut child: Child = Command::new(bin())
        .args(["run", "--log-format", "text", "--config"])
        .arg(cfg)
        .env_remove("RUST_LOG")
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(120));
    status.code().unwrap_or(-1)
}

/// The Modbus writes the PLC received, in order; consecutive writes to one place on one line:
/// `fc5 unit 1 coil 10: [0] [1] [0]`.
fn modbus_writes(plc: &PyPlc) -> Vec<String> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for w in plc.writes() {
        let place = format!("fc{} unit {} {} {}", w.fc, w.unit, w.area.as_str(), w.address);
        let values = format!("{:?}", w.values).replace(", ", ",");
        match out.last_mut() {
            Some((p, v)) if *p == place => v.push(values),
            _ => out.push((place, vec![values])),
        }
    }
    out.into_iter().map(|(p, v)| format!("{p}: {}", v.join(" "))).collect()
}

/// A camera's status messages: the last in full, and the keys of all. Which intermediate states
/// are published depends on timing (a `connecting` can be replaced by `online` before it is
/// sent), so they are only checked to come in order.
fn camera_status(msgs: &[Value]) -> Value {
    const ORDER: [&str; 3] = ["connecting", "online", "ended"];
    let states: Vec<&str> = msgs.iter().map(|m| m["status"].as_str().unwrap_or("?")).collect();
    let rank = |s: &&str| ORDER.iter().position(|o| o == s).unwrap_or_else(|| panic!("camera status {s:?}"));
    assert!(states.windows(2).all(|w| rank(&w[0]) < rank(&w[1])), "camera status order: {states:?}");
    let mut keys = BTreeSet::new();
    for m in msgs {
        key_paths(m, "", &mut keys);
    }
    json!({ "keys": keys, "last": msgs.last() })
}

#[test]
fn json_telemetry_of_a_short_run() {
    require_ort();
    let (_rt, plc) = start_plc();
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "linesight/#");
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.onnx");
    std::fs::write(&broken, b"this is not an ONNX file").unwrap();
    let cfg = dir.path().join("node.yaml");
    let yaml = run_yaml(&plc.addr().to_string(), broker.port, &broken, "snapshot-json", "");
    std::fs::write(&cfg, crate::common::with_state_dir(&yaml, &dir.path().join("state"))).unwrap();
    let log = dir.path().join("daemon.log");
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    let code = run_to_the_end(&cfg, &log);
    assert_eq!(code, 0, "{}", logs());
    let parts = parts_in_sample();
    assert!(
        wait_until(Duration::from_secs(10), || {
            sub.raw("/availability").last().is_some_and(|a| a == "offline")
                && sub.raw("/tasks/inspect/result").len() == parts
                && sub.raw("/tasks/inspect-side/result").len() == parts
        }),
        "not every message arrived: {:?}\n{}",
        sub.lines.lock().unwrap().iter().map(|(t, _)| t.clone()).collect::<BTreeSet<_>>(),
        logs()
    );
    std::thread::sleep(Duration::from_millis(300));

    let subst = Subst::new(&[(&repo(), "<repo>"), (dir.path(), "<tmp>")]);
    let norm = |v: &Value| normalise(v, "", &subst);
    let base = "linesight/snap-line/cell-1";

    // Results: one line per part, by task and part id.
    let mut results = String::new();
    for task in ["inspect", "inspect-side"] {
        let mut rs = sub.messages(&format!("/tasks/{task}/result"));
        rs.sort_by_key(|r| r["part_id"].as_u64());
        let ids: Vec<u64> = rs.iter().filter_map(|r| r["part_id"].as_u64()).collect();
        assert_eq!(ids, (1..=parts as u64).collect::<Vec<_>>(), "task {task}: one result per part");
        for r in &rs {
            results += &serde_json::to_string(&norm(r)).unwrap();
            results.push('\n');
        }
    }
    assert_snapshot("run-json/results.jsonl", &results);

    // Every topic published, in order of first appearance per topic (topics, not counts).
    let lines = sub.lines.lock().unwrap().clone();
    let topics: BTreeSet<String> =
        lines.iter().filter(|(t, _)| !t.starts_with("probe/")).map(|(t, _)| t.replacen(base, "<base>", 1)).collect();
    let of_topic = |suffix: &str| -> Vec<Value> {
        lines
            .iter()
            .filter(|(t, _)| t == &format!("{base}/{suffix}"))
            .map(|(_, p)| serde_json::from_str(p).map(|v| norm(&v)).unwrap_or_else(|_| Value::String(p.clone())))
            .collect()
    };

    // Stats: the final message in full (normalised); the key set of the periodic ones.
    let stats: Vec<Value> = sub.messages("/stats").iter().map(machine_skeleton).collect();
    let finals: Vec<&Value> = stats.iter().filter(|s| s["final"] == true).collect();
    assert_eq!(finals.len(), 1, "one final stats message");
    let mut periodic_keys: Option<BTreeSet<String>> = None;
    for s in stats.iter().filter(|s| s["final"] != true) {
        let mut keys = BTreeSet::new();
        key_paths(s, "", &mut keys);
        // Values may be null or not in a periodic message (last_error, faults): keep the keys
        // and the container types only.
        let keys: BTreeSet<String> = keys.into_iter().map(|k| k.split(": ").next().unwrap().to_string()).collect();
        match &periodic_keys {
            None => periodic_keys = Some(keys),
            Some(k) => assert_eq!(k, &keys, "periodic stats messages differ in their keys"),
        }
    }

    let telemetry = json!({
        "exit_code": code,
        "topics": topics,
        "availability": of_topic("availability"),
        "task_state": {
            "inspect": of_topic("tasks/inspect/state"),
            "inspect-side": of_topic("tasks/inspect-side/state"),
        },
        "camera_status": {
            "top": camera_status(&of_topic("cameras/top/status")),
            "side": camera_status(&of_topic("cameras/side/status")),
        },
        "alarms": of_topic("alarms"),
        "stats_final": norm(finals[0]),
        "stats_periodic_keys": periodic_keys.unwrap_or_default(),
        "modbus_writes": modbus_writes(&plc),
    });
    assert_snapshot("run-json/telemetry.json", &pretty(&telemetry));
}

/// `name: Type` for every metric of a decoded Sparkplug message, in the order sent.
fn metric_types(msg: &Value) -> Vec<String> {
    msg["payload"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        // Thermal zones are the machine's own (a laptop has some, a CI container none).
        .filter(|m| !m["name"].as_str().is_some_and(|n| n.starts_with("Machine/Temperature/")))
        .map(|m| {
            format!("{}: {}", m["name"].as_str().unwrap_or("<no name>"), m["datatype_name"].as_str().unwrap_or("?"))
        })
        .collect()
}

/// The stats message with its `machine` section reduced to its fixed keys: the figures, the
/// thread names and the thermal zones belong to the machine and to when its sampler ran, not to
/// linesight's behaviour.
fn machine_skeleton(stats: &Value) -> Value {
    let mut s = stats.clone();
    let placeholder = || Value::String("<machine>".into());
    if let Some(m) = s.get_mut("machine").and_then(Value::as_object_mut) {
        for (k, v) in m.iter_mut() {
            *v = match v {
                Value::Object(o) if k != "threads" && k != "temperatures_c" => Value::Object(
                    o.iter()
                        .map(|(k2, x)| {
                            let x = match x {
                                Value::Object(d) => {
                                    Value::Object(d.keys().map(|k3| (k3.clone(), placeholder())).collect())
                                }
                                _ => placeholder(),
                            };
                            (k2.clone(), x)
                        })
                        .collect(),
                ),
                _ => placeholder(),
            };
        }
    }
    s
}

/// The payload's own fields other than metrics, as types (`seq`, `timestamp`, ...).
fn payload_fields(msg: &Value) -> Value {
    let mut out = Map::new();
    for (k, v) in msg["payload"].as_object().unwrap() {
        if k == "metrics" {
            continue;
        }
        let t = match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "int",
            Value::String(_) => "string",
            _ => "other",
        };
        out.insert(k.clone(), Value::String(t.into()));
    }
    Value::Object(out)
}

#[test]
fn sparkplug_payloads_of_a_short_run() {
    require_ort();
    let (_rt, plc) = start_plc();
    let broker = Mosquitto::start();
    let d = Decoder::start(broker.port, &["spBv1.0/#"], &[]);
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.onnx");
    std::fs::write(&broken, b"this is not an ONNX file").unwrap();
    let sp = format!(
        ", dialect: sparkplug, sparkplug: {{ bdseq_file: {}, report_every: 200ms }}",
        dir.path().join("bdseq").display()
    );
    let cfg = dir.path().join("node.yaml");
    let yaml = run_yaml(&plc.addr().to_string(), broker.port, &broken, "snapshot-sp", &sp);
    std::fs::write(&cfg, crate::common::with_state_dir(&yaml, &dir.path().join("state"))).unwrap();
    let log = dir.path().join("daemon.log");
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    let code = run_to_the_end(&cfg, &log);
    assert_eq!(code, 0, "{}", logs());
    let kind = |m: &Value| m["topic"].as_str().unwrap().split('/').nth(2).unwrap_or("").to_string();
    assert!(
        d.wait(Duration::from_secs(10), |m| m.iter().any(|m| kind(m) == "NDEATH")),
        "no NDEATH after a clean stop\n{}",
        logs()
    );
    std::thread::sleep(Duration::from_millis(300));
    let all = d.all();
    let subst = Subst::new(&[(&repo(), "<repo>"), (dir.path(), "<tmp>")]);
    let node = "spBv1.0/snap-line/{}/cell-1";
    let topic_of = |m: &Value| {
        let t = m["topic"].as_str().unwrap();
        t.replacen(&node.replace("{}", &kind(m)), &format!("<node>/{}", kind(m)), 1)
    };

    // Births and deaths: every metric's name and type.
    let mut births = Map::new();
    for m in all.iter().filter(|m| ["NBIRTH", "DBIRTH", "NDEATH", "DDEATH"].contains(&kind(m).as_str())) {
        let t = topic_of(m);
        assert!(!births.contains_key(&t), "two {t} in one clean run");
        births.insert(t, json!({ "payload": payload_fields(m), "metrics": metric_types(m) }));
    }

    // Results (NDATA with Results/<task>/...): the metrics' names and types, and per part the values.
    let mut result_metrics: BTreeMap<String, BTreeSet<Vec<String>>> = BTreeMap::new();
    let mut per_part: BTreeMap<String, BTreeMap<u64, String>> = BTreeMap::new();
    let mut errors: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in all.iter().filter(|m| kind(m) == "NDATA") {
        let metrics = m["payload"]["metrics"].as_array().unwrap();
        let Some(task) = metrics
            .iter()
            .find_map(|x| x["name"].as_str()?.strip_prefix("Results/")?.strip_suffix("/Part Id").map(str::to_string))
        else {
            continue;
        };
        result_metrics.entry(task.clone()).or_default().insert(metric_types(m));
        let v = |name: &str| {
            metrics.iter().find(|x| x["name"] == format!("Results/{task}/{name}")).map(|x| x["value"].clone())
        };
        let id = v("Part Id").and_then(|x| x.as_u64()).expect("part id");
        let s = |x: Option<Value>| x.and_then(|x| x.as_str().map(str::to_string)).unwrap_or_default();
        let error = subst.apply(&s(v("Error")));
        let line = format!(
            "{} {} reject={}{}",
            s(v("Verdict")),
            s(v("Class")),
            s(v("Reject")),
            if error.is_empty() { String::new() } else { " error=(see errors)".into() }
        );
        if !error.is_empty() {
            errors.entry(task.clone()).or_default().insert(error);
        }
        assert!(per_part.entry(task).or_default().insert(id, line).is_none(), "part {id} reported twice");
    }
    let parts = parts_in_sample() as u64;
    for (task, p) in &per_part {
        assert_eq!(p.keys().copied().collect::<Vec<_>>(), (1..=parts).collect::<Vec<_>>(), "task {task}");
    }

    // DDATA reports by exception: which metrics it carries depends on timing, so it is not pinned
    // as such; each metric it carries must have been declared, with its type, in the device's DBIRTH.
    let mut ddata_devices = BTreeSet::new();
    let mut ddata_payloads = BTreeMap::new();
    for m in all.iter().filter(|m| kind(m) == "DDATA") {
        let device = m["topic"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
        let birth_topic = format!("<node>/DBIRTH/{device}");
        let declared: BTreeSet<String> =
            births.get(&birth_topic).unwrap_or_else(|| panic!("DDATA for {device} without a DBIRTH"))["metrics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect();
        for mt in metric_types(m) {
            assert!(declared.contains(&mt), "DDATA metric `{mt}` of {device} is not in its DBIRTH");
        }
        ddata_devices.insert(device);
        let fields = payload_fields(m);
        ddata_payloads.insert(fields.to_string(), fields);
    }

    let snapshot = json!({
        "exit_code": code,
        "births_and_deaths": births,
        "ndata_result_metrics": result_metrics,
        "ndata_result_payload": all.iter().find(|m| kind(m) == "NDATA").map(payload_fields),
        "ddata_devices": ddata_devices,
        "ddata_payloads": ddata_payloads.into_values().collect::<Vec<_>>(),
        "results_per_part": per_part,
        "result_errors": errors,
        "modbus_writes": modbus_writes(&plc),
    });
    assert_snapshot("run-sparkplug/payloads.json", &pretty(&snapshot));
}
