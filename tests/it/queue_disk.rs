//! The disk queue on a disk that fails, with the real daemon, a real broker and real file
//! systems: a small tmpfs that fills up, and one remounted read-only. Inspection must go on,
//! results must keep reaching the broker (live, without the queue), every message the queue
//! did not keep must be counted, an alarm must say why, and the queue must be used again when
//! the disk is back.
//!
//! The mounts need root (CI runs as root). A mount that fails fails the test, loudly: a test
//! that skips itself would pass on a machine where nothing was tested.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;
use linesight::sim::plc::SimPlc;

/// A tmpfs of `size` mounted on a folder of its own; unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(path)
            .output()
            .expect("mount(8) must be installed");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs on {} ({}): these tests need root (CI runs as root); {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { path: path.to_path_buf() }
    }

    fn remount(&self, how: &str) {
        let out = Command::new("mount").args(["-o", &format!("remount,{how}")]).arg(&self.path).output().unwrap();
        assert!(
            out.status.success(),
            "remount,{how} {}: {}",
            self.path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a daemon still holding a file there must not leave the mount behind.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the file system that holds `dir` with `dir/filler`, to the last byte it takes.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    for chunk in [64 << 10, 4 << 10, 512, 1] {
        let buf = vec![0xA5u8; chunk];
        while f.write_all(&buf).is_ok() {}
    }
    let _ = f.sync_all();
    path
}

/// The test node (a looping video, so parts keep coming) with its JSON results through a disk
/// queue in `queue`, synced per message.
fn yaml(plc: &str, port: u16, queue: &Path) -> String {
    node_yaml(plc, port, "loop: true", 10.0).replace(
        "stats_interval: 1s, keep_alive: 5s }",
        &format!(
            "stats_interval: 1s, keep_alive: 5s, queue: {{ dir: {}, max_mb: 1, fsync_every: 0ms }} }}",
            queue.display()
        ),
    )
}

fn results(sub: &Subscriber) -> Vec<Value> {
    sub.messages("/tasks/inspect/result")
}

fn last_stats(sub: &Subscriber) -> Value {
    sub.messages("/stats").last().cloned().unwrap_or(Value::Null)
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn a_full_disk_counts_drops_raises_the_alarm_keeps_results_live_and_recovers_when_space_returns() {
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(SimPlc::start("127.0.0.1:0")).unwrap();
    let broker = Broker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("disk"), "512k");
    let queue = disk.path.join("queue");
    let sub = Subscriber::start(broker.port, "linesight/test-line/cell-1/#");
    let cfg = write_config(dir.path(), &yaml(&plc.addr.to_string(), broker.port, &queue));
    let log = dir.path().join("daemon.log");
    let mut child = run_daemon(&cfg, &log);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    // The queue works: results carry its ids.
    assert!(
        wait_until(Duration::from_secs(60), || results(&sub).iter().filter(|r| r.get("msg_id").is_some()).count() >= 5),
        "no queued results\n{}",
        logs()
    );
    let filler = fill(&disk.path);
    let full_at = results(&sub).len();

    // Full: the queue refuses, the node says why and inspects on; results reach the broker live.
    let alarm_says_full = |sub: &Subscriber| {
        sub.messages("/alarms").iter().any(|a| {
            a["faults"].as_array().is_some_and(|f| {
                f.iter().any(|x| {
                    x.as_str().is_some_and(|s| s.contains("free space") && s.contains(&*queue.to_string_lossy()))
                })
            })
        })
    };
    assert!(wait_until(Duration::from_secs(30), || alarm_says_full(&sub)), "no disk-full alarm\n{}", logs());
    assert!(
        wait_until(Duration::from_secs(30), || results(&sub)[full_at..]
            .iter()
            .filter(|r| r.get("msg_id").is_none())
            .count()
            >= 10),
        "results did not go on live while the disk was full\n{}",
        logs()
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            let q = &last_stats(&sub)["mqtt_queue"];
            q["dropped"].as_u64().unwrap_or(0) >= 10
                && q["live"].as_u64().unwrap_or(0) >= 10
                && q["problem"].is_string()
        }),
        "the stats do not count the refusals: {}\n{}",
        last_stats(&sub),
        logs()
    );
    let during = last_stats(&sub);
    eprintln!("disk full: mqtt_queue {}", during["mqtt_queue"]);
    assert!(during["tasks"]["inspect"]["processed"].as_u64().unwrap() > 0);
    assert!(child.try_wait().unwrap().is_none(), "the daemon must keep running\n{}", logs());

    // Space returns: the queue is used again (results with ids, newer than any before), the
    // problem clears.
    let last_id = results(&sub).iter().filter_map(|r| r["msg_id"].as_u64()).max().unwrap();
    std::fs::remove_file(&filler).unwrap();
    let back_at = results(&sub).len();
    assert!(
        wait_until(Duration::from_secs(60), || results(&sub)[back_at..]
            .iter()
            .any(|r| r["msg_id"].as_u64().is_some_and(|id| id > last_id))),
        "the queue was not used again after space returned\n{}",
        logs()
    );
    assert!(
        wait_until(Duration::from_secs(10), || last_stats(&sub)["mqtt_queue"]["problem"].is_null()),
        "the problem did not clear: {}",
        last_stats(&sub)
    );
    eprintln!("space back: mqtt_queue {}", last_stats(&sub)["mqtt_queue"]);
    let processed_later = last_stats(&sub)["tasks"]["inspect"]["processed"].as_u64().unwrap();
    assert!(processed_later > during["tasks"]["inspect"]["processed"].as_u64().unwrap(), "inspection went on");
    assert!(logs().contains("works again"), "{}", logs());
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success(), "{}", logs());
}

