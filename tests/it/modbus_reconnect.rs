//! A PLC that goes away and comes back: rejects that could not be written are
//! counted and reported, and rejects resume once the link is rebuilt. Runs
//! the pipeline in-process (app::start) against tokio-modbus's own server.

use std::time::Duration;

use crate::common::*;
use linesight::app;
use linesight::config;
use linesight::sim::plc::SimPlc;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_resume_after_the_plc_comes_back() {
    require_ort();
    // Reserve a port, and start the PLC on it only after the line runs.
    let port = linesight::sim::broker::free_port().unwrap();
    let plc_addr = format!("127.0.0.1:{port}");
    let yaml = node_yaml(&plc_addr, 1, "loop: true", 20.0)
        .replace("mqtt: { host: 127.0.0.1, port: 1, stats_interval: 1s, keep_alive: 5s }\n", "");
    let state = tempfile::tempdir().unwrap();
    let cfg = config::load_str(&with_state_dir(&yaml, state.path()), "node.yaml", std::path::Path::new("/")).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let running = app::start(&cfg, app::Options { observer: Some(tx), ..Default::default() }).await.unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(running.run_until(async {
        let _ = stop_rx.await;
    }));

    // Phase 1: no PLC. Rejecting parts must fail visibly, not silently.
    let mut failed = 0;
    while failed < 3 {
        let doc = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.unwrap().unwrap();
        if doc["reject"]["status"] == "failed" {
            failed += 1;
        }
        assert_ne!(doc["reject"]["status"], "fired", "nothing can fire without a PLC: {doc}");
    }

    // Phase 2: the PLC appears; the link reconnects (backoff is at most 5 s).
    let plc = SimPlc::start(&plc_addr).await.unwrap();
    let mut fired = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while fired < 3 {
        let doc = tokio::time::timeout_at(deadline, rx.recv()).await.expect("rejects resumed").unwrap();
        if doc["reject"]["status"] == "fired" {
            fired += 1;
        }
    }
    let _ = stop_tx.send(());
    let stopped = run.await.unwrap();
    assert!(stopped.outputs_safe, "the PLC is back at stop: the safe state is written and read back");
    let t = &stopped.stats["tasks"]["inspect"];
    assert!(t["rejects_failed"].as_u64().unwrap() >= 3);
    assert!(t["rejects_fired"].as_u64().unwrap() >= 3);
    assert!(plc.pulses(10) >= 3);
    assert!(!plc.coil(10), "safe state after stop");
}
