//! Every signal a plant may send, to the real daemon while it inspects: SIGHUP checks the config
//! (a valid file: reported; an invalid one: refused with its problems, the running config stays),
//! SIGUSR1 logs a status line, SIGUSR2 is ignored, and the node keeps inspecting through all of
//! them; SIGQUIT stops it in order, outputs to their safe state. Before, SIGHUP killed the daemon
//! without the safe state (and systemd does not restart a process that ended on SIGHUP).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use linesight::sim::plc::SimPlc;

fn kill(pid: u32, sig: &str) {
    assert!(Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status().unwrap().success());
}

fn wait_log(log: &std::path::Path, what: &str, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if std::fs::read_to_string(log).unwrap_or_default().contains(what) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn signals_never_kill_the_node_silently() {
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(SimPlc::start("127.0.0.1:0")).unwrap();
    let broker = Broker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sub = Subscriber::start(broker.port, "linesight/test-line/cell-1/tasks/+/result");
    let yaml = node_yaml(&plc.addr.to_string(), broker.port, "loop: true", 10.0);
    let cfg = write_config(dir.path(), &yaml);
    let log = dir.path().join("daemon.log");
    let mut child = run_daemon(&cfg, &log);
    let pid = child.id();
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let results = || sub.messages("/result").len();
    assert!(sub.wait_for(|t, _| t.ends_with("/result"), Duration::from_secs(60)), "no result: {}", logs());

    kill(pid, "HUP");
    assert!(wait_log(&log, "config reload: valid and unchanged", Duration::from_secs(10)), "{}", logs());
    std::fs::write(&cfg, yaml.replace("node:", "nodes:")).unwrap();
    kill(pid, "HUP");
    assert!(wait_log(&log, "config reload refused", Duration::from_secs(10)), "{}", logs());
    assert!(logs().contains("node.yaml:2:1: unknown section `nodes`"), "problems named with their place: {}", logs());
    kill(pid, "USR1");
    assert!(wait_log(&log, "SIGUSR1: status", Duration::from_secs(10)), "{}", logs());
    kill(pid, "USR2");
    assert!(wait_log(&log, "SIGUSR2 received: ignored", Duration::from_secs(10)), "{}", logs());

    // Still alive and inspecting after all of them.
    let before = results();
    let until = Instant::now() + Duration::from_secs(20);
    while results() < before + 5 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(results() >= before + 5, "inspection stopped after the signals: {}", logs());
    assert!(child.try_wait().unwrap().is_none(), "the daemon died: {}", logs());

    kill(pid, "QUIT");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let text = logs();
    assert!(status.success(), "SIGQUIT is a clean stop: {status:?}\n{text}");
    assert!(text.contains("SIGQUIT received: stopping"), "{text}");
    assert!(text.contains("all outputs in their safe state"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

/// A stop that cannot confirm the safe state says so: the PLC is gone when SIGTERM comes, every
/// safe-state write is retried until the stop's deadline, the journal names the output, and the
/// exit status is a failure (systemd restarts the service, whose start drives the outputs safe
/// again). Before, the daemon said "stopped cleanly" and exited 0. The whole stop stays inside
/// the daemon's 22 s stop deadline (the unit's `TimeoutStopSec=35s`).
#[test]
fn a_stop_that_cannot_confirm_the_safe_state_fails() {
    require_ort();
    let plc_rt = tokio::runtime::Runtime::new().unwrap();
    let plc = plc_rt.block_on(SimPlc::start("127.0.0.1:0")).unwrap();
    let broker = Broker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sub = Subscriber::start(broker.port, "linesight/test-line/cell-1/tasks/+/result");
    let cfg = write_config(dir.path(), &node_yaml(&plc.addr.to_string(), broker.port, "loop: true", 10.0));
    let log = dir.path().join("daemon.log");
    let mut child = run_daemon(&cfg, &log);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(sub.wait_for(|t, _| t.ends_with("/result"), Duration::from_secs(60)), "no result: {}", logs());
    drop(plc_rt); // the PLC and its connections are gone
    let t0 = Instant::now();
    kill(child.id(), "TERM");
    let status = wait_exit(&mut child, Duration::from_secs(40));
    let took = t0.elapsed();
    let text = logs();
    assert!(!status.success(), "unconfirmed safe state must not exit 0:\n{text}");
    assert!(text.contains("output=reject_gate") && text.contains("NOT confirmed in its safe state"), "{text}");
    assert!(took < Duration::from_secs(25), "the stop took {took:?}, past its 22 s deadline");
    assert!(!text.contains("panicked"), "{text}");
}
