//! Cameras that cannot work, beside one that can: a GStreamer pipeline that
//! does not parse, and an RTSP URL whose server accepts the connection and
//! never answers. Each is reported `offline` with an error that names it and
//! is retried; the good camera's task inspects all its parts meanwhile.

use std::process::Command;
use std::time::Duration;

use crate::common::*;
use linesight::sim::plc::SimPlc;

#[test]
fn broken_cameras_are_named_and_retried_while_the_others_keep_inspecting() {
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(SimPlc::start("127.0.0.1:0")).unwrap();
    let broker = Broker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sub = Subscriber::start(broker.port, "linesight/test-line/cell-1/#");
    // Accepts TCP connections (the kernel's backlog) and never says a word.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mute_url = format!("rtsp://{}/stream1", mute.local_addr().unwrap());
    let yaml = node_yaml(&plc.addr.to_string(), broker.port, "", 10.0).replace(
        "cameras:\n",
        &format!(
            "cameras:\n  gst:\n    source: {{ gstreamer: \"thisisnotanelement ! appsink\" }}\n    mode: free-running\n  mute:\n    source: {{ rtsp: \"{mute_url}\" }}\n    mode: free-running\n    timeout: 500ms\n"
        ),
    ) + "  inspect-gst: { camera: gst, model: surface }\n  inspect-mute: { camera: mute, model: surface }\n";
    let cfg = write_config(dir.path(), &yaml);
    let log = dir.path().join("daemon.log");
    let mut child = run_daemon(&cfg, &log);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    // The good camera's 60 parts, while the others fail.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while sub.messages("/tasks/inspect/result").len() < 60 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(sub.messages("/tasks/inspect/result").len(), 60, "{}", logs());
    assert!(
        sub.wait_for(|t, p| t.ends_with("/cameras/mute/status") && p.contains("\"offline\""), Duration::from_secs(30)),
        "{}",
        logs()
    );
    assert!(
        sub.wait_for(|t, p| t.ends_with("/cameras/gst/status") && p.contains("\"offline\""), Duration::from_secs(5))
    );
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let text = logs();
    assert!(status.success(), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    assert!(text.contains("camera=gst") && text.contains("cannot open GStreamer pipeline"), "{text}");
    assert!(text.contains("camera=mute") && text.contains(&format!("RTSP stream `{mute_url}`")), "{text}");
    assert!(
        sub.messages("/tasks/inspect-gst/result").is_empty() && sub.messages("/tasks/inspect-mute/result").is_empty()
    );
}
