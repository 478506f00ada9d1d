//! Model rollout on a running line (issue 13), against the real daemon, a real mosquitto and
//! pymodbus as the independent PLC: signed packages made by `linesight model pack` are dropped in
//! the node's drop folder and installed by MQTT commands; every refusal case is refused with its
//! reason; the candidate is shadowed (the agreement table is published), promoted mid-run and
//! rolled back mid-run at 20 parts/s, and through all of it every part gets exactly one verdict,
//! named by the version that judged it, and every rejecting verdict exactly one pulse at the PLC.
//! A SIGKILL in the middle of a promotion leaves exactly one of the two versions active.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::pyplc::{Area, PyPlc};
use crate::common::*;
use serde_json::{json, Value};

const BASE: &str = "linesight/test-line/cell-1";
const GATE: u16 = 10;
/// The factory model's label (its sidecar's name and version) and the package's.
const FACTORY: &str = "surface-classifier@1";

fn linesight(args: &[&str]) -> std::process::Output {
    Command::new(bin()).args(args).output().unwrap()
}

/// Golden images the committed classifier judges far from its threshold.
fn golden_args(repo: &Path) -> Vec<String> {
    let mut args = Vec::new();
    for (file, verdict) in
        [("001_good.png", "OK"), ("002_good.png", "OK"), ("000_chip.png", "NG"), ("009_crack.png", "NG")]
    {
        args.push("--golden".to_string());
        args.push(format!("{}={verdict}", repo.join("samples/parts").join(file).display()));
    }
    args
}

/// A package of the committed classifier as version `version` of model `surface`, with the NG
/// threshold in its metadata set to `threshold` (four characters, e.g. `0.01`: a candidate that
/// judges differently), signed with `key`.
fn pack(work: &Path, key: &Path, version: u64, threshold: &str, extra: &[&str], out: &Path) -> PathBuf {
    pack_as("surface", work, key, version, threshold, extra, out)
}

/// The same, for the model entry `name`.
fn pack_as(name: &str, work: &Path, key: &Path, version: u64, threshold: &str, extra: &[&str], out: &Path) -> PathBuf {
    let repo = repo();
    let src = work.join(format!("src-{version}-{}", out.file_name().unwrap().to_string_lossy()));
    std::fs::create_dir_all(&src).unwrap();
    let model = src.join("model.onnx");
    // The contract is JSON in the ONNX file's metadata: a value of the same length keeps every
    // protobuf length right.
    let bytes = std::fs::read(repo.join("models/surface-classifier.onnx")).unwrap();
    let (from, to) = (b"\"ng_threshold\":0.66}".as_slice(), format!("\"ng_threshold\":{threshold}}}"));
    assert_eq!(from.len(), to.len(), "a threshold of four characters");
    let at = bytes.windows(from.len()).position(|w| w == from).expect("the classifier's metadata has its threshold");
    let mut patched = bytes.clone();
    patched[at..at + from.len()].copy_from_slice(to.as_bytes());
    std::fs::write(&model, patched).unwrap();
    std::fs::copy(repo.join("models/surface-classifier.onnx.json"), src.join("model.onnx.json")).unwrap();
    let mut args: Vec<String> = ["model", "pack", "--model"].iter().map(|s| s.to_string()).collect();
    args.push(model.display().to_string());
    args.extend(["--name", name, "--version", &version.to_string(), "--key"].iter().map(|s| s.to_string()));
    args.push(key.display().to_string());
    args.push("--out".into());
    args.push(out.display().to_string());
    args.extend(golden_args(&repo));
    args.extend(extra.iter().map(|s| s.to_string()));
    let o = Command::new(bin()).args(&args).output().unwrap();
    assert!(o.status.success(), "model pack: {}", String::from_utf8_lossy(&o.stderr));
    out.to_path_buf()
}

