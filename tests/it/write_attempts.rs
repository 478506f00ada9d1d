//! Reliability test 10 at full count: 10,000 write attempts a network can make, all refused and
//! each logged under `linesight::audit`, none reaching the independent PLC (pymodbus). A burst
//! of JSON commands cycles through a point the config does not declare, a point it does not mark
//! writable, values outside a writable point's `min`/`max`, an output (outputs are never written
//! by command) and a command that does not exist. Most of the flood is dropped unread at the
//! MQTT door (16 incoming messages wait at most; counted, and logged at the flood's start and
//! end, not per message); of the rest, the node's command rate (10 per 10 s) refuses most, and
//! the output checks refuse those admitted. Each answered refusal is one audit line.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::pyplc::{Area, PyPlc};
use crate::common::*;

const BASE: &str = "linesight/test-line/cell-1";
const ATTEMPTS: usize = 10_000;

#[test]
fn ten_thousand_forbidden_writes_are_refused_logged_and_never_reach_the_plc() {
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(PyPlc::tcp(&[1]));
    // The broker must pass the whole burst on: mosquitto drops QoS 1 messages queued for a
    // client beyond `max_queued_messages` (1,000 by default) without telling anyone, and those
    // would never reach linesight to be refused or counted.
    let broker = Broker::start_configured("max_queued_messages 20000").unwrap();
    let sub = Subscriber::start(broker.port, &format!("{BASE}/commands/response"));
    let dir = tempfile::tempdir().unwrap();
    let yaml = node_yaml(&plc.addr().to_string(), broker.port, "loop: true", 10.0).replace(
        "  outputs:\n",
        "  points:\n    temp: { device: plc, area: input-register, address: 30, type: i16, scale: 0.1, poll: 200ms }\n    speed_sp: { device: plc, area: holding-register, address: 40, type: u16, scale: 0.01, poll: 200ms, writable: true, min: 0, max: 1.5 }\n  outputs:\n",
    );
    let cfg = write_config(dir.path(), &yaml);
    let log = dir.path().join("daemon.log");
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut child = run_daemon(&cfg, &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !logs().contains("inspecting") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(logs().contains("inspecting"), "{}", logs());

    let bodies = [
        r#""command":"set-point","point":"valve_9","value":true"#,
        r#""command":"set-point","point":"temp","value":5"#,
        r#""command":"set-point","point":"speed_sp","value":99"#,
        r#""command":"set-point","point":"speed_sp","value":-1"#,
        r#""command":"set-point","point":"reject_gate","value":true"#,
        r#""command":"write-coil","address":10,"value":true"#,
    ];
    let mut pubr = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-t", &format!("{BASE}/commands"), "-q", "1", "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = pubr.stdin.take().unwrap();
        for i in 0..ATTEMPTS {
            writeln!(stdin, r#"{{"id":"w{i}",{}}}"#, bodies[i % bodies.len()]).unwrap();
        }
    }
    assert!(pubr.wait().unwrap().success());
    // Answers come until the commands that got in are all refused; the rest of the flood was
    // dropped unread at the door (bounded), counted, and logged when the flood ends: the next
    // command that gets in ends it.
    let mut last = (0, Instant::now());
    while last.1.elapsed() < Duration::from_secs(3) {
        let n = sub.messages("/commands/response").len();
        if n != last.0 {
            last = (n, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let answers = sub.messages("/commands/response");
    std::thread::sleep(Duration::from_secs(11)); // the flood ends after 10 s without a drop
    let mut after = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-t", &format!("{BASE}/commands"), "-q", "1"])
        .args(["-m", r#"{"id":"after","command":"set-point","point":"valve_9","value":true}"#])
        .spawn()
        .unwrap();
    assert!(after.wait().unwrap().success());
    assert!(
        sub.wait_for(|_, p| p.contains(r#""id":"after""#), Duration::from_secs(30)),
        "the node answers again after the flood"
    );
    let text = logs();
    // The door may catch up between bursts of the publisher: one or more floods, each counted.
    let dropped: usize = text
        .lines()
        .filter(|l| l.contains("incoming flood over"))
        .filter_map(|l| l.split("dropped=").nth(1))
        .filter_map(|v| v.split_whitespace().next())
        .map(|v| v.parse::<usize>().unwrap())
        .sum();
    assert_eq!(answers.len() + dropped, ATTEMPTS, "each attempt answered or dropped unread and counted");
    let refused = answers.iter().filter(|a| a["ok"] == false && a["error"].is_string()).count();
    assert_eq!(refused, answers.len(), "every answered attempt refused");
    let by_rate = answers.iter().filter(|a| a["error"].as_str().unwrap().contains("commands in 10 s")).count();
    assert!(
        by_rate > 0 && by_rate < answers.len(),
        "some refused by the command rate ({by_rate}), the rest by the output checks"
    );
    let flood_lines = text.lines().filter(|l| l.contains("dropped unread")).count();
    assert!(
        flood_lines <= 3,
        // start and end (and once a minute between: the flood is shorter)
        "the flood is logged at its start, once a minute and at its end, not per message:\n{text}"
    );

    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success(), "{}", logs());
    let text = logs();
    let audited = text.lines().filter(|l| l.contains("linesight::audit") && l.contains("command refused")).count();
    assert_eq!(audited, answers.len() + 1, "each refusal logged under linesight::audit");
    // The PLC saw reject pulses and safe-state writes on the gate, and nothing else.
    let writes = plc.writes();
    let stray: Vec<_> = writes.iter().filter(|w| !(w.area == Area::Coil && w.coil(10).is_some())).collect();
    assert!(stray.is_empty(), "writes outside the gate: {stray:?}");
    eprintln!(
        "write attempts: {ATTEMPTS}: {dropped} dropped unread at the door (a flood), {} refused ({by_rate} by the command rate, {} by the output checks), {audited} audit lines, {flood_lines} flood lines, 0 writes at the PLC",
        answers.len(),
        answers.len() - by_rate
    );
}