#[test]
fn a_read_only_queue_folder_does_not_stop_the_node_and_a_remount_read_write_brings_the_queue_back() {
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(SimPlc::start("127.0.0.1:0")).unwrap();
    let broker = Broker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("disk"), "4m");
    let queue = disk.path.join("queue");
    std::fs::create_dir(&queue).unwrap();
    disk.remount("ro");
    let sub = Subscriber::start(broker.port, "linesight/test-line/cell-1/#");
    let cfg = write_config(dir.path(), &yaml(&plc.addr.to_string(), broker.port, &queue));
    let log = dir.path().join("daemon.log");
    let mut child = run_daemon(&cfg, &log);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    // It starts, inspects and publishes live; the alarm says the folder is read-only.
    assert!(
        wait_until(Duration::from_secs(60), || results(&sub).len() >= 5),
        "no results from a node whose queue folder is read-only\n{}",
        logs()
    );
    assert!(results(&sub).iter().all(|r| r.get("msg_id").is_none()), "nothing went through the queue");
    assert!(
        wait_until(Duration::from_secs(10), || sub
            .messages("/alarms")
            .iter()
            .any(|a| a.to_string().contains("read-only"))),
        "no alarm naming the read-only folder\n{}",
        logs()
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            let q = &last_stats(&sub)["mqtt_queue"];
            q["problem"].as_str().is_some_and(|p| p.contains(&*queue.to_string_lossy()))
                && q["dropped"].as_u64().unwrap_or(0) > 0
                && q["live"].as_u64().unwrap_or(0) > 0
        }),
        "the stats do not say why, nor count: {}",
        last_stats(&sub)
    );
    assert!(child.try_wait().unwrap().is_none(), "the daemon must keep running\n{}", logs());

    // The remount read-write: the queue opens (it kept trying) and results carry ids again.
    disk.remount("rw");
    assert!(
        wait_until(Duration::from_secs(60), || results(&sub).iter().any(|r| r.get("msg_id").is_some())),
        "the queue was not opened after the remount\n{}",
        logs()
    );
    assert!(logs().contains("MQTT queue opened"), "{}", logs());
    assert!(wait_until(Duration::from_secs(10), || last_stats(&sub)["mqtt_queue"]["problem"].is_null()));
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success(), "{}", logs());
}
