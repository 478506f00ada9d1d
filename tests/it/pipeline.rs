//! The real path, end to end: the sample video -> ONNX Runtime on the
//! committed model -> verdicts that match the labels -> reject pulses seen by
//! a Modbus server -> JSON telemetry received by mosquitto_sub from a real
//! mosquitto. The daemon is the real binary, run as a child process.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use linesight::sim::plc::SimPlc;

/// A simulated PLC (tokio-modbus's server on its own runtime), a broker, a
/// subscriber on everything linesight publishes, and a folder for the config.
struct Cell {
    _rt: tokio::runtime::Runtime,
    plc: SimPlc,
    broker: Broker,
    sub: Subscriber,
    dir: tempfile::TempDir,
}

fn cell() -> Cell {
    require_ort();
    // Tests run in parallel: a port released by one test's pick can be taken by
    // another's listener before mosquitto binds it. Set cells up one at a time.
    static SETUP: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = SETUP.lock().unwrap_or_else(|p| p.into_inner());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(SimPlc::start("127.0.0.1:0")).unwrap();
    let broker = Broker::start().unwrap();
    let sub = Subscriber::start(broker.port, "linesight/#");
    Cell { _rt: rt, plc, broker, sub, dir: tempfile::tempdir().unwrap() }
}

#[test]
fn video_to_verdicts_rejects_and_telemetry() {
    let Cell { _rt, plc, broker, sub, dir } = cell();
    let cfg = write_config(dir.path(), &node_yaml(&plc.addr.to_string(), broker.port, "", 10.0));
    let log = dir.path().join("daemon.log");
    let mut child = Command::new(bin())
        .args(["run", "--log-format", "text", "--config"])
        .arg(&cfg)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(90));
    assert!(status.success(), "linesight exited with {status}");
    assert!(sub.wait_for(|t, p| t.ends_with("/availability") && p == "offline", Duration::from_secs(5)));

    let labels = labels();
    let results = sub.messages("/tasks/inspect/result");
    assert_eq!(results.len(), labels.len(), "one result per part");
    let mut ng = 0;
    for r in &results {
        let id = r["part_id"].as_u64().unwrap() as usize;
        let expected = if labels[id - 1] { "NG" } else { "OK" };
        assert_eq!(r["verdict"], expected, "part {id}: {r}");
        assert!(r["scores"].as_object().unwrap().len() >= 2, "scores per class: {r}");
        assert!(r["timings_ms"]["inference"].as_f64().unwrap() > 0.0);
        if expected == "NG" {
            ng += 1;
            assert_eq!(r["reject"]["status"], "fired", "part {id}: {r}");
            // The gate sends its "on" up to 20 ms early (the write's measured lead, see
            // decision::reject), so the ack comes at the due time give or take the link's
            // jitter; a gate that fired on the decision would ack within a few ms.
            assert!(
                r["timings_ms"]["capture_to_reject_ack"].as_f64().unwrap() >= 1180.0,
                "reject waits for the gate: {r}"
            );
        }
    }
    assert!(ng > 0 && ng < labels.len(), "the sample holds good and bad parts");
    assert_eq!(plc.pulses(10), ng, "one reject pulse per NG part");
    assert!(!plc.coil(10), "reject gate left in its safe state");

    let stats = sub.messages("/stats");
    let last = stats.iter().find(|s| s["final"] == true).expect("final stats message");
    let t = &last["tasks"]["inspect"];
    assert_eq!(t["processed"], labels.len());
    assert_eq!(t["ng"], ng);
    assert_eq!(t["error"], 0);
    assert_eq!(t["rejects_fired"], ng);
    assert_eq!(t["provider"], "cpu", "no GPU here: CUDA must be reported and skipped");
    let providers = t["model"]["providers"].as_array().unwrap();
    assert_eq!(providers[0]["name"], "cuda");
    assert_eq!(providers[0]["registered"], false);
    assert!(!providers[0]["error"].as_str().unwrap().is_empty(), "the reason CUDA failed is reported");
    for key in ["inference_ms", "capture_to_decision_ms", "capture_to_reject_ack_ms"] {
        assert!(t[key]["p99"].as_f64().unwrap() >= t[key]["p50"].as_f64().unwrap(), "{key}");
    }
    let avail = sub.raw("/availability");
    // Exactly `online` while running, then `offline` at the end. A spurious
    // `offline` first was the Last Will of a connect cancelled half-way
    // (see telemetry::connection::connect); this keeps it from coming back.
    assert_eq!(avail, ["online", "offline"], "{}", std::fs::read_to_string(&log).unwrap_or_default());
}

