//! Two cameras, one model: the tasks' frames are judged in shared batches by
//! one ONNX Runtime session, and every part of both cameras still gets its own
//! verdict, matching the video's labels, with its own task's rules.

use std::time::Duration;

use crate::common::*;
use linesight::sim::plc::SimPlc;

fn labels() -> Vec<bool> {
    std::fs::read_to_string(repo().join("samples/line.labels.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().trim() == "1")
        .collect()
}

#[test]
fn two_cameras_share_one_model_in_batches_and_keep_their_own_verdicts() {
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(SimPlc::start("127.0.0.1:0")).unwrap();
    let broker = Broker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sub = Subscriber::start(broker.port, "linesight/test-line/cell-1/#");
    let video = repo().join("samples/line.avi").display().to_string();
    // Both files read as fast as inspection takes them: both queues stay full,
    // so the worker always finds a frame of each camera for a batch of two.
    let yaml = node_yaml(&plc.addr.to_string(), broker.port, "", 10.0)
        .replace("    fps: 10\n", "")
        .replace("cameras:\n", &format!("cameras:\n  side:\n    source: {{ file: {video} }}\n"))
        .replace("    path: ", "    batch: 2\n    batch_wait: 20ms\n    path: ")
        + "  inspect-side:\n    camera: side\n    model: surface\n    inference_timeout: 1s\n    rules: { ng_threshold: 0.99, uncertain: { from: 0.3, action: pass } }\n";
    let cfg = write_config(dir.path(), &yaml);
    let log = dir.path().join("daemon.log");
    let mut child = run_daemon(&cfg, &log);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let status = wait_exit(&mut child, Duration::from_secs(90));
    assert!(status.success(), "{}", logs());
    let ng = labels();
    for task in ["inspect", "inspect-side"] {
        let mut results = sub.messages(&format!("/tasks/{task}/result"));
        results.sort_by_key(|r| r["part_id"].as_u64());
        assert_eq!(results.len(), ng.len(), "{task}: one result per frame\n{}", logs());
        for r in &results {
            let i = r["part_id"].as_u64().unwrap() as usize - 1;
            let v = r["verdict"].as_str().unwrap();
            match task {
                "inspect" => assert_eq!(v == "NG", ng[i], "{task} part {}: {r}", i + 1),
                // The side task's own rule: NG only from 0.99, UNCERTAIN (passed) from 0.3.
                _ => {
                    let s = r["ng_score"].as_f64().unwrap();
                    let want = if s >= 0.99 {
                        "NG"
                    } else if s >= 0.3 {
                        "UNCERTAIN"
                    } else {
                        "OK"
                    };
                    assert_eq!(v, want, "{task} part {}: {r}", i + 1);
                    assert_eq!(v != "OK", ng[i], "{task} part {}: {r}", i + 1);
                }
            }
        }
    }
    let last = sub.messages("/stats").into_iter().find(|s| s["final"] == true).expect("final stats");
    let m = &last["models"]["surface"];
    assert_eq!(m["frames"].as_u64().unwrap() as usize, 2 * ng.len(), "{m}");
    assert_eq!(m["largest_batch"], 2, "{m}");
    assert!(m["calls"].as_u64().unwrap() < m["frames"].as_u64().unwrap(), "frames were batched: {m}");
    assert!(logs().contains("model shared by its tasks"), "{}", logs());
}
