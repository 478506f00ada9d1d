//! The PLC sees what systemd and MQTT see: with `modbus.fault_word` declared, linesight writes its
//! faults as bits of one holding register at the independent PLC (pymodbus). A camera that does
//! not deliver sets "any fault" and "camera"; bit 15 says the word was written at all.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::pyplc::{Area, PyPlc};
use crate::common::*;

const WORD: u16 = 120;

#[test]
fn a_lost_camera_shows_in_the_fault_word() {
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(PyPlc::tcp(&[1]));
    let broker = Broker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Accepts the connection and never answers: that camera stays offline.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let yaml = node_yaml(&plc.addr().to_string(), broker.port, "loop: true", 10.0)
        .replace(
            "  outputs:\n",
            &format!("  fault_word: {{ device: plc, address: {WORD} }}\n  outputs:\n"),
        )
        .replace(
            "cameras:\n",
            &format!(
                "cameras:\n  mute:\n    source: {{ rtsp: \"rtsp://{}/s\" }}\n    mode: free-running\n    timeout: 500ms\n",
                mute.local_addr().unwrap()
            ),
        )
        + "  inspect-mute: { camera: mute, model: surface }\n";
    let cfg = write_config(dir.path(), &yaml);
    let log = dir.path().join("daemon.log");
    let mut child = run_daemon(&cfg, &log);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let word = || plc.writes().iter().rev().filter(|w| w.area == Area::Holding).find_map(|w| w.hr(WORD));
    let until = Instant::now() + Duration::from_secs(60);
    while !matches!(word(), Some(w) if w & 0b11 == 0b11) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    let w = word().unwrap_or_else(|| panic!("the fault word was never written:\n{}", logs()));
    assert_eq!(w & 0x8000, 0x8000, "bit 15: written by linesight ({w:#06x})");
    assert_eq!(w & 0b11, 0b11, "bit 0 any fault, bit 1 camera ({w:#06x}):\n{}", logs());
    assert_eq!(w & 0b1_1100, 0, "no model, inference or gate fault ({w:#06x})");
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    wait_exit(&mut child, Duration::from_secs(30));
}
