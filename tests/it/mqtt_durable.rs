//! Store-and-forward through a broker outage: results go to the disk queue
//! first and reach a subscriber after the broker is back, in order, flagged
//! historical, none lost (at-least-once: duplicates are removed by
//! `msg_id`). The broker is the real mosquitto, stopped and restarted on the
//! same port; the subscriber is mosquitto_sub with a persistent session.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use linesight::sim::plc::SimPlc;

pub(crate) fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// mosquitto_sub with a persistent session (-c with a fixed id): the broker
/// keeps the subscription and queues for it across a restart. Returns the
/// process and the result payloads it prints.
pub(crate) fn persistent_subscriber(port: u16, id: &str) -> (std::process::Child, Arc<Mutex<Vec<serde_json::Value>>>) {
    persistent_subscriber_to(port, id, &["linesight/+/+/tasks/+/result"])
}

/// [`persistent_subscriber`] to these topics.
pub(crate) fn persistent_subscriber_to(
    port: u16,
    id: &str,
    topics: &[&str],
) -> (std::process::Child, Arc<Mutex<Vec<serde_json::Value>>>) {
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-c", "-i", id, "-q", "1"])
        .args(topics.iter().flat_map(|t| ["-t", t]))
        .arg("-v")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let l2 = lines.clone();
    let out = sub.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some((_, p)) = line.split_once(' ') {
                if let Ok(v) = serde_json::from_str(p) {
                    l2.lock().unwrap().push(v);
                }
            }
        }
    });
    (sub, lines)
}

/// The test node with its results going through a disk queue in `queue`, synced per message.
pub(crate) fn queued_node_yaml(plc: &str, port: u16, queue: &std::path::Path) -> String {
    node_yaml(plc, port, "", 10.0).replace(
        "stats_interval: 1s, keep_alive: 5s }",
        &format!("stats_interval: 1s, keep_alive: 2s, queue: {{ dir: {}, fsync_every: 0ms }} }}", queue.display()),
    )
}

#[test]
fn results_survive_a_broker_outage_in_order_and_flagged_historical() {
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(SimPlc::start("127.0.0.1:0")).unwrap();
    let mut broker = Broker::start_persistent().unwrap();
    let dir = tempfile::tempdir().unwrap();

    let (mut sub, lines) = persistent_subscriber(broker.port, "durable-test");

    let queue = dir.path().join("queue");
    let cfg = write_config(dir.path(), &queued_node_yaml(&plc.addr.to_string(), broker.port, &queue));
    let log = dir.path().join("daemon.log");
    let mut child = run_daemon(&cfg, &log);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    // Some results arrive live; then the broker goes away for a while.
    assert!(wait_until(Duration::from_secs(60), || lines.lock().unwrap().len() >= 3), "{}", logs());
    broker.stop();
    assert!(broker.has_saved_state(), "the test broker must keep the subscriber's session across the restart");
    std::thread::sleep(Duration::from_secs(3));
    broker.restart().unwrap();

    let status = wait_exit(&mut child, Duration::from_secs(120));
    assert!(status.success(), "{status}\n{}", logs());
    let n = labels().len();
    let unique = || {
        let mut by_id: BTreeMap<u64, serde_json::Value> = BTreeMap::new();
        for v in lines.lock().unwrap().iter() {
            by_id.entry(v["msg_id"].as_u64().unwrap()).or_insert_with(|| v.clone());
        }
        by_id
    };
    assert!(
        wait_until(Duration::from_secs(30), || unique().len() >= n),
        "{} of {n}: {:?}\n{}",
        unique().len(),
        unique().keys().collect::<Vec<_>>(),
        logs()
    );
    let _ = sub.kill();
    let _ = sub.wait();

    let all = lines.lock().unwrap().clone();
    let by_id = unique();
    assert_eq!(by_id.len(), n, "every result delivered, once after de-duplication");
    // Every part exactly once (results are queued when they are final: an NG
    // part's only after its reject, so not in part order).
    let mut parts: Vec<u64> = by_id.values().map(|v| v["part_id"].as_u64().unwrap()).collect();
    parts.sort_unstable();
    assert_eq!(parts, (1..=n as u64).collect::<Vec<_>>(), "one result per part");
    // In order as received (duplicates aside): ids never go back except for a resend.
    let mut seen = std::collections::BTreeSet::new();
    let mut last = 0;
    for v in &all {
        let id = v["msg_id"].as_u64().unwrap();
        if seen.insert(id) {
            assert!(id > last, "first copies arrive in order: {id} after {last}");
            last = id;
        }
    }
    let historical = by_id.values().filter(|v| v["historical"] == true).count();
    assert!(historical > 0, "messages stored during the outage are flagged historical");
    assert!(by_id.values().next().unwrap().get("historical").is_none(), "the first results went out live");
    assert!(logs().contains("MQTT queue opened"), "{}", logs());
}

