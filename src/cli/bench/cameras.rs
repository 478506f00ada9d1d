//! `linesight bench --cameras 1,2,4`: several cameras sharing one model.
//!
//! For each camera count N, in each of `--rounds` rounds (the counts interleaved):
//! - **decode alone**: N threads each decoding the test video at once, frames/s in all;
//! - **ONNX Runtime alone**: `Session::run` on prepared tensors in batches of N
//!   (or of the model's largest batch), with the same threads as the pipeline;
//! - **the limit**: the slower of the two;
//! - **the pipeline**: N file cameras, N tasks on the one model with `batch: N`,
//!   frames/s in all (first result to last), and per camera its capture-to-decision
//!   latency and the frames it dropped.
//!
//! Then per count the median and spread of the rounds, and the goal's verdict (0.9 of the
//! shared-cores bound: "met" only when every round meets it).

use std::path::{Path, PathBuf};
use std::time::Instant;

use opencv::core::Mat;
use opencv::prelude::*;
use opencv::videoio;
use serde_json::{json, Value};

use super::{bench_config, camera_yaml, decode_all, load_config, machine, model_yaml, round1};
use crate::app;
use crate::config::*;
use crate::inference::runtime;

/// Decode the video on `n` threads at once: frames/s in all.
fn decode_parallel(video: &Path, n: usize, scale: u32) -> Result<f64, String> {
    let t = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let v = video.to_path_buf();
            std::thread::spawn(move || decode_all(&v, scale))
        })
        .collect();
    let mut frames = 0usize;
    for h in handles {
        frames += h.join().map_err(|_| "decoder thread panicked".to_string())??;
    }
    Ok(frames as f64 / t.elapsed().as_secs_f64())
}

/// Raw `Session::run` in batches of `n` on tensors made from real frames before the clock starts.
fn ort_batched(
    env: &'static ort::environment::Environment,
    cfg: &ModelConfig,
    threads: usize,
    video: &Path,
    n: usize,
) -> Result<(f64, usize, String), String> {
    let mut model = crate::inference::load_model(env, cfg, threads).map_err(|e| e.to_string())?;
    let batch = model.max_batch().map_or(n, |max| n.min(max));
    let mut cap =
        videoio::VideoCapture::from_file(&*video.to_string_lossy(), videoio::CAP_ANY).map_err(|e| e.message)?;
    let mut one = Vec::new();
    let mut f = Mat::default();
    while one.len() < 16 && cap.read(&mut f).unwrap_or(false) && !f.empty() {
        let mut t = Vec::new();
        model.prepare(&f, &mut t)?;
        one.push(t);
    }
    if one.is_empty() {
        return Err(format!("{} has no frames", video.display()));
    }
    let make = |k: usize| -> Vec<f32> { (0..batch).flat_map(|j| one[(k + j) % one.len()].iter().copied()).collect() };
    for k in 0..3 {
        model.run_prepared(batch, make(k))?;
    }
    let calls = (240 / batch).max(20);
    let inputs: Vec<Vec<f32>> = (0..calls).map(make).collect();
    let t = Instant::now();
    for input in inputs {
        model.run_prepared(batch, input)?;
    }
    Ok(((calls * batch) as f64 / t.elapsed().as_secs_f64(), batch, model.provider().to_string()))
}

/// `n` file cameras on the test video, each at `fps` (or as fast as inspection
/// takes its frames) with its own task on the one model in batches of up to
/// `batch`. No gate and no broker: this measures inspection throughput and
/// latency across cameras. Loaded as `check-config` would load it.
fn cameras_config(
    args: &super::BenchArgs,
    video: &Path,
    n: usize,
    batch: usize,
    fps: Option<f64>,
) -> Result<LoadedConfig, String> {
    let camera = camera_yaml(video, fps, &args.decode)?;
    let cameras: Vec<String> = (0..n).map(|i| format!("cam{i}: {camera}")).collect();
    let tasks: Vec<String> =
        (0..n).map(|i| format!("cam{i}: {{ camera: cam{i}, model: model, inference_timeout: 30s }}")).collect();
    let yaml = format!(
        "node: {{ group_id: bench, node_id: bench }}\ncameras: {{ {} }}\nmodels:\n  model: {}\ntasks: {{ {} }}\nruntime: {{ threads: {}, state_dir: {} }}\n",
        cameras.join(", "),
        model_yaml(args, batch)?,
        tasks.join(", "),
        args.threads,
        super::path_yaml(&super::state_dir())?
    );
    load_config(&yaml)
}