#[test]
fn sigterm_finishes_parts_in_flight_and_goes_safe() {
    let Cell { _rt, plc, broker, sub, dir } = cell();
    let cfg = write_config(dir.path(), &node_yaml(&plc.addr.to_string(), broker.port, "loop: true", 10.0));
    // systemd's side of sd_notify: a datagram socket named by NOTIFY_SOCKET.
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let notes = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let notes2 = notes.clone();
    let listener = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while std::time::Instant::now() < deadline {
            if let Ok(n) = sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                let done = text.contains("STOPPING=1");
                notes2.lock().unwrap().push(text);
                if done {
                    break;
                }
            }
        }
    });
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(sub.wait_for(|t, _| t.ends_with("/result"), Duration::from_secs(60)), "no result before SIGTERM");
    std::thread::sleep(Duration::from_millis(1500));
    let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "clean stop exits 0");
    assert!(sub.wait_for(|t, p| t.ends_with("/availability") && p == "offline", Duration::from_secs(5)));
    assert!(!plc.coil(10), "reject gate in its safe state after stop");

    let results = sub.messages("/tasks/inspect/result");
    let stats = sub.messages("/stats");
    let last = stats.iter().find(|s| s["final"] == true).expect("final stats published on stop");
    let t = &last["tasks"]["inspect"];
    // Every part that was captured got its result, including the rejects
    // still travelling to the gate when the signal came (delay 1.2 s).
    assert_eq!(t["processed"].as_u64().unwrap() as usize, results.len());
    let rejecting = results.iter().filter(|r| r["verdict"] != "OK").count();
    assert_eq!(t["rejects_fired"].as_u64().unwrap() as usize, rejecting);
    assert_eq!(plc.pulses(10), rejecting);
    assert_eq!(sub.raw("/availability").last().map(String::as_str), Some("offline"));

    listener.join().unwrap();
    let notes = notes.lock().unwrap().clone();
    let pos = |k: &str| notes.iter().position(|n| n.contains(k));
    let ready = pos("READY=1").expect("READY=1 sent");
    // The model loads before READY, and says so: systemd's status and a longer start timeout
    // (an engine build can take minutes), and the task's retained state on MQTT.
    let warming = pos("STATUS=warming: task inspect").expect("warming status sent");
    let extend = pos("EXTEND_TIMEOUT_USEC=").expect("start timeout extended while warming");
    assert!(warming < ready && extend < ready, "{notes:?}");
    let states: Vec<String> =
        sub.messages("/tasks/inspect/state").iter().map(|s| s["state"].as_str().unwrap().to_string()).collect();
    assert_eq!(states, ["warming", "inspecting"]);
    assert_eq!(sub.messages("/tasks/inspect/state")[1]["provider"], "cpu");
    let watchdog = pos("WATCHDOG=1").expect("WATCHDOG=1 sent while frames are judged");
    let stopping = pos("STOPPING=1").expect("STOPPING=1 sent");
    assert!(ready < watchdog && watchdog < stopping, "{notes:?}");
}