#[test]
fn results_queued_when_the_daemon_is_killed_during_an_outage_are_sent_after_restart() {
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(SimPlc::start("127.0.0.1:0")).unwrap();
    let mut broker = Broker::start_persistent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut sub, lines) = persistent_subscriber(broker.port, "crash-test");
    let queue = dir.path().join("queue");
    let cfg = write_config(dir.path(), &queued_node_yaml(&plc.addr.to_string(), broker.port, &queue));
    let log = dir.path().join("daemon.log");
    let start = || {
        KillOnDrop(
            Command::new(bin())
                .args(["run", "--log-format", "text", "--config"])
                .arg(&cfg)
                .stderr(std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap())
                .spawn()
                .unwrap(),
        )
    };
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    let mut first = start();
    assert!(wait_until(Duration::from_secs(60), || lines.lock().unwrap().len() >= 3), "{}", logs());
    broker.stop();
    // Results pile up on disk while the broker is away; then the daemon dies without warning.
    std::thread::sleep(Duration::from_secs(2));
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let before: Vec<u64> = lines.lock().unwrap().iter().map(|v| v["msg_id"].as_u64().unwrap()).collect();
    broker.restart().unwrap();

    // The next start sends the queue first, then inspects the video again (60 new results).
    let mut second = start();
    assert!(wait_exit(&mut second, Duration::from_secs(120)).success(), "{}", logs());
    let n = labels().len();
    let ids = || {
        let mut ids: Vec<u64> = lines.lock().unwrap().iter().map(|v| v["msg_id"].as_u64().unwrap()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    assert!(wait_until(Duration::from_secs(30), || ids().len() > n + before.len()), "{:?}\n{}", ids(), logs());
    let _ = sub.kill();
    let _ = sub.wait();
    let ids = ids();
    // The first run's ids are one unbroken run from 1: nothing it stored was lost.
    let first_run: Vec<u64> = ids.iter().copied().take_while(|id| *id < ids[ids.len() - n]).collect();
    assert_eq!(first_run, (1..=first_run.len() as u64).collect::<Vec<_>>(), "no gap in what the killed daemon stored");
    assert!(first_run.len() > before.len(), "results stored during the outage were delivered after the restart");
    let all = lines.lock().unwrap().clone();
    for v in all.iter().filter(|v| {
        let id = v["msg_id"].as_u64().unwrap();
        first_run.contains(&id) && !before.contains(&id)
    }) {
        assert_eq!(v["historical"], true, "{v}");
    }
    assert_eq!(ids.len() - first_run.len(), n, "the second run's results, all of them");
}

/// The reliability note's outage test at full length: the broker stopped for
/// 60 s while 50 results/s are produced. Not in the default suite (it takes
/// two minutes): `cargo test --test mqtt_durable -- --ignored` (through
/// scripts/env.sh); `LINESIGHT_OUTAGE_S` shortens or lengthens the outage.
#[test]
#[ignore = "a 60 s broker outage at 50 msg/s; run with --ignored"]
fn a_long_outage_at_50_messages_per_second_loses_nothing() {
    require_ort();
    let outage: u64 = std::env::var("LINESIGHT_OUTAGE_S").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(SimPlc::start("127.0.0.1:0")).unwrap();
    let mut broker = Broker::start_persistent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Alarms too: they go through the same queue and take numbers from the same sequence (a
    // camera-stall alarm is raised at the stop), so without them a gap in `msg_id` is no loss.
    let (mut sub, lines) = persistent_subscriber_to(
        broker.port,
        "long-outage-test",
        &["linesight/+/+/tasks/+/result", "linesight/+/+/alarms"],
    );
    let queue = dir.path().join("queue");
    let yaml = queued_node_yaml(&plc.addr.to_string(), broker.port, &queue)
        .replace("fps: 10", "fps: 50\n    loop: true")
        .replace("min_part_interval: 100ms", "min_part_interval: 20ms")
        .replace("pulse: 30ms", "pulse: 10ms");
    let cfg = write_config(dir.path(), &yaml);
    let log = dir.path().join("daemon.log");
    let mut child = run_daemon(&cfg, &log);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(wait_until(Duration::from_secs(60), || lines.lock().unwrap().len() >= 50), "{}", logs());
    broker.stop();
    let stopped = Instant::now();
    std::thread::sleep(Duration::from_secs(outage));
    broker.restart().unwrap();
    let back = Instant::now();
    // Live data resumes: a result that is not historical arrives after the restart.
    let mark = lines.lock().unwrap().len();
    assert!(
        wait_until(Duration::from_secs(60), || lines.lock().unwrap()[mark..]
            .iter()
            .any(|v| v.get("part_id").is_some() && v.get("historical").is_none())),
        "live results did not resume\n{}",
        logs()
    );
    eprintln!("live data resumed {:?} after the broker came back", back.elapsed());
    std::thread::sleep(Duration::from_secs(5));
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success(), "{}", logs());
    std::thread::sleep(Duration::from_secs(3));
    let _ = sub.kill();
    let _ = sub.wait();

    let all = lines.lock().unwrap().clone();
    let mut first: BTreeMap<u64, serde_json::Value> = BTreeMap::new();
    let mut last = 0;
    for v in &all {
        let id = v["msg_id"].as_u64().unwrap();
        if let std::collections::btree_map::Entry::Vacant(e) = first.entry(id) {
            assert!(id > last, "first copies arrive in order: {id} after {last}");
            last = id;
            e.insert(v.clone());
        }
    }
    let (lo, hi) = (*first.keys().next().unwrap(), last);
    let missing: Vec<u64> = (lo..=hi).filter(|id| !first.contains_key(id)).collect();
    assert!(missing.is_empty(), "{} messages lost: {:?}", missing.len(), &missing[..missing.len().min(20)]);
    let historical = first.values().filter(|v| v["historical"] == true).count();
    let during = (outage as f64 * 40.0) as usize;
    assert!(
        historical >= during,
        "{historical} historical messages; at 50/s a {outage} s outage makes about {}",
        outage * 50
    );
    eprintln!(
        "{} messages, {} duplicates removed, {historical} historical, outage {:?}",
        first.len(),
        all.len() - first.len(),
        back - stopped
    );
}