/// The pipeline with `n` cameras and tasks on one model; each camera at `fps`, or as fast as
/// inspection takes its frames.
async fn pipeline(
    args: &super::BenchArgs,
    video: &Path,
    n: usize,
    batch: usize,
    fps: Option<f64>,
) -> Result<(f64, Value), String> {
    let cfg = cameras_config(args, video, n, batch, fps)?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let running =
        app::start(&cfg, app::Options { observer: Some(tx), ..Default::default() }).await.map_err(|e| e.to_string())?;
    let run = tokio::spawn(running.run_until(std::future::pending()));
    let (mut first, mut last, mut count) = (None, Instant::now(), 0u64);
    while rx.recv().await.is_some() {
        let now = Instant::now();
        first.get_or_insert(now);
        last = now;
        count += 1;
    }
    let stats = run.await.map_err(|e| e.to_string())?.stats;
    let span = last.duration_since(first.unwrap_or(last)).as_secs_f64();
    Ok((if count > 1 { (count - 1) as f64 / span } else { 0.0 }, stats))
}

pub async fn run(args: &super::BenchArgs, video: &Path, counts: &[usize]) -> Result<Value, String> {
    let lib = runtime::library_path(&RuntimeConfig::default()).map_err(|e| e.to_string())?;
    let env = runtime::environment(&lib).map_err(|e| e.to_string())?;
    let model_cfg = bench_config(args, video, "127.0.0.1:1", None)?.config().models["model"].clone();
    // Rounds interleave the camera counts (1, 4, 1, 4, ...), so a slow minute of the machine
    // falls on both rather than on one.
    let mut rows: Vec<Vec<Value>> = vec![Vec::new(); counts.len()];
    for round in 0..args.rounds.max(1) {
        for (i, &n) in counts.iter().enumerate() {
            let m = measure(args, video, env, &model_cfg, n).await?;
            let row = m.row(args);
            if !args.json {
                println!("round {} of {}:", round + 1, args.rounds.max(1));
                print_row(args, &m, &row);
            }
            rows[i].push(row);
        }
    }
    let summary: Vec<Value> = rows.iter().map(|r| summarise(r)).collect();
    if !args.json {
        for s in &summary {
            print_summary(s);
        }
    }
    Ok(json!({
        "model": args.model.display().to_string(),
        "resolution": format!("{}x{}", args.width, args.height),
        "frames_per_camera": args.frames,
        "threads": args.threads,
        "rounds": args.rounds.max(1),
        "summary": summary,
        "runs": rows.into_iter().flatten().collect::<Vec<_>>(),
        "machine": machine(),
    }))
}

/// The goal of issue 14 for batched cameras: the pipeline at 0.9 of the shared-cores bound.
const SHARED_BOUND_GOAL: f64 = 0.9;

