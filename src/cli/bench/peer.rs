//! `bench --peer`: the Python pipeline a plant would otherwise write (`tools/peer_pipeline.py`:
//! OpenCV's full decode on a capture thread, `cv2.resize`, onnxruntime with the same thread
//! count, pymodbus, paho), run on the same video, model, kind of Modbus server and broker as
//! linesight's own runs, between them.

use std::path::Path;

use serde_json::Value;

use crate::sim::broker::Broker;
use crate::sim::plc::SimPlc;

/// The venv's interpreter (scripts/setup.sh installs OpenCV, NumPy, onnxruntime, pymodbus and
/// paho into it), or `LINESIGHT_PYTHON`.
fn python() -> String {
    std::env::var("LINESIGHT_PYTHON").unwrap_or_else(|_| ".cache/venv/bin/python3".to_string())
}

/// One run of the peer over `video`; its JSON report (frames, fps, CPU ms per frame, latencies,
/// RSS, verdicts).
pub async fn run(video: &Path, model: &Path, threads: usize, pace: Option<f64>) -> Result<Value, String> {
    let plc = SimPlc::start("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let broker = Broker::start().map_err(|e| format!("the peer's broker: {e}"))?;
    let script = Path::new("tools/peer_pipeline.py");
    if !script.is_file() {
        return Err("tools/peer_pipeline.py not found: run `linesight bench --peer` from the repository root".into());
    }
    let mut cmd = std::process::Command::new(python());
    cmd.arg(script)
        .arg("--video")
        .arg(video)
        .arg("--model")
        .arg(model)
        .args(["--threads", &threads.to_string(), "--modbus", &plc.addr.to_string(), "--coil", "10"])
        .args(["--mqtt-port", &broker.port.to_string()]);
    if let Some(fps) = pace {
        cmd.args(["--fps", &fps.to_string()]);
    }
    // A blocking wait on tokio's blocking pool: the Modbus server and broker go on serving.
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot start {} (run scripts/setup.sh, which makes the venv): {e}", python()))?;
    if !out.status.success() {
        return Err(format!(
            "the Python peer failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
        ));
    }
    let mut report: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!("the Python peer printed no JSON report ({e}): {}", String::from_utf8_lossy(&out.stdout))
    })?;
    report["coil_writes_seen_by_plc"] = plc.pulses(10).into();
    Ok(report)
}