#[test]
fn a_camera_that_cannot_open_is_retried_and_reported() {
    let Cell { _rt, plc, broker, sub, dir } = cell();
    let yaml = node_yaml(&plc.addr.to_string(), broker.port, "", 10.0)
        .replace(
            &format!("source: {{ file: {} }}", repo().join("samples/line.avi").display()),
            "source: { v4l2: { device: /dev/video-missing } }",
        )
        .replace("    fps: 10\n", "");
    let cfg = write_config(dir.path(), &yaml);
    let mut child = Command::new(bin()).args(["run", "--config"]).arg(&cfg).stderr(Stdio::null()).spawn().unwrap();
    let offline = sub
        .wait_for(|t, p| t.ends_with("/stats") && p.contains("\"camera_status\":\"offline\""), Duration::from_secs(30));
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(offline, "stats report the camera offline");
    assert_eq!(status.code(), Some(0), "a missing camera is not fatal; the daemon keeps retrying");
    assert!(!plc.coil(10));
}

#[test]
fn unreachable_plc_is_retried_and_failed_rejects_are_counted() {
    require_ort();
    let broker = Broker::start().unwrap();
    let sub = Subscriber::start(broker.port, "linesight/#");
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on this port.
    let dead = format!("127.0.0.1:{}", linesight::sim::broker::free_port().unwrap());
    let cfg = write_config(dir.path(), &node_yaml(&dead, broker.port, "", 20.0));
    let mut child = Command::new(bin()).args(["run", "--config"]).arg(&cfg).stderr(Stdio::null()).spawn().unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(90));
    // Not fatal while it runs (every part below is inspected); but the stop cannot confirm the
    // safe state of an output on a PLC that never answered, and says so with a failure exit.
    assert_eq!(status.code(), Some(1), "an unreachable PLC at the stop: {status}");
    let results = sub.messages("/tasks/inspect/result");
    assert_eq!(results.len(), labels().len(), "inspection goes on without the PLC");
    let failed: Vec<_> = results.iter().filter(|r| r["reject"]["status"] == "failed").collect();
    assert!(!failed.is_empty());
    assert!(
        failed.iter().all(|r| r["reject"]["error"].as_str().unwrap().contains("plc")),
        "the error names the device"
    );
    let last = sub.messages("/stats").into_iter().find(|s| s["final"] == true).unwrap();
    assert_eq!(last["tasks"]["inspect"]["rejects_failed"].as_u64().unwrap() as usize, failed.len());
    assert_eq!(last["modbus"]["plc"]["connected"], false);
}

#[test]
fn corrupt_model_stops_the_start_with_a_clear_message() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("broken.onnx");
    std::fs::write(&model, b"this is not an ONNX file").unwrap();
    let yaml = node_yaml("127.0.0.1:1", 1883, "", 10.0)
        .replace(&repo().join("models/surface-classifier.onnx").display().to_string(), &model.display().to_string());
    let cfg = write_config(dir.path(), &yaml);
    let out = Command::new(bin()).args(["--log-format", "text", "run", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(linesight::EXIT_MODEL));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.onnx") && err.contains("ONNX Runtime refuses it"), "{err}");
}