/// One camera count over the rounds: each figure's median and spread, the goal's verdict.
fn summarise(rows: &[Value]) -> Value {
    let of = |key: &str| super::spread(rows.iter().map(|r| r[key].as_f64()));
    // The worst camera's p99 at a line's pace, per round.
    let paced_p99 =
        super::spread(rows.iter().map(|r| {
            r["paced"]["per_camera"].as_object()?.values().filter_map(|c| c["p99"].as_f64()).reduce(f64::max)
        }));
    let bound = of("of_shared_cores_bound");
    json!({
        "cameras": rows.first().map(|r| r["cameras"].clone()).unwrap_or_default(),
        "decode_fps": of("decode_fps"),
        "ort_fps": of("ort_fps"),
        "shared_cores_bound_fps": of("shared_cores_bound_fps"),
        "pipeline_fps": of("pipeline_fps"),
        "of_shared_cores_bound": bound,
        "goal": SHARED_BOUND_GOAL,
        "verdict": super::verdict(&bound, SHARED_BOUND_GOAL, true),
        "paced_worst_camera_p99_ms": paced_p99,
    })
}

fn print_summary(s: &Value) {
    let m = |v: &Value| format!("{} ({}-{})", v["median"], v["min"], v["max"]);
    println!(
        "{} camera(s) over {} rounds, median (min-max): pipeline {} f/s, shared-cores bound {} f/s, of the bound {}: goal {} {}; paced worst camera p99 {} ms",
        s["cameras"],
        s["pipeline_fps"]["runs"],
        m(&s["pipeline_fps"]),
        m(&s["shared_cores_bound_fps"]),
        m(&s["of_shared_cores_bound"]),
        s["goal"],
        s["verdict"].as_str().unwrap_or(""),
        m(&s["paced_worst_camera_p99_ms"]),
    );
}

/// The figures for one camera count.
struct Measured {
    cameras: usize,
    batch: usize,
    /// Decode alone, frames/s in all.
    decode: f64,
    /// ONNX Runtime alone, frames/s in all.
    ort: f64,
    provider: String,
    /// The pipeline as fast as it goes, frames/s in all.
    fps: f64,
    /// Final stats of the full-speed run.
    stats: Value,
    /// Final stats of the run at a line's pace (`--camera-fps`).
    paced: Value,
}

impl Measured {
    fn limit(&self) -> f64 {
        self.decode.min(self.ort)
    }

    /// Decode and inference share the cores in the pipeline: one frame costs the sum of the two.
    fn shared(&self) -> f64 {
        1.0 / (1.0 / self.decode + 1.0 / self.ort)
    }

    /// One element of `runs` in the report.
    fn row(&self, args: &super::BenchArgs) -> Value {
        let (decode, ort, fps, limit, shared) = (self.decode, self.ort, self.fps, self.limit(), self.shared());
        json!({
            "cameras": self.cameras,
            "batch": self.batch,
            "decode_fps": round1(decode),
            "ort_fps": round1(ort),
            "limit_fps": round1(limit),
            "limit_is": if decode < ort { "decode" } else { "onnxruntime" },
            "pipeline_fps": round1(fps),
            "efficiency": (fps / limit * 1000.0).round() / 1000.0,
            "mean_batch": self.stats["models"]["model"]["mean_batch"],
            "shared_cores_bound_fps": round1(shared),
            "of_shared_cores_bound": (fps / shared * 1000.0).round() / 1000.0,
            "provider": self.provider,
            "per_camera": per_camera(&self.stats),
            "paced": {"camera_fps": args.camera_fps, "mean_batch": self.paced["models"]["model"]["mean_batch"], "per_camera": paced_latency(&self.paced)},
        })
    }
}

/// Each stage alone, the pipeline at full speed and at a line's pace, for `n` cameras.
async fn measure(
    args: &super::BenchArgs,
    video: &Path,
    env: &'static ort::environment::Environment,
    model_cfg: &ModelConfig,
    n: usize,
) -> Result<Measured, String> {
    let v: PathBuf = video.to_path_buf();
    // Decode alone at the reduction the cameras take.
    let scale = super::decode_scale(args, video)?;
    let decode = tokio::task::spawn_blocking(move || -> Result<f64, String> {
        let mut best: f64 = 0.0;
        for _ in 0..2 {
            best = best.max(decode_parallel(&v, n, scale)?);
        }
        Ok(best)
    })
    .await
    .map_err(|e| e.to_string())??;
    let (cfg, v, threads) = (model_cfg.clone(), video.to_path_buf(), args.threads);
    let (ort, batch, provider) = tokio::task::spawn_blocking(move || ort_batched(env, &cfg, threads, &v, n))
        .await
        .map_err(|e| e.to_string())??;
    let (fps, stats) = pipeline(args, video, n, batch, None).await?;
    // A line's pace: every camera at --camera-fps, for the latency a part really sees.
    let (_, paced) = pipeline(args, video, n, batch, Some(args.camera_fps)).await?;
    Ok(Measured { cameras: n, batch, decode, ort, provider, fps, stats, paced })
}

