//! Industrial I/O against a PLC nobody here wrote: pymodbus
//! (tests/plc/pymodbus_plc.py) plays the PLC, the test drives its inputs
//! (photo-eye, encoder, line running, a sensor) and reads what linesight
//! wrote, with the PLC's own timestamps. linesight is the real daemon,
//! telemetry goes through a real mosquitto, commands come from mosquitto_pub.
//!
//! Positions, counts and order are asserted, never durations.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::pyplc::{PlcWrite, PtyPair, PyPlc};
use crate::common::*;
use serde_json::Value;

const DISTANCE: u32 = 5000;

/// A folder with only the defective stills: every part this camera sees is NG.
fn ng_stills(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("ng-stills");
    std::fs::create_dir_all(&out).unwrap();
    for e in std::fs::read_dir(repo().join("samples/parts")).unwrap() {
        let p = e.unwrap().path();
        if !p.file_name().unwrap().to_string_lossy().contains("good") {
            std::fs::copy(&p, out.join(p.file_name().unwrap())).unwrap();
        }
    }
    out
}

fn config(device: &str, port: u16, stills: &Path, gate_at: &str) -> String {
    format!(
        r#"
node: {{ group_id: test-line, node_id: cell-io }}
mqtt: {{ host: 127.0.0.1, port: {port}, stats_interval: 1s, keep_alive: 5s }}
modbus:
  devices:
    plc: {{ {device}, timeout: 300ms }}
  points:
    running: {{ device: plc, area: discrete-input, address: 0, poll: 5ms }}
    eye: {{ device: plc, area: discrete-input, address: 1, poll: 2ms }}
    encoder: {{ device: plc, area: input-register, address: 20, type: u32, order: CDAB, poll: 2ms }}
    temp: {{ device: plc, area: input-register, address: 30, type: i16, scale: 0.1, unit: "°C", poll: 50ms, deadband: 0.5 }}
    speed_sp: {{ device: plc, area: holding-register, address: 40, type: u16, scale: 0.01, poll: 100ms, writable: true, min: 0, max: 1.5 }}
  outputs:
    reject_gate: {{ device: plc, area: coil, address: 10, safe_state: off }}
    lamp_green: {{ device: plc, area: coil, address: 11, safe_state: off }}
    lamp_red: {{ device: plc, area: coil, address: 12, safe_state: on }}
  heartbeat: {{ device: plc, address: 100, period: 100ms }}
  result_blocks:
    cell: {{ device: plc, address: 200, ack_poll: 10ms, buffer: 16 }}
line: {{ running: running, encoder: encoder }}
stack_light: {{ running: lamp_green, fault: lamp_red }}
cameras:
  top: {{ source: {{ directory: {stills} }}, mode: triggered, fps: 25, loop: true, queue: 4 }}
models:
  surface: {{ path: {model}, providers: [ {{ cpu: {{ threads: 1 }} }} ] }}
tasks:
  inspect:
    camera: top
    model: surface
    trigger: {{ point: eye }}
    inference_timeout: 3s
    reject: {{ output: reject_gate, {gate_at}, pulse: 30ms }}
    handshake: cell
runtime: {{ state_dir: "{state}" }}
"#,
        stills = stills.display(),
        state = stills.parent().unwrap().join("state").display(),
        model = repo().join("models/surface-classifier.onnx").display(),
    )
}

