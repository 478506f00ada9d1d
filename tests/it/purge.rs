//! Nothing judged may pass after a crash: the daemon is SIGKILLed while it inspects (NG parts on
//! their way to the gate), and started again. The independent PLC (pymodbus) sees the gate held
//! on, continuously, for one travel time (the gate's delay plus its pulse) from the restart,
//! longer than any reject pulse; the stats count one purge. After a stop in order, a restart
//! holds nothing. Before, a restart after a kill started with the gate off and the parts judged
//! by the killed process went by.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::pyplc::{monotonic_ns_now, Area, PyPlc};
use crate::common::*;

const GATE: u16 = 10;

/// The gate's on-periods the PLC saw after `from_ns`: (on, off) in CLOCK_MONOTONIC ns.
fn on_periods(plc: &PyPlc, from_ns: u64) -> Vec<(u64, u64)> {
    let mut periods = Vec::new();
    let mut on_since = None;
    for w in plc.writes().iter().filter(|w| w.area == Area::Coil && w.t_ns >= from_ns) {
        match (w.coil(GATE), on_since) {
            (Some(true), None) => on_since = Some(w.t_ns),
            (Some(false), Some(t)) => {
                periods.push((t, w.t_ns));
                on_since = None;
            }
            _ => {}
        }
    }
    periods
}

fn longest_ms(periods: &[(u64, u64)]) -> f64 {
    periods.iter().map(|(a, b)| (b - a) as f64 / 1e6).fold(0.0, f64::max)
}

fn started(sub: &Subscriber, before: usize, log: &std::path::Path) {
    let until = Instant::now() + Duration::from_secs(60);
    while sub.messages("/tasks/inspect/result").len() <= before && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        sub.messages("/tasks/inspect/result").len() > before,
        "no result: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[test]
fn a_restart_after_a_kill_holds_the_gate_for_one_travel_time() {
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(PyPlc::tcp(&[1]));
    let broker = Broker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sub = Subscriber::start(broker.port, "linesight/test-line/cell-1/#");
    // Gate 1200 ms downstream, 30 ms pulses: a purge is 1230 ms of "on".
    let cfg = write_config(dir.path(), &node_yaml(&plc.addr().to_string(), broker.port, "loop: true", 10.0));
    let log = dir.path().join("daemon.log");

    // 1. Inspecting, NG parts in flight; then SIGKILL.
    let child = run_daemon(&cfg, &log);
    started(&sub, 0, &log);
    std::thread::sleep(Duration::from_secs(3));
    assert!(Command::new("kill").args(["-KILL", &child.id().to_string()]).status().unwrap().success());
    drop(child);
    let normal = longest_ms(&on_periods(&plc, 0));
    assert!(normal > 0.0 && normal < 300.0, "reject pulses before the kill: longest {normal} ms");

    // 2. Restart: the gate is held on for one travel time from the moment the cameras run.
    let restart_ns = monotonic_ns_now();
    let before = sub.messages("/tasks/inspect/result").len();
    let mut child = run_daemon(&cfg, &log);
    started(&sub, before, &log);
    std::thread::sleep(Duration::from_secs(3));
    let held = longest_ms(&on_periods(&plc, restart_ns));
    assert!(
        held >= 1200.0,
        "after a kill the gate must be held on for one travel time: longest on-period {held} ms\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(std::fs::read_to_string(&log).unwrap().contains("the last run did not stop in order"));

    // 3. A stop in order, and a restart: no purge.
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    let stats = sub.messages("/stats");
    let last = stats.iter().rev().find(|s| s["final"] == true).expect("final stats");
    assert_eq!(last["tasks"]["inspect"]["purges"], 1, "the purge is counted and published");
    let clean_ns = monotonic_ns_now();
    let before = sub.messages("/tasks/inspect/result").len();
    let mut child = run_daemon(&cfg, &log);
    started(&sub, before, &log);
    std::thread::sleep(Duration::from_secs(3));
    let after_clean = longest_ms(&on_periods(&plc, clean_ns));
    assert!(after_clean < 300.0, "no purge after a clean stop: longest on-period {after_clean} ms");
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
}
