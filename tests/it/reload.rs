//! Change without a stop (issue 12): at 20 parts/s against the independent PLC (pymodbus), the
//! config file is changed and reloaded while the line runs: a changed threshold (SIGHUP), a
//! changed model (the `reload` command), a changed camera (SIGHUP), and an invalid file and a
//! change that needs a restart (both refused, the running config stays). Every part gets exactly one verdict
//! (part ids without a gap), each is judged by the settings in force when it was announced (the
//! config generation never goes back along the part ids), and every part that must be thrown out
//! is: the PLC sees one reject pulse per rejected result, none missed or late past its deadline.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::pyplc::{Area, PyPlc};
use crate::common::*;

const BASE: &str = "linesight/test-line/cell-1";
const GATE: u16 = 10;

fn results(sub: &Subscriber) -> Vec<Value> {
    sub.messages("/tasks/inspect/result")
}

/// Wait until a result of config generation `g` arrives.
fn wait_generation(sub: &Subscriber, g: u64, log: &std::path::Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(r) = results(sub).into_iter().find(|r| r["config_generation"] == g) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "no result of generation {g}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_log(log: &std::path::Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "`{needle}` not in the log:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn hup(child: &std::process::Child) {
    assert!(Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap().success());
}

/// The `reload` command over JSON; returns its answer.
fn reload_command(port: u16, sub: &Subscriber, id: &str) -> Value {
    let mut pubr = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", &format!("{BASE}/commands"), "-q", "1", "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(pubr.stdin.take().unwrap(), r#"{{"id":"{id}","command":"reload"}}"#).unwrap();
    assert!(pubr.wait().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(a) = sub.messages("/commands/response").into_iter().find(|a| a["id"] == id) {
            return a;
        }
        assert!(Instant::now() < deadline, "no answer to {id}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reloads_under_load_change_thresholds_and_models_between_parts_and_refuse_bad_files() {
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(PyPlc::tcp(&[1]));
    let broker = Broker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sub = Subscriber::start(broker.port, &format!("{BASE}/#"));
    let base = node_yaml(&plc.addr().to_string(), broker.port, "loop: true", 20.0);
    let cfg = write_config(dir.path(), &base);
    let original = std::fs::read_to_string(&cfg).unwrap();
    let log = dir.path().join("daemon.log");
    let mut child = run_daemon(&cfg, &log);
    wait_generation(&sub, 0, &log);
    std::thread::sleep(Duration::from_secs(2));

    // 1. A changed threshold, by SIGHUP.
    let with_rules = original
        .replace("    inference_timeout: 1s\n", "    inference_timeout: 1s\n    rules: { ng_threshold: 0.7 }\n");
    assert_ne!(with_rules, original);
    std::fs::write(&cfg, &with_rules).unwrap();
    hup(&child);
    let first = wait_generation(&sub, 1, &log);
    assert_eq!(first["ng_threshold"], 0.7, "{first}");
    std::thread::sleep(Duration::from_secs(2));

    // 2. A changed model, by command.
    let yolo = repo().join("tests/models/surface-yolo-cls.onnx");
    let new_model = with_rules.replace(
        &format!("    path: {}\n", repo().join("models/surface-classifier.onnx").display()),
        &format!("    path: {}\n    ok_classes: [good]\n", yolo.display()),
    );
    assert_ne!(new_model, with_rules);
    std::fs::write(&cfg, &new_model).unwrap();
    let answer = reload_command(broker.port, &sub, "reload-model");
    assert_eq!(answer["ok"], true, "{answer}");
    let swapped = wait_generation(&sub, 2, &log);
    assert!(swapped["model"].as_str().unwrap().starts_with("surface-yolo-cls@"), "{swapped}");
    std::thread::sleep(Duration::from_secs(2));

    // 3. A changed camera (turned upside down), by SIGHUP: its source is opened again.
    let new_camera = new_model.replace("    loop: true\n", "    loop: true\n    rotate: 180\n");
    assert_ne!(new_camera, new_model);
    std::fs::write(&cfg, &new_camera).unwrap();
    hup(&child);
    wait_generation(&sub, 3, &log);
    wait_log(&log, "camera settings changed by a reload");
    std::thread::sleep(Duration::from_secs(2));

    // 4. An invalid file (SIGHUP) and a change that needs a restart (command): both refused whole.
    std::fs::write(&cfg, new_camera.replace("ng_threshold: 0.7", "ng_threshold: seven")).unwrap();
    hup(&child);
    let text = wait_log(&log, "config reload refused");
    assert!(text.contains(&format!("{}:", cfg.display())), "the problem names FILE:LINE:COL:\n{text}");
    std::fs::write(&cfg, new_camera.replace("pulse: 30ms", "pulse: 40ms")).unwrap();
    let answer = reload_command(broker.port, &sub, "reload-pulse");
    let error = answer["error"].as_str().unwrap_or_else(|| panic!("refused: {answer}"));
    assert!(error.contains("`tasks.inspect.reject.pulse` changed: that takes a restart"), "{error}");
    std::thread::sleep(Duration::from_secs(2));

    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());

    // Every part exactly once, in generation order, judged by its own generation's settings.
    let mut all = results(&sub);
    all.sort_by_key(|r| r["part_id"].as_u64().unwrap());
    let ids: Vec<u64> = all.iter().map(|r| r["part_id"].as_u64().unwrap()).collect();
    assert!(ids.len() > 150, "{} parts", ids.len());
    assert_eq!(ids, (ids[0]..ids[0] + ids.len() as u64).collect::<Vec<_>>(), "a part without a verdict, or twice");
    let generations: Vec<u64> = all.iter().map(|r| r["config_generation"].as_u64().unwrap()).collect();
    assert!(generations.windows(2).all(|w| w[0] <= w[1]), "a generation went back: {generations:?}");
    assert_eq!(*generations.last().unwrap(), 3, "the refused reloads changed nothing");
    for r in &all {
        let g = r["config_generation"].as_u64().unwrap();
        let model = r["model"].as_str().unwrap();
        if r["verdict"] != "ERROR" {
            assert_eq!(model.starts_with("surface-yolo-cls@"), g >= 2, "{r}");
        }
        if g >= 1 {
            assert_eq!(r["ng_threshold"], 0.7, "{r}");
        } else {
            assert_ne!(r["ng_threshold"], 0.7, "{r}");
        }
    }
    // Every part that had to go was thrown out in time, one pulse each at the PLC.
    let rejected: Vec<&Value> = all.iter().filter(|r| r["verdict"] != "OK").collect();
    for r in &rejected {
        assert_eq!(r["reject"]["status"], "fired", "{r}");
        assert_eq!(r["reject"]["deadline_miss"], false, "{r}");
    }
    let pulses = plc.writes().iter().filter(|w| w.area == Area::Coil && w.coil(GATE) == Some(true)).count();
    assert_eq!(pulses, rejected.len(), "one reject pulse per rejected part");
    assert!(!rejected.is_empty() && rejected.len() < all.len(), "both verdicts seen");

    let stats = sub.messages("/stats");
    let last = stats.iter().rev().find(|s| s["final"] == true).expect("final stats");
    assert_eq!(last["config"]["generation"], 3, "{}", last["config"]);
    assert_eq!(last["config"]["applied"], 3);
    assert_eq!(last["config"]["refused"], 2);
    assert_eq!(last["config"]["last"]["result"], "refused");
    assert_eq!(last["tasks"]["inspect"]["telemetry_dropped"], 0);
    assert_eq!(last["tasks"]["inspect"]["camera_reconfigured"], 1, "the camera took its new settings once");
    assert!(last["tasks"]["inspect"]["model"]["name"].as_str().unwrap().contains("yolo-cls"), "{}", last["tasks"]);
}
