//! `linesight bench --viewers N`: does the operator page slow inspection? The pipeline bench
//! with the page on, alternately with no viewer and with N viewers, each following the events
//! stream and fetching the live picture at the page's own pace (as a browser tab does). Rounds
//! alternate the order (none, N; N, none; ...) so that a drift of the machine falls on both.
//! Reported per arm: median and spread (max - min) of frames/s, CPU ms per frame and
//! capture-to-decision p50/p99, and the with/without ratio of the medians.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{cpu_seconds, pipeline, BenchArgs};

/// One viewer: the events stream on one connection, the camera's live picture fetched four
/// times a second on others, until aborted. Errors end nothing: a viewer keeps trying.
pub async fn watch(addr: SocketAddr, camera: &'static str) {
    // The events connection ends with the viewer (an aborted task drops this guard).
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _events = AbortOnDrop(tokio::spawn(async move {
        loop {
            if let Ok(mut s) = TcpStream::connect(addr).await {
                let _ =
                    s.write_all(b"GET /api/events HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n").await;
                let mut buf = vec![0u8; 64 * 1024];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }));
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        if let Ok(mut s) = TcpStream::connect(addr).await {
            let req = format!("GET /api/live/{camera} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
            if s.write_all(req.as_bytes()).await.is_ok() {
                let mut body = Vec::new();
                let _ = s.read_to_end(&mut body).await;
            }
        }
    }
}

/// One run's figures.
pub(super) struct Run {
    pub fps: f64,
    pub cpu_ms_per_frame: f64,
    pub p50: f64,
    pub p99: f64,
    pub misses: u64,
}

impl Run {
    /// A run's figures from its frames/s, frame count, CPU seconds and final stats.
    pub(super) fn of(fps: f64, frames: u64, cpu: f64, stats: &Value) -> Run {
        let task = stats["tasks"].as_object().and_then(|m| m.values().next()).cloned().unwrap_or_default();
        let lat = &task["capture_to_decision_ms"];
        Run {
            fps,
            cpu_ms_per_frame: cpu * 1e3 / frames.max(1) as f64,
            p50: lat["p50"].as_f64().unwrap_or(f64::NAN),
            p99: lat["p99"].as_f64().unwrap_or(f64::NAN),
            misses: task["deadline_misses"].as_u64().unwrap_or(0),
        }
    }
}

async fn one(args: &BenchArgs, video: &Path, viewers: usize) -> Result<Run, String> {
    let cpu0 = cpu_seconds();
    let (fps, frames, stats, _) = pipeline(args, video, Some(viewers)).await?;
    Ok(Run::of(fps, frames, cpu_seconds() - cpu0, &stats))
}

/// Median and spread (max - min).
pub(super) fn summary(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let median = if v.is_empty() {
        f64::NAN
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (median, v.last().copied().unwrap_or(f64::NAN) - v.first().copied().unwrap_or(f64::NAN))
}

pub(super) fn arm(runs: &[Run]) -> Value {
    let field = |f: fn(&Run) -> f64| {
        let (m, s) = summary(runs.iter().map(f).collect());
        json!({"median": round3(m), "spread": round3(s), "runs": runs.iter().map(|r| round3(f(r))).collect::<Vec<_>>()})
    };
    json!({
        "fps": field(|r| r.fps),
        "cpu_ms_per_frame": field(|r| r.cpu_ms_per_frame),
        "decision_p50_ms": field(|r| r.p50),
        "decision_p99_ms": field(|r| r.p99),
        "deadline_misses": runs.iter().map(|r| r.misses).sum::<u64>(),
    })
}

/// The median of a figure with the change over its median without, to 3 decimals.
pub(super) fn ratio_of_medians(with: &[Run], without: &[Run], f: fn(&Run) -> f64) -> f64 {
    let a = summary(with.iter().map(f).collect()).0;
    let b = summary(without.iter().map(f).collect()).0;
    round3(a / b)
}

pub(super) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub async fn run(args: &BenchArgs, video: &Path, viewers: usize) -> Result<Value, String> {
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for round in 0..args.rounds.max(1) {
        let order = if round % 2 == 0 { [0, viewers] } else { [viewers, 0] };
        for n in order {
            let r = one(args, video, n).await?;
            if !args.json {
                eprintln!(
                    "round {} with {n} viewer(s): {:.1} frames/s, {:.2} ms CPU per frame, decision p50 {:.2} ms p99 {:.2} ms",
                    round + 1,
                    r.fps,
                    r.cpu_ms_per_frame,
                    r.p50,
                    r.p99
                );
            }
            if n == 0 { &mut without } else { &mut with }.push(r);
        }
    }
    let ratio = |f: fn(&Run) -> f64| ratio_of_medians(&with, &without, f);
    let (fps_median, fps_spread) = summary(without.iter().map(|r| r.fps).collect());
    Ok(json!({
        "viewers": viewers,
        "rounds": args.rounds,
        "frames_per_run": args.frames,
        "without_viewers": arm(&without),
        "with_viewers": arm(&with),
        "ratio_with_to_without": {
            "fps": ratio(|r| r.fps),
            "cpu_ms_per_frame": ratio(|r| r.cpu_ms_per_frame),
            "decision_p99_ms": ratio(|r| r.p99),
        },
        // A ratio inside the runs' own spread says "no difference measurable", not a winner.
        "fps_relative_spread_without_viewers": round3(fps_spread / fps_median),
        "machine": super::machine(),
        "resolution": format!("{}x{}", args.width, args.height),
        "threads": args.threads,
    }))
}