/// Per camera at a line's pace: capture-to-decision latency, and the frames lost.
fn paced_latency(paced: &Value) -> serde_json::Map<String, Value> {
    paced["tasks"]
        .as_object()
        .map(|t| {
            t.iter()
                .map(|(k, v)| {
                    let d = &v["capture_to_decision_ms"];
                    (k.clone(), json!({"p50": d["p50"], "p99": d["p99"], "max": d["max"], "dropped": v["dropped"], "refused": v["refused"]}))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Per camera at full speed: frames, capture-to-decision latency, frames lost, ERRORs.
fn per_camera(stats: &Value) -> serde_json::Map<String, Value> {
    stats["tasks"]
        .as_object()
        .map(|tasks| {
            tasks
                .iter()
                .map(|(name, t)| {
                    (
                        name.clone(),
                        json!({
                            "frames": t["processed"],
                            "decision_ms": {"p50": t["capture_to_decision_ms"]["p50"], "p99": t["capture_to_decision_ms"]["p99"]},
                            "dropped": t["dropped"], "refused": t["refused"], "error": t["error"],
                        }),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The text lines of one camera count.
fn print_row(args: &super::BenchArgs, m: &Measured, row: &Value) {
    let (n, batch, decode, ort, fps, limit, shared) =
        (m.cameras, m.batch, m.decode, m.ort, m.fps, m.limit(), m.shared());
    println!(
        "{n} camera(s), batch {batch}: decode {decode:.1} f/s, ONNX Runtime {ort:.1} f/s -> limit {limit:.1}; pipeline {fps:.1} f/s = {:.3} of the limit (mean batch {})",
        fps / limit,
        row["mean_batch"]
    );
    println!(
        "    decode and inference on shared cores: {shared:.1} f/s; the pipeline reaches {:.3} of it",
        fps / shared
    );
    for (cam, c) in row["per_camera"].as_object().into_iter().flatten() {
        let p = &row["paced"]["per_camera"][cam];
        println!(
            "    {cam}: {} frames; full speed capture->decision p50 {} ms p99 {} ms; at {} f/s p50 {} ms p99 {} ms; dropped {} refused {}",
            c["frames"], c["decision_ms"]["p50"], c["decision_ms"]["p99"], args.camera_fps, p["p50"], p["p99"], p["dropped"], p["refused"]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cameras_config_is_one_check_config_accepts() {
        let args = super::super::tests::args(&["--threads", "2"]);
        let loaded = cameras_config(&args, Path::new("samples/line.avi"), 3, 3, Some(12.5)).unwrap();
        let cfg = loaded.config();
        assert_eq!(cfg.cameras.keys().collect::<Vec<_>>(), ["cam0", "cam1", "cam2"]);
        assert!(cfg.cameras.values().all(|c| c.fps == Some(12.5) && c.mode == CameraMode::PartPerFrame));
        assert!(cfg.tasks.iter().all(|(k, t)| t.camera == *k && t.reject.is_none()));
        assert_eq!(cfg.models["model"].batch, 3);
        assert!(cfg.modbus.devices.is_empty() && cfg.mqtt.is_none());
        let free = cameras_config(&args, Path::new("samples/line.avi"), 1, 1, None).unwrap();
        assert_eq!(free.config().cameras["cam0"].fps, None);
    }
}