/// A properly signed package of another kind of model (the committed YOLO detector) for `surface`.
fn pack_detector(work: &Path, key: &Path, out: &Path) {
    let repo = repo();
    let model = work.join("detector.onnx");
    std::fs::copy(repo.join("models/surface-detector.onnx"), &model).unwrap();
    let mut args: Vec<String> = ["model", "pack", "--kind", "yolo-detect", "--name", "surface", "--version", "5"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (flag, path) in [("--model", model.as_path()), ("--key", key), ("--out", out)] {
        args.push(flag.into());
        args.push(path.display().to_string());
    }
    args.extend(golden_args(&repo));
    let o = Command::new(bin()).args(&args).output().unwrap();
    assert!(o.status.success(), "model pack: {}", String::from_utf8_lossy(&o.stderr));
}

/// Publish each command on the node's command topic, in order.
fn send(port: u16, payloads: &[Value]) {
    publish_lines(port, &format!("{BASE}/commands"), payloads);
}

/// The `n`th answer to command `id` (a slow install loads and runs the model: up to a minute).
fn answer_n(sub: &Subscriber, id: &str, n: usize, log: &Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let answers: Vec<Value> =
            sub.messages("/commands/response").into_iter().filter(|a| a["id"] == json!(id)).collect();
        if let Some(a) = answers.into_iter().nth(n - 1) {
            return a;
        }
        assert!(
            Instant::now() < deadline,
            "no answer to {id}: {:?}\n{}",
            sub.raw("/commands/response"),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Send one command and wait for its answer. The node takes at most 10 commands in 10 s: a
/// command refused for that is sent again (under a new id) once the window has room.
fn command(sub: &Subscriber, port: u16, id: &str, body: Value, log: &Path) -> Value {
    let mut attempt = 0;
    loop {
        let id = if attempt == 0 { id.to_string() } else { format!("{id}-again{attempt}") };
        let mut body = body.clone();
        body["id"] = json!(id);
        send(port, &[body]);
        let a = answer_n(sub, &id, 1, log);
        if !a["error"].as_str().is_some_and(|e| e.contains("more than 10 commands")) {
            return a;
        }
        attempt += 1;
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn refused<'a>(a: &'a Value, id: &str) -> &'a str {
    assert_eq!(a["ok"], false, "{id} must be refused: {a}");
    a["error"].as_str().unwrap()
}

/// Wait until a result is judged by `model` (or fail with the log).
fn wait_model(sub: &Subscriber, model: &str, log: &Path) {
    let ok = sub.wait_for(
        |t, p| t.ends_with("/tasks/inspect/result") && p.contains(&format!("\"model\":\"{model}\"")),
        Duration::from_secs(60),
    );
    assert!(ok, "no part judged by {model}\n{}", std::fs::read_to_string(log).unwrap_or_default());
}

/// The latest stats message's `tasks.inspect.shadow`, once it has compared at least `n` parts.
fn wait_shadow(sub: &Subscriber, n: u64, log: &Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = sub.messages("/stats");
        if let Some(s) = stats.last().map(|s| s["tasks"]["inspect"]["shadow"].clone()) {
            if s["compared"].as_u64().unwrap_or(0) >= n {
                return stats.last().unwrap().clone();
            }
        }
        assert!(Instant::now() < deadline, "no shadow figures\n{}", std::fs::read_to_string(log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// "On" writes to the gate's coil at the PLC (the gate writes one per rejected part).
fn on_writes(plc: &PyPlc) -> usize {
    plc.writes().iter().filter(|w| w.area == Area::Coil && w.coil(GATE) == Some(true)).count()
}

/// Rising edges of the gate's coil at the PLC.
fn pulses(plc: &PyPlc) -> usize {
    let mut on = false;
    let mut n = 0;
    for w in plc.writes().iter().filter(|w| w.area == Area::Coil) {
        if let Some(v) = w.coil(GATE) {
            if v && !on {
                n += 1;
            }
            on = v;
        }
    }
    n
}

struct Line {
    _rt: tokio::runtime::Runtime,
    plc: PyPlc,
    broker: Broker,
    sub: Subscriber,
    dir: tempfile::TempDir,
    key: PathBuf,
    incoming: PathBuf,
    cfg: PathBuf,
    log: PathBuf,
}

/// pymodbus as the PLC, a broker, a key pair, a config at 20 parts/s trusting the key.
fn line() -> Line {
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(PyPlc::tcp(&[1]));
    let broker = Broker::start().unwrap();
    let sub = Subscriber::start(broker.port, "linesight/#");
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("team.key");
    let o = linesight(&["model", "keygen", "--out", &key.display().to_string()]);
    assert!(o.status.success(), "keygen: {}", String::from_utf8_lossy(&o.stderr));
    let state = dir.path().join("state");
    let incoming = state.join("incoming");
    std::fs::create_dir_all(&incoming).unwrap();
    let yaml = node_yaml(&plc.addr().to_string(), broker.port, "loop: true", 20.0)
        .replace("min_part_interval: 100ms", "min_part_interval: 50ms")
        // Evidence capture of rejects only: shadow disagreements are captured too.
        .replace("    inference_timeout: 1s\n", "    inference_timeout: 1s\n    capture: { max_files: 5000 }\n")
        + &format!(
            "rollout:\n  trusted_keys:\n    - {{ name: test-team, file: \"{}.pub\" }}\n  health: {{ first_parts: 40, max_error_rate: 0.05 }}\n",
            key.display()
        );
    let cfg = write_config(dir.path(), &with_state_dir(&yaml, &state));
    let log = dir.path().join("daemon.log");
    Line { _rt: rt, plc, broker, sub, incoming, cfg, log, key, dir }
}

#[test]
fn a_candidate_is_shadowed_promoted_and_rolled_back_mid_run_and_bad_packages_are_refused() {
    let l = line();
    let work = l.dir.path();
    let port = l.broker.port;
    // Version 2: the same network with a lower NG threshold, so it rejects some good parts
    // production passes: shadow mode must show that before anyone promotes it.
    pack(work, &l.key, 2, "0.01", &[], &l.incoming.join("surface-2.lsmodel"));
    // Refusal cases, each a package in the drop folder.
    pack(work, &l.key, 1, "0.66", &[], &l.incoming.join("older.lsmodel"));
    pack_detector(work, &l.key, &l.incoming.join("wrong-kind.lsmodel"));
    let other_arch = if std::env::consts::ARCH == "aarch64" { "x86_64" } else { "aarch64" };
    pack(work, &l.key, 5, "0.66", &["--arch", other_arch], &l.incoming.join("wrong-arch.lsmodel"));
    pack(work, &l.key, 5, "0.66", &["--expires", "2020-01-01T00:00:00Z"], &l.incoming.join("expired.lsmodel"));
    pack(work, &l.key, 5, "0.66", &["--min-linesight", "99.0.0"], &l.incoming.join("too-new.lsmodel"));
    let stranger = work.join("stranger.key");
    assert!(linesight(&["model", "keygen", "--out", &stranger.display().to_string()]).status.success());
    pack(work, &stranger, 5, "0.66", &[], &l.incoming.join("unknown-key.lsmodel"));
    let tampered = pack(work, &l.key, 5, "0.66", &[], &l.incoming.join("tampered.lsmodel"));
    let mut bytes = std::fs::read(tampered.join("model.onnx")).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(tampered.join("model.onnx"), &bytes).unwrap();
    let truncated = pack(work, &l.key, 5, "0.66", &[], &l.incoming.join("truncated.lsmodel"));
    let bytes = std::fs::read(truncated.join("model.onnx")).unwrap();
    std::fs::write(truncated.join("model.onnx"), &bytes[..bytes.len() - 100]).unwrap();
    let forged = pack(work, &l.key, 5, "0.66", &[], &l.incoming.join("forged.lsmodel"));
    let manifest = std::fs::read_to_string(forged.join("manifest.json")).unwrap();
    std::fs::write(forged.join("manifest.json"), manifest.replacen("\"version\": 5", "\"version\": 6", 1)).unwrap();
    // A golden image this model does not judge as the package says.
    let lie = format!("{}=NG", repo().join("samples/parts/004_good.png").display());
    pack(work, &l.key, 5, "0.66", &["--golden", &lie], &l.incoming.join("golden-lies.lsmodel"));

    let mut child = run_daemon(&l.cfg, &l.log);
    wait_model(&l.sub, FACTORY, &l.log);

    let install = |id: &str, package: &str| {
        command(&l.sub, port, id, json!({"command": "install-model", "model": "surface", "package": package}), &l.log)
    };
    let cases = [
        ("wrong-kind", "wrong-kind.lsmodel", "kind"),
        ("wrong-arch", "wrong-arch.lsmodel", std::env::consts::ARCH),
        ("expired", "expired.lsmodel", "expire"),
        ("too-new", "too-new.lsmodel", "99.0.0"),
        ("unknown-key", "unknown-key.lsmodel", "key"),
        ("tampered", "tampered.lsmodel", "model.onnx"),
        ("truncated", "truncated.lsmodel", "model.onnx"),
        ("forged", "forged.lsmodel", "manifest.sig"),
        ("escape", "../../node.yaml", "drop folder"),
        ("missing", "nothing-here.lsmodel", "nothing-here"),
    ];
    for (id, package, why) in cases {
        let a = install(id, package);
        let e = refused(&a, id);
        assert!(e.to_lowercase().contains(why), "{id}: the reason names `{why}`: {e}");
    }
    let a = install("install-2", "surface-2.lsmodel");
    assert_eq!(a["ok"], true, "{a}\n{}", std::fs::read_to_string(&l.log).unwrap_or_default());
    // The same command again (a replay) and the same version again (a new command) are refused.
    let used = a["id"].as_str().unwrap().to_string();
    send(port, &[json!({"id": used, "command": "install-model", "model": "surface", "package": "surface-2.lsmodel"})]);
    let e = refused(&answer_n(&l.sub, &used, 2, &l.log), "replay").to_string();
    assert!(e.contains(&format!("id `{used}` was already used")), "a replayed command is refused as such: {e}");
    let e = refused(&install("again-2", "surface-2.lsmodel"), "again-2").to_string();
    assert!(e.contains('2'), "an equal version is refused: {e}");
    let e = refused(&install("older-1", "older.lsmodel"), "older-1").to_string();
    assert!(e.contains('1') && e.contains('2'), "an older version is refused: {e}");
    // Golden images that do not give their verdicts here: staged, run, refused and removed.
    let e = refused(&install("golden", "golden-lies.lsmodel"), "golden").to_string();
    assert!(e.contains("gives OK for task `inspect`, expected NG"), "{e}");
    assert!(!l.dir.path().join("state/models/surface/slots/5").exists(), "the failed slot is removed");

    // Shadow: the candidate judges the same frames; its extra rejects show in the table.
    // More than one loop of the 60-frame video: every part kind has gone by.
    let stats = wait_shadow(&l.sub, 70, &l.log);
    let shadow = &stats["tasks"]["inspect"]["shadow"];
    assert_eq!(shadow["candidate"], "surface@2", "{shadow}");
    assert!(shadow["both_ng"].as_u64().unwrap() > 0, "{shadow}");
    assert!(shadow["candidate_only_ng"].as_u64().unwrap() > 0, "the lower threshold rejects good parts: {shadow}");
    assert_eq!(shadow["production_only_ng"], 0, "{shadow}");
    assert_eq!(stats["rollout"]["surface"]["shadow"]["version"], 2, "{}", stats["rollout"]);
    assert_eq!(stats["rollout"]["surface"]["active"], Value::Null, "production still runs the config's file");

    // Promote mid-run, then roll back mid-run.
    let a = command(&l.sub, port, "promote", json!({"command": "promote-model", "model": "surface"}), &l.log);
    assert_eq!(a["ok"], true, "{a}");
    wait_model(&l.sub, "surface@2", &l.log);
    std::thread::sleep(Duration::from_secs(2));
    let a = command(&l.sub, port, "rollback", json!({"command": "rollback-model", "model": "surface"}), &l.log);
    assert_eq!(a["ok"], true, "{a}");
    let promoted_results = l.sub.messages("/tasks/inspect/result").len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !l.sub.messages("/tasks/inspect/result")[promoted_results..].iter().any(|r| r["model"] == FACTORY) {
        assert!(Instant::now() < deadline, "the rollback brings the factory model back");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let e = refused(
        &command(&l.sub, port, "rollback-2", json!({"command": "rollback-model", "model": "surface"}), &l.log),
        "rollback-2",
    )
    .to_string();
    assert!(e.contains("no earlier accepted version"), "{e}");

    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    assert!(l.sub.wait_for(|t, p| t.ends_with("/availability") && p == "offline", Duration::from_secs(5)));

    // Every part exactly one verdict, named by the version that judged it; the versions change
    // between two parts (factory, then 2, then factory again: never interleaved).
    let results = l.sub.messages("/tasks/inspect/result");
    let mut ids: Vec<u64> = results.iter().map(|r| r["part_id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    let n = ids.len() as u64;
    assert_eq!(ids, (1..=n).collect::<Vec<_>>(), "every part one result, none missing");
    let mut by_id = results.clone();
    by_id.sort_by_key(|r| r["part_id"].as_u64());
    let mut runs: Vec<&str> = Vec::new();
    for r in &by_id {
        let m = r["model"].as_str().unwrap();
        if runs.last() != Some(&m) {
            runs.push(m);
        }
    }
    assert_eq!(runs, [FACTORY, "surface@2", FACTORY], "switched between two parts, twice");
    let labels = labels();
    let mut rejecting = 0;
    for r in &by_id {
        let id = r["part_id"].as_u64().unwrap() as usize;
        let bad = labels[(id - 1) % labels.len()];
        let v = r["verdict"].as_str().unwrap();
        if r["model"] == FACTORY {
            assert_eq!(v, if bad { "NG" } else { "OK" }, "part {id}: {r}");
        } else {
            assert!(v == "NG" || !bad, "version 2 rejects at least what production does: part {id}: {r}");
        }
        if v != "OK" {
            rejecting += 1;
            assert_eq!(r["reject"]["status"], "fired", "part {id}: {r}");
        }
    }
    // Every rejecting part's "on" reaches the PLC: one write each. (Rising edges can be fewer:
    // two pulses that overlap on the gate's timeline merge, the output staying on for both, and
    // under load a late "off" write makes that happen for parts 49 ms apart.)
    assert_eq!(on_writes(&l.plc), rejecting, "one reject write per rejecting verdict at the PLC: 0 missed");
    assert!(pulses(&l.plc) <= rejecting);

    // The parts the candidate judged differently are kept as evidence, with both judgements.
    let mut disagreements = 0;
    let mut stack = vec![work.join("state/capture")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "json") {
                let doc: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                if doc["reason"] == "disagreement" {
                    assert_eq!(doc["verdict"], "OK", "production passed it: {doc}");
                    assert_eq!(doc["candidate"]["verdict"], "NG", "the candidate rejected it: {doc}");
                    assert_eq!(doc["candidate"]["label"], "surface@2", "{doc}");
                    disagreements += 1;
                }
            }
        }
    }
    let table = &stats["tasks"]["inspect"]["shadow"];
    assert!(
        disagreements as u64 >= table["candidate_only_ng"].as_u64().unwrap(),
        "every disagreement counted by then is captured: {disagreements} vs {table}"
    );

    // The history keeps every refusal and action, with its reason.
    let history = std::fs::read_to_string(work.join("state/models/surface/history.jsonl")).unwrap();
    let events: Vec<Value> = history.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let refusals = events.iter().filter(|e| e["result"] == "refused").count();
    assert!(refusals >= cases.len(), "every refusal is in the history: {history}");
    for action in ["install", "promote", "rollback"] {
        assert!(events.iter().any(|e| e["event"] == action && e["result"] == "done"), "{action}: {history}");
    }
}

#[test]
fn a_kill_during_promotion_leaves_exactly_one_of_the_two_versions_active() {
    let l = line();
    let port = l.broker.port;
    pack(l.dir.path(), &l.key, 2, "0.66", &[], &l.incoming.join("surface-2.lsmodel"));
    let mut child = run_daemon(&l.cfg, &l.log);
    wait_model(&l.sub, FACTORY, &l.log);
    let a = command(
        &l.sub,
        port,
        "install",
        json!({"command": "install-model", "model": "surface", "package": "surface-2.lsmodel"}),
        &l.log,
    );
    assert_eq!(a["ok"], true, "{a}");
    // The promotion runs the golden images again and swaps the model: the kill lands inside it.
    send(port, &[json!({"id": "promote", "command": "promote-model", "model": "surface"})]);
    std::thread::sleep(Duration::from_millis(150));
    assert!(Command::new("kill").args(["-KILL", &child.id().to_string()]).status().unwrap().success());
    let _ = child.wait();

    let active = l.dir.path().join("state/models/surface/active.json");
    let version = match std::fs::read(&active) {
        Ok(bytes) => {
            let doc: Value = serde_json::from_slice(&bytes).expect("active.json is whole, never torn");
            doc["version"].as_u64()
        }
        Err(_) => None,
    };
    assert!(matches!(version, None | Some(2)), "{version:?}");
    // The restarted node runs exactly that version.
    let before = l.sub.messages("/tasks/inspect/result").len();
    let mut child = run_daemon(&l.cfg, &l.log);
    let expected = if version == Some(2) { "surface@2" } else { FACTORY };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let results = l.sub.messages("/tasks/inspect/result");
        let after: Vec<&Value> = results[before..].iter().collect();
        if after.len() >= 10 {
            assert!(after.iter().all(|r| r["model"] == expected), "after the restart only {expected} judges");
            break;
        }
        assert!(Instant::now() < deadline, "{}", std::fs::read_to_string(&l.log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
}

#[test]
fn a_promotion_whose_first_parts_fail_rolls_back_by_itself() {
    let l = line();
    let port = l.broker.port;
    // Disabling the task by command gives its parts ERROR: the health check's own signal.
    let yaml = std::fs::read_to_string(&l.cfg)
        .unwrap()
        .replace("    inference_timeout: 1s\n", "    inference_timeout: 1s\n    commands: { allow_disable: true }\n");
    std::fs::write(&l.cfg, yaml).unwrap();
    pack(l.dir.path(), &l.key, 2, "0.66", &[], &l.incoming.join("surface-2.lsmodel"));
    let mut child = run_daemon(&l.cfg, &l.log);
    wait_model(&l.sub, FACTORY, &l.log);
    let install = json!({"command": "install-model", "model": "surface", "package": "surface-2.lsmodel"});
    assert_eq!(command(&l.sub, port, "install", install, &l.log)["ok"], true);
    let a = command(&l.sub, port, "promote", json!({"command": "promote-model", "model": "surface"}), &l.log);
    assert_eq!(a["ok"], true, "{a}");
    wait_model(&l.sub, "surface@2", &l.log);
    let a = command(&l.sub, port, "disable", json!({"command": "disable-task", "task": "inspect"}), &l.log);
    assert_eq!(a["ok"], true, "{a}");
    // ERROR parts above 5 % of the first 40 after the promotion: back to the factory model.
    let history = l.dir.path().join("state/models/surface/history.jsonl");
    let deadline = Instant::now() + Duration::from_secs(60);
    let rolled_back = loop {
        let text = std::fs::read_to_string(&history).unwrap_or_default();
        let found = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|e| e["event"] == "rollback" && e["source"].as_str().is_some_and(|s| s.starts_with("health check")));
        if let Some(e) = found {
            break e;
        }
        assert!(Instant::now() < deadline, "no rollback by the health check: {text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(rolled_back["result"], "done", "{rolled_back}");
    assert!(rolled_back["source"].as_str().unwrap().contains("ERROR of the first"), "{rolled_back}");
    let active: Value =
        serde_json::from_slice(&std::fs::read(l.dir.path().join("state/models/surface/active.json")).unwrap()).unwrap();
    assert_eq!(active["version"], Value::Null, "the factory model is active again: {active}");
    let a = command(&l.sub, port, "enable", json!({"command": "enable-task", "task": "inspect"}), &l.log);
    assert_eq!(a["ok"], true, "{a}");
    let before = l.sub.messages("/tasks/inspect/result").len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !l.sub.messages("/tasks/inspect/result")[before..]
        .iter()
        .any(|r| r["model"] == FACTORY && r["verdict"] != "ERROR")
    {
        assert!(Instant::now() < deadline, "the factory model inspects again");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
}

#[test]
fn a_canary_model_entry_takes_the_new_version_while_the_other_task_keeps_production() {
    let l = line();
    let port = l.broker.port;
    // A second camera on the same video, its task on a second entry of the same model file: the canary.
    let yaml = std::fs::read_to_string(&l.cfg).unwrap();
    let video = repo().join("samples/line.avi");
    let model = repo().join("models/surface-classifier.onnx");
    let yaml = yaml
        .replace(
            "cameras:\n",
            &format!("cameras:\n  side:\n    source: {{ file: {} }}\n    fps: 10\n    loop: true\n", video.display()),
        )
        .replace("models:\n", &format!("models:\n  surface-canary:\n    path: {}\n", model.display()))
        .replace(
            "tasks:\n",
            "tasks:\n  inspect-canary: { camera: side, model: surface-canary, inference_timeout: 1s }\n",
        );
    std::fs::write(&l.cfg, yaml).unwrap();
    pack_as("surface-canary", l.dir.path(), &l.key, 2, "0.66", &[], &l.incoming.join("canary-2.lsmodel"));
    let mut child = run_daemon(&l.cfg, &l.log);
    wait_model(&l.sub, FACTORY, &l.log);
    let install = json!({"command": "install-model", "model": "surface-canary", "package": "canary-2.lsmodel"});
    assert_eq!(command(&l.sub, port, "install", install, &l.log)["ok"], true);
    let a = command(&l.sub, port, "promote", json!({"command": "promote-model", "model": "surface-canary"}), &l.log);
    assert_eq!(a["ok"], true, "{a}");
    let ok = l.sub.wait_for(
        |t, p| t.ends_with("/tasks/inspect-canary/result") && p.contains("\"model\":\"surface-canary@2\""),
        Duration::from_secs(60),
    );
    assert!(ok, "the canary task runs version 2\n{}", std::fs::read_to_string(&l.log).unwrap_or_default());
    let before = l.sub.messages("/tasks/inspect/result").len();
    std::thread::sleep(Duration::from_secs(2));
    let main_task = l.sub.messages("/tasks/inspect/result");
    assert!(main_task.len() > before, "the other task keeps inspecting");
    assert!(main_task.iter().all(|r| r["model"] == FACTORY), "the other task keeps production's model");
    assert!(!l.dir.path().join("state/models/surface/active.json").exists(), "nothing was promoted for `surface`");
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
}