/// `models.<m>.sha256` pins the file: another file (or a changed one) is a model error naming
/// the file, the pinned and the actual hash; with the only model refused the start fails with 66.
#[test]
fn a_model_that_is_not_the_pinned_file_stops_the_start() {
    use sha2::Digest;
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let model = repo().join("models/surface-classifier.onnx");
    let actual: String =
        sha2::Sha256::digest(std::fs::read(&model).unwrap()).iter().map(|b| format!("{b:02x}")).collect();
    let pinned = "0123456789abcdef".repeat(4);
    let yaml = node_yaml("127.0.0.1:1", 1883, "", 10.0).replace(
        &format!("    path: {}\n", model.display()),
        &format!("    path: {}\n    sha256: {pinned}\n", model.display()),
    );
    assert!(yaml.contains("sha256"));
    let cfg = write_config(dir.path(), &yaml);
    let out = Command::new(bin()).args(["--log-format", "text", "run", "--config"]).arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(linesight::EXIT_MODEL), "{err}");
    assert!(err.contains("surface-classifier.onnx") && err.contains(&pinned) && err.contains(&actual), "{err}");

    // The right pin loads (hex in either case), whatever the kind (probe included).
    let lib = linesight::inference::runtime::library_path(&Default::default()).unwrap();
    let env = linesight::inference::runtime::environment(&lib).unwrap();
    let mut m = linesight::config::load_str(&yaml, "node.yaml", dir.path()).unwrap().config().models["surface"].clone();
    m.sha256 = Some(actual.to_uppercase());
    assert!(linesight::inference::load_model(env, &m, 1).is_ok());
    m.sha256 = Some(pinned.clone());
    let Err(e) = linesight::inference::load_model(env, &m, 1) else { panic!("a wrong pin loads") };
    assert!(e.to_string().contains(&pinned) && e.to_string().contains(&actual), "{e}");
}

/// One of two models is a corrupt file: its task rejects every part (ERROR,
/// with the reason), the fault is raised, and the other task inspects as usual.
#[test]
fn a_corrupt_model_rejects_its_tasks_parts_while_the_other_task_inspects() {
    let Cell { _rt, plc, broker, sub, dir } = cell();
    let model = dir.path().join("broken.onnx");
    std::fs::write(&model, b"this is not an ONNX file").unwrap();
    let video = repo().join("samples/line.avi").display().to_string();
    let yaml = node_yaml(&plc.addr.to_string(), broker.port, "", 10.0)
        .replace("cameras:\n", &format!("cameras:\n  side:\n    source: {{ file: {video} }}\n    fps: 10\n"))
        .replace("models:\n", &format!("models:\n  broken:\n    path: {}\n", model.display()))
        + "  inspect-side: { camera: side, model: broken }\n";
    let cfg = write_config(dir.path(), &yaml);
    let log = dir.path().join("daemon.log");
    let mut child = run_daemon(&cfg, &log);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let status = wait_exit(&mut child, Duration::from_secs(60));
    assert!(status.success(), "{}", logs());
    assert_eq!(sub.messages("/tasks/inspect/result").len(), 60, "the good task inspected every part");
    assert!(sub.messages("/tasks/inspect/result").iter().any(|r| r["verdict"] == "OK"));
    let broken = sub.messages("/tasks/inspect-side/result");
    assert_eq!(broken.len(), 60, "{}", logs());
    for r in &broken {
        assert_eq!(r["verdict"], "ERROR", "{r}");
        assert!(r["error"].as_str().unwrap().contains("broken.onnx"), "{r}");
    }
    let state = sub.messages("/tasks/inspect-side/state");
    assert_eq!(state.last().unwrap()["state"], "failed", "{state:?}");
    assert!(
        sub.raw("/alarms").iter().any(|a| a.contains("inspect-side") && a.contains("cannot be used")),
        "{:?}",
        sub.raw("/alarms")
    );
}

#[test]
fn a_killed_daemon_is_reported_offline_by_the_broker() {
    let Cell { _rt, plc, broker, sub, dir } = cell();
    let cfg = write_config(dir.path(), &node_yaml(&plc.addr.to_string(), broker.port, "loop: true", 10.0));
    let mut child = Command::new(bin()).args(["run", "--config"]).arg(&cfg).stderr(Stdio::null()).spawn().unwrap();
    assert!(sub.wait_for(|t, p| t.ends_with("/availability") && p == "online", Duration::from_secs(60)));
    assert!(sub.wait_for(|t, _| t.ends_with("/result"), Duration::from_secs(60)));
    child.kill().unwrap(); // SIGKILL: no chance to say goodbye
    child.wait().unwrap();
    assert!(
        sub.wait_for(|t, p| t.ends_with("/availability") && p == "offline", Duration::from_secs(20)),
        "the broker publishes the Last Will"
    );
}