fn start_daemon(cfg: &Path, log: &Path) -> KillOnDrop {
    KillOnDrop(
        Command::new(bin())
            .args(["run", "--log-format", "text", "--config"])
            .arg(cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

fn sigterm(child: &Child) {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
}

/// Wait until `n` messages on topics ending in `suffix` arrived.
async fn wait_count(sub: &Subscriber, suffix: &str, n: usize, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if sub.messages(suffix).len() >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Wait on the subscriber without blocking the runtime.
async fn wait_msg(sub: &Subscriber, f: impl Fn(&str, &str) -> bool, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if sub.lines.lock().unwrap().iter().any(|(t, p)| f(t, p)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The encoder as the PLC holds it: u32, low word first (CDAB).
async fn set_encoder(plc: &PyPlc, v: u32) {
    plc.set_ir(20, &[v as u16, (v >> 16) as u16]).await;
}

/// Be the PLC's program: take each result from the block and acknowledge it.
async fn take_results(plc: &PyPlc, n: usize) -> Vec<(u32, u16, u32)> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got.len() < n && tokio::time::Instant::now() < deadline {
        let b = plc.get_hr(200, 8).await;
        if b[0] == 1 {
            let part = (u32::from(b[2]) << 16) | u32::from(b[3]);
            let counter = (u32::from(b[4]) << 16) | u32::from(b[5]);
            assert_eq!(b[6], 0, "no overrun: results were acknowledged: {b:?}");
            got.push((part, b[1], counter));
            plc.set_hr(200, &[0]).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    got
}

fn gate_on(w: &PlcWrite) -> bool {
    w.coil(10) == Some(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggered_parts_are_rejected_at_the_encoder_distance_with_handshake_heartbeat_and_commands() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let plc = PyPlc::tcp(&[1]).await;
    plc.set_di(0, &[true]).await; // line running
    set_encoder(&plc, 100_000).await;
    plc.set_ir(30, &[215]).await; // 21.5 °C
    let broker = Broker::start().unwrap();
    let sub = Subscriber::start(broker.port, "linesight/#");
    let device = format!("tcp: \"{}\"", plc.addr());
    let cfg = write_config(
        dir.path(),
        &config(&device, broker.port, &ng_stills(dir.path()), &format!("distance: {DISTANCE}")),
    );
    // A command left retained on the broker: delivered when linesight subscribes, and never executed.
    let retained = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-t", "linesight/test-line/cell-io/commands"])
        .args(["-q", "1", "-r", "-m", r#"{"id":"c4","command":"set-point","point":"speed_sp","value":2}"#])
        .status()
        .unwrap();
    assert!(retained.success());
    let log = dir.path().join("daemon.log");
    let mut child = start_daemon(&cfg, &log);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    // Alive: the heartbeat counts up, the running lamp comes on, the result block is cleared.
    let first = plc.wait_for_write(|w| w.hr(100).is_some(), Duration::from_secs(60)).await.expect("heartbeat");
    let later = plc
        .wait_for_write(|w| w.hr(100).is_some_and(|v| v >= first.hr(100).unwrap() + 2), Duration::from_secs(10))
        .await
        .expect("heartbeat keeps counting");
    assert!(later.t_ns > first.t_ns);
    assert!(plc.wait_for_write(|w| w.coil(11) == Some(true), Duration::from_secs(10)).await.is_some(), "{}", logs());
    assert!(wait_msg(&sub, |t, p| t.ends_with("/points/temp") && p.contains("21.5"), Duration::from_secs(10)).await);
    let temp = sub.messages("/points/temp").pop().unwrap();
    assert_eq!((temp["unit"].as_str(), temp["quality"].as_str()), (Some("°C"), Some("good")));

    // Six parts pass the photo-eye while the line creeps 300 counts between them.
    let mut at_trigger = Vec::new();
    for k in 0..6u32 {
        let pos = 100_000 + 300 * k;
        set_encoder(&plc, pos).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        plc.set_di(1, &[true]).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
        plc.set_di(1, &[false]).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
        at_trigger.push(pos);
    }
    // The PLC reads each verdict from the result block, in order.
    let results = take_results(&plc, 6).await;
    assert_eq!(results, (1..=6).map(|i| (i, 2, i)).collect::<Vec<_>>(), "parts 1..6, NG, counter 1..6\n{}", logs());
    // No part has reached the gate yet: the line has not moved far enough.
    plc.sync().await;
    assert!(!plc.writes().iter().any(gate_on), "nothing fires before the parts reach the gate");

    // The line moves on: 100 counts at a time up to past the last part's gate position.
    let mut moves = Vec::new();
    let end = at_trigger[5] + DISTANCE + 500;
    let mut pos = at_trigger[5];
    while pos < end {
        pos += 100;
        set_encoder(&plc, pos).await;
        moves.push((plc.now_ns().await, pos));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(wait_count(&sub, "/tasks/inspect/result", 6, Duration::from_secs(20)).await, "{}", logs());
    plc.sync().await;
    let ons: Vec<PlcWrite> = plc.writes().into_iter().filter(gate_on).collect();
    assert_eq!(ons.len(), 6, "one reject per NG part\n{}", logs());
    for (k, on) in ons.iter().enumerate() {
        let target = at_trigger[k] + DISTANCE;
        // The encoder value the PLC held when the "on" write arrived.
        let held = moves.iter().take_while(|(t, _)| *t <= on.t_ns).last().map(|m| m.1).unwrap_or(at_trigger[5]);
        assert!(
            held + 300 >= target && held <= target + 1000,
            "part {}: gate fired at encoder {held}, due at {target}\n{}",
            k + 1,
            logs()
        );
    }
    for r in sub.messages("/tasks/inspect/result") {
        assert_eq!(r["verdict"], "NG", "{r}");
        assert_eq!(r["reject"]["status"], "fired", "{r}");
        assert_eq!(r["reject"]["deadline_miss"], false, "{r}");
    }

    // Commands: a writable point is set; anything else is refused with a reason; retained ones are ignored.
    let topic = "linesight/test-line/cell-io/commands";
    let publish = |payload: &str| {
        let mut c = Command::new("mosquitto_pub");
        c.args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-t", topic, "-q", "1", "-m", payload]);
        assert!(c.status().unwrap().success());
    };
    publish(r#"{"id":"c1","command":"set-point","point":"speed_sp","value":1.25}"#);
    publish(r#"{"id":"c2","command":"set-point","point":"temp","value":3}"#);
    publish(r#"{"id":"c3","command":"set-output","output":"reject_gate","value":true}"#);
    publish("not json");
    // Outside the point's engineering limits (min 0, max 1.5): refused before anything is sent.
    publish(r#"{"id":"c5","command":"set-point","point":"speed_sp","value":9}"#);
    publish(r#"{"id":"c6","command":"set-point","point":"speed_sp","value":-0.5}"#);
    let responses =
        |id: &str| sub.messages("/commands/response").into_iter().filter(|r| r["id"] == id).collect::<Vec<Value>>();
    assert!(
        wait_msg(&sub, |t, p| t.ends_with("/commands/response") && p.contains("c3"), Duration::from_secs(10)).await
    );
    assert_eq!(responses("c1")[0]["ok"], true, "{:?}", responses("c1"));
    assert!(responses("c2")[0]["error"].as_str().unwrap().contains("not writable"));
    assert!(responses("c3")[0]["error"].as_str().unwrap().contains("unknown command"));
    assert!(
        wait_msg(&sub, |t, p| t.ends_with("/commands/response") && p.contains("not JSON"), Duration::from_secs(5))
            .await
    );
    assert!(
        wait_msg(&sub, |t, p| t.ends_with("/commands/response") && p.contains("c6"), Duration::from_secs(10)).await
    );
    assert_eq!(
        responses("c5")[0]["error"],
        "set-point refused: 9 is outside the limits of point `speed_sp`, 0 to 1.5 (`modbus.points.speed_sp.min` and \
         `max`); nothing was written; to write it, change the limits in the config"
    );
    assert!(responses("c6")[0]["error"].as_str().unwrap().contains("-0.5 is outside the limits of point `speed_sp`"));
    assert_eq!(plc.get_hr(40, 1).await, vec![125], "1.25 m/s at scale 0.01");
    plc.sync().await;
    assert!(responses("c4").is_empty(), "a retained command is never executed");
    assert!(logs().contains("retained command ignored"), "{}", logs());
    assert!(!plc.writes().iter().any(|w| w.hr(30).is_some() || w.hr(40) == Some(200)));
    // The PLC saw exactly one write of the set-point register: c1's. The refused values never reached it.
    let sp_writes: Vec<u16> = plc.writes().iter().filter_map(|w| w.hr(40)).collect();
    assert_eq!(sp_writes, vec![125], "only the accepted value was written: {sp_writes:?}");
    assert_eq!(plc.writes().iter().filter(|w| gate_on(w)).count(), 6, "no command can fire the gate");

    // Stop: heartbeat stops, every output to its safe state.
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", logs());
    assert!(!logs().contains("still in flight"), "every part finished before the stop\n{}", logs());
    plc.sync().await;
    assert_eq!(plc.get_coils(10, 3).await, vec![false, false, true], "gate off, green off, red on");
    let beats_after_stop = {
        let n = plc.writes().iter().filter(|w| w.hr(100).is_some()).count();
        tokio::time::sleep(Duration::from_millis(400)).await;
        plc.writes().iter().filter(|w| w.hr(100).is_some()).count() - n
    };
    assert_eq!(beats_after_stop, 0, "the heartbeat stops with linesight");
    let stats = sub.messages("/stats");
    let last = stats.iter().rev().find(|s| s["final"] == true).expect("final stats");
    assert_eq!(last["tasks"]["inspect"]["triggers"], 6);
    assert_eq!(last["tasks"]["inspect"]["deadline_misses"], 0);
    assert_eq!(last["tasks"]["inspect"]["handshake"]["acknowledged"], 6);
    assert_eq!(last["modbus"]["plc"]["state"], "connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_or_stalled_plc_shows_in_telemetry_and_linesight_recovers() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let plc = PyPlc::tcp(&[1]).await;
    plc.set_ir(30, &[215]).await;
    let broker = Broker::start().unwrap();
    let sub = Subscriber::start(broker.port, "linesight/#");
    let device = format!("tcp: \"{}\"", plc.addr());
    let cfg = write_config(
        dir.path(),
        &config(&device, broker.port, &ng_stills(dir.path()), &format!("distance: {DISTANCE}")),
    );
    let log = dir.path().join("daemon.log");
    let mut child = start_daemon(&cfg, &log);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_msg(&sub, |t, p| t.ends_with("/points/temp") && p.contains("\"good\""), Duration::from_secs(60)).await
    );

    // The PLC refuses reads of the temperature register: the point goes bad, the device says "refusing".
    plc.exception(4, 30, 2).await;
    assert!(
        wait_msg(&sub, |t, p| t.ends_with("/points/temp") && p.contains("\"bad\""), Duration::from_secs(10)).await,
        "{}",
        logs()
    );
    assert!(wait_msg(&sub, |t, p| t.ends_with("/stats") && p.contains("\"refusing\""), Duration::from_secs(10)).await);
    plc.clear_exceptions().await;
    assert!(
        wait_msg(&sub, |t, p| t.ends_with("/points/temp") && p.contains("\"good\""), Duration::from_secs(10)).await
    );

    // The PLC stops answering: a fault (alarm and lamp), then recovery.
    sub.lines.lock().unwrap().clear();
    plc.stall(Duration::from_secs(2)).await;
    assert!(
        wait_msg(&sub, |t, p| t.ends_with("/alarms") && p.contains("unreachable"), Duration::from_secs(10)).await,
        "{}",
        logs()
    );
    assert!(
        wait_msg(&sub, |t, p| t.ends_with("/alarms") && p.contains("\"active\":false"), Duration::from_secs(20)).await,
        "{}",
        logs()
    );
    assert!(wait_msg(&sub, |t, p| t.ends_with("/stats") && p.contains("\"connected\""), Duration::from_secs(10)).await);
    assert!(child.try_wait().unwrap().is_none(), "linesight survives a refusing and a stalled PLC");
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_over_a_serial_pair_reads_points_beats_and_sets_a_writable_point() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let pty = PtyPair::new();
    let plc = PyPlc::rtu(&pty.b, 19200, &[1]).await;
    plc.set_ir(30, &[-42i16 as u16]).await; // -4.2 °C
    let broker = Broker::start().unwrap();
    let sub = Subscriber::start(broker.port, "linesight/#");
    let device = format!("rtu: {{ port: {}, baud: 19200, parity: none }}", pty.a.display());
    let cfg = write_config(
        dir.path(),
        &config(&device, broker.port, &ng_stills(dir.path()), &format!("distance: {DISTANCE}")),
    );
    let log = dir.path().join("daemon.log");
    let mut child = start_daemon(&cfg, &log);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    assert!(
        wait_msg(&sub, |t, p| t.ends_with("/points/temp") && p.contains("-4.2"), Duration::from_secs(60)).await,
        "{}",
        logs()
    );
    let first = plc.wait_for_write(|w| w.hr(100).is_some(), Duration::from_secs(10)).await.expect("heartbeat over RTU");
    plc.wait_for_write(|w| w.hr(100).is_some_and(|v| v > first.hr(100).unwrap()), Duration::from_secs(10))
        .await
        .expect("heartbeat keeps counting over RTU");
    let publish = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-t", "linesight/test-line/cell-io/commands"])
        .args(["-q", "1", "-m", r#"{"id":7,"command":"set-point","point":"speed_sp","value":0.5}"#])
        .status()
        .unwrap();
    assert!(publish.success());
    assert!(
        wait_msg(&sub, |t, p| t.ends_with("/commands/response") && p.contains("\"ok\":true"), Duration::from_secs(10))
            .await
    );
    assert_eq!(plc.get_hr(40, 1).await, vec![50]);
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success(), "{}", logs());
    assert_eq!(plc.get_coils(10, 3).await, vec![false, false, true], "safe state over RTU");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_scheduled_reject_freezes_while_the_line_stands() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let plc = PyPlc::tcp(&[1]).await;
    plc.set_di(0, &[true]).await; // line running
    let broker = Broker::start().unwrap();
    let sub = Subscriber::start(broker.port, "linesight/#");
    let device = format!("tcp: \"{}\"", plc.addr());
    let cfg = write_config(dir.path(), &config(&device, broker.port, &ng_stills(dir.path()), "delay: 3s"));
    let log = dir.path().join("daemon.log");
    let mut child = start_daemon(&cfg, &log);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(plc.wait_for_write(|w| w.coil(11) == Some(true), Duration::from_secs(60)).await.is_some(), "{}", logs());

    // A part passes the eye, then the line stops before it can reach the gate.
    plc.set_di(1, &[true]).await;
    tokio::time::sleep(Duration::from_millis(40)).await;
    plc.set_di(1, &[false]).await;
    plc.set_di(0, &[false]).await;
    assert_eq!(take_results(&plc, 1).await, vec![(1, 2, 1)], "judged NG\n{}", logs());
    // Longer than the whole delay: the part stands still, so the gate must not fire.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    plc.sync().await;
    assert!(!plc.writes().iter().any(gate_on), "no reject while the line stands\n{}", logs());
    plc.set_di(0, &[true]).await;
    assert!(
        plc.wait_for_write(gate_on, Duration::from_secs(10)).await.is_some(),
        "fires once the line runs\n{}",
        logs()
    );
    assert!(wait_count(&sub, "/tasks/inspect/result", 1, Duration::from_secs(10)).await);
    assert_eq!(sub.messages("/tasks/inspect/result")[0]["reject"]["status"], "fired");
    assert!(logs().contains("line stopped"), "{}", logs());
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
}
