//! `linesight bench`: what this machine allows, and how close the pipeline gets.
//!
//! In one run, on the committed model and a test video at an industrial
//! camera resolution (MJPG, as many USB3/GigE cameras deliver it):
//! (a) each stage alone: video decode only, and raw `Session::run` on
//!     tensors prepared in advance with the same thread count; the slower is
//!     the limit;
//! (b) the whole pipeline, decode to verdict to reject written to a local
//!     Modbus server to telemetry published on a local broker;
//! (c) latency from capture to reject acknowledged;
//! (d) CPU time per frame and peak RSS.

pub mod cameras;
pub mod peer;
pub mod queue;
pub mod rejects;
pub mod shadow;
pub mod viewers;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use opencv::core::{Mat, Size};
use opencv::prelude::*;
use opencv::{imgproc, videoio};
use serde_json::{json, Value};

use crate::app;
use crate::config::*;
use crate::inference::classifier::Classifier;
use crate::inference::runtime;
use crate::sim::broker::Broker;
use crate::sim::plc::SimPlc;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Print one JSON document instead of a report.
    #[arg(long)]
    pub json: bool,
    /// Frames in the test video.
    #[arg(long, default_value_t = 3000)]
    pub frames: usize,
    /// Test video width in pixels.
    #[arg(long, default_value_t = 1920)]
    pub width: i32,
    /// Test video height in pixels.
    #[arg(long, default_value_t = 1080)]
    pub height: i32,
    /// Inference threads (the same for the raw ONNX Runtime stage and the pipeline).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// The model to measure.
    #[arg(long, default_value = "models/surface-classifier.onnx")]
    pub model: PathBuf,
    /// The clip the test video is made from (scaled up to --width x --height).
    #[arg(long, default_value = "samples/line.avi")]
    pub source: PathBuf,
    /// Measure the reject gate's timing instead: parts at --rate against a local Modbus server.
    #[arg(long)]
    pub rejects: bool,
    /// With --rejects: parts to run.
    #[arg(long, default_value_t = 10_000)]
    pub parts: usize,
    /// With --rejects: parts per second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// With --rejects: rates to measure, parts per second (e.g. `--rates 20,50`); default --rate.
    #[arg(long, value_delimiter = ',')]
    pub rates: Vec<f64>,
    /// With --rejects: runs of each figure (interleaved); the report gives median and spread.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// With --rejects: `on` (the trigger with `latch`, the PLC's latched encoder count), `off`
    /// (the edge estimated from the polls), or `both`.
    #[arg(long, default_value = "both", value_parser = ["on", "off", "both"])]
    pub latch: String,
    /// With --rejects: the poll interval of the photo-eye, encoder and latch, in ms.
    #[arg(long, default_value_t = 2.0)]
    pub poll_ms: f64,
    /// With --rejects: how long the photo-eye stays on per part, in ms (default 40 % of the
    /// interval). Shorter than the poll, only the latch shows most parts.
    #[arg(long)]
    pub eye_on_ms: Option<f64>,
    /// With --rejects: encoder counts from the photo-eye to the gate.
    #[arg(long, default_value_t = 30_000)]
    pub distance: u64,
    /// With --rejects: the belt's speed in encoder counts per second.
    #[arg(long, default_value_t = 100_000)]
    pub speed: u64,
    /// With --rejects: also find the highest part rate with no missed reject and no deadline miss
    /// (at --distance, with the latch).
    #[arg(long)]
    pub max_rate: bool,
    /// With --rejects: the gate alone, parts announced in-process to tokio-modbus's server, instead
    /// of the line process (`tools/plc_line.py`). Implied by --queue-dir.
    #[arg(long)]
    pub gate_only: bool,
    /// With --rejects: also send every part's result through an MQTT disk queue in this folder
    /// (to a local broker), as the daemon does, so the queue's fsyncs run beside the gate.
    /// scripts/bench_slow_fsync.sh puts it on a disk whose fsync takes 200 ms.
    #[arg(long)]
    pub queue_dir: Option<PathBuf>,
    /// Measure the MQTT disk queue instead: write rate, and in --rounds interleaved rounds the
    /// broker's QoS 1 ceiling (no queue), QoS 1 through the queue, and the replay of a backlog.
    #[arg(long)]
    pub queue: bool,
    /// With --queue: messages of each QoS 1 run (the ceiling and through the queue).
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// With --queue: messages in the backlog replayed in each round (0: no replay). The goal is
    /// stated for 1,000,000 (at most 60 s).
    #[arg(long, alias = "backlog", default_value_t = 100_000)]
    pub replay_messages: u64,
    /// With --queue: the in-flight window (`mqtt.queue.inflight`) of the queue and of the
    /// ceiling's publisher; the config's default unless given.
    #[arg(long)]
    pub inflight: Option<u16>,
    /// With --queue: messages per second offered to the queue in the runs through it (the
    /// daemon's pipeline never waits for the queue, so neither does the bench: it offers a
    /// steady load, above the goal, and measures what comes through).
    #[arg(long, default_value_t = 60_000)]
    pub offered: u64,
    /// Measure several cameras sharing one model instead, for each camera count given
    /// (e.g. `--cameras 1,2,4`), with frames batched across the cameras.
    #[arg(long, value_delimiter = ',')]
    pub cameras: Vec<usize>,
    /// With --cameras: each camera's rate for the latency run (a line's pace).
    #[arg(long, default_value_t = 10.0)]
    pub camera_fps: f64,
    /// The pipeline with its operator page, alternately without and with this many viewers
    /// (each following the events and fetching the live picture): the page must change no
    /// inspection figure.
    #[arg(long)]
    pub viewers: Option<usize>,
    /// The pipeline alternately without and with a candidate model in shadow mode (the same
    /// model, packed and installed as a candidate): the shadow must not slow production.
    #[arg(long)]
    pub shadow: bool,
    /// Rounds: of the pipeline bench (each measures the stages alone and the pipeline, and the
    /// peer with `--peer`, in alternating order), of the `--viewers` comparison, of `--queue`
    /// (each: the ceiling, the queue, the replay), and of `--cameras` (each camera count in turn).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Run the Python peer (`tools/peer_pipeline.py`) in every round, between linesight's runs,
    /// and report both side by side with the ratios.
    #[arg(long)]
    pub peer: bool,
    /// Feed the pipeline (and the peer) at this many frames per second instead of as fast as
    /// they take them: a line's pace, where capture-to-decision latency is what a part sees
    /// rather than the queue's depth.
    #[arg(long)]
    pub pace: Option<f64>,
    /// How the camera decodes the MJPG test video: `auto` (reduced as far as the model allows),
    /// `full`, `1/2`, `1/4`, `1/8` (the camera's `decode`).
    #[arg(long, default_value = "auto")]
    pub decode: String,
}

/// `linesight bench`: the measurement the flags choose (the whole pipeline by default).
pub async fn main(args: BenchArgs) -> Result<(), String> {
    if args.queue {
        return bench_queue(&args).await;
    }
    if args.rejects {
        return bench_rejects(&args).await;
    }
    let video = make_video(&args)?;
    if let Some(n) = args.viewers {
        let out = viewers::run(&args, &video, n).await?;
        println!(
            "{}",
            if args.json { out.to_string() } else { serde_json::to_string_pretty(&out).unwrap_or_default() }
        );
        return Ok(());
    }
    if args.shadow {
        let out = shadow::run(&args, &video).await?;
        println!(
            "{}",
            if args.json { out.to_string() } else { serde_json::to_string_pretty(&out).unwrap_or_default() }
        );
        return Ok(());
    }
    if !args.cameras.is_empty() {
        return bench_cameras(&args, &video).await;
    }
    bench_pipeline(&args, &video).await
}

/// `--queue`: the report is the JSON document (pretty unless `--json`).
async fn bench_queue(args: &BenchArgs) -> Result<(), String> {
    let plan = queue::Plan {
        runs: args.rounds,
        messages: args.messages,
        replay_messages: args.replay_messages,
        inflight: args.inflight,
        offered: args.offered,
    };
    let out = queue::run(plan).await?;
    println!("{}", if args.json { out.to_string() } else { serde_json::to_string_pretty(&out).unwrap_or_default() });
    Ok(())
}

/// The line bench's summary: one row per figure, medians and ranges over the runs.
fn print_line_report(out: &Value) {
    println!(
        "reject \"on\" at the line process (its clock) minus the true due time; {} parts per run, poll {} ms, gate {} counts ({} ms) downstream",
        out["parts_per_run"], out["poll_ms"], out["distance_counts"], out["travel_ms"]
    );
    let cell = |v: &Value| format!("{} ({}..{})", v["median"], v["min"], v["max"]);
    for f in out["figures"].as_array().into_iter().flatten() {
        let s = &f["summary"];
        println!(
            "{:>5} parts/s, {:<13} p50 {}  p99 {}  max {}  mean {}  missed {}  deadline misses {}  wrong/duplicate {}",
            f["rate_per_s"],
            if f["latch"] == true { "with latch:" } else { "without latch:" },
            cell(&s["p50_ms"]),
            cell(&s["p99_ms"]),
            cell(&s["max_ms"]),
            cell(&s["mean_ms"]),
            cell(&s["missed"]),
            cell(&s["deadline_misses"]),
            cell(&s["wrong_or_duplicate"]),
        );
    }
    if let Some(m) = out.get("max_rate") {
        println!("highest rate with no miss of any kind (with the latch): {} parts/s", m["highest_clean_rate_per_s"]);
    }
}

/// `--rejects`: the gate's timing error against the due time.
async fn bench_rejects(args: &BenchArgs) -> Result<(), String> {
    if !(args.gate_only || args.queue_dir.is_some()) {
        if !(args.poll_ms >= 0.5 && args.poll_ms <= 1000.0) {
            return Err("use --poll-ms 0.5 to 1000".into());
        }
        let b = rejects::LineBench {
            parts: args.parts,
            rates: if args.rates.is_empty() { vec![args.rate] } else { args.rates.clone() },
            runs: args.runs,
            latch: match args.latch.as_str() {
                "on" => vec![true],
                "off" => vec![false],
                _ => vec![true, false],
            },
            poll: Duration::from_secs_f64(args.poll_ms / 1e3),
            distance: args.distance,
            speed: args.speed,
            max_rate: args.max_rate,
            json: args.json,
            odd_ng: false,
            eye_on: args.eye_on_ms.map(|ms| Duration::from_secs_f64(ms.clamp(0.01, 10_000.0) / 1e3)),
        };
        let out = rejects::run_line(b).await?;
        if args.json {
            println!("{out}");
        } else {
            print_line_report(&out);
        }
        return Ok(());
    }
    let out = rejects::run(args.parts, args.rate, args.json, args.queue_dir.as_deref()).await?;
    if args.json {
        println!("{out}");
    } else {
        let e = &out["on_error_ms"];
        println!(
            "reject \"on\" at the PLC vs due: p50 {} ms, p99 {} ms, max {} ms (min {} ms); deadline misses {}; failed {}",
            e["p50"], e["p99"], e["max"], e["min"], out["deadline_misses"], out["failed"]
        );
        if let Some(q) = out.get("queue") {
            println!(
                "queue in {}: fsync {} ms (median of 5 before the run); {} results sent, {} waiting at the end, {} not kept",
                q["dir"], q["fsync_ms"], q["results"], q["waiting"], q["dropped"]
            );
        }
        println!("machine: {}", out["machine"]);
    }
    Ok(())
}

/// `--cameras`: [`cameras::run`] prints its own lines as it goes; the JSON comes at the end.
async fn bench_cameras(args: &BenchArgs, video: &Path) -> Result<(), String> {
    let out = cameras::run(args, video, &args.cameras).await?;
    if args.json {
        println!("{out}");
    } else {
        println!("machine: {}", out["machine"]);
    }
    Ok(())
}

/// Each stage alone, then the whole pipeline against that limit, and with `--peer` the Python
/// peer, in `--rounds` interleaved rounds (the order alternates: ours first, then the peer first);
/// each figure reported as the median and spread of the rounds. A line of text per round as it
/// comes (unless `--json`), the report at the end.
async fn bench_pipeline(args: &BenchArgs, video: &Path) -> Result<(), String> {
    let say = |s: &str| {
        if !args.json {
            println!("{s}");
        }
    };
    say(&format!("test video: {} ({} frames, {}x{}, MJPG)", video.display(), args.frames, args.width, args.height));
    let scale = decode_scale(args, video)?;
    say(&format!("decode: `{}` -> 1/{scale} per side (the camera's choice for this model and video)", args.decode));
    let mut rounds = Vec::new();
    for r in 0..args.rounds.max(1) {
        let decode_passes = measure_decode(video, scale).await?;
        let (ort_fps, provider) = measure_ort(args, video).await?;
        let limits = Limits { decode_passes, ort_fps, provider };
        let mut ours = None;
        let mut peer = None;
        for ours_now in if r % 2 == 0 { [true, false] } else { [false, true] } {
            if ours_now {
                ours = Some(measure_pipeline(args, video).await?);
            } else if args.peer {
                peer = Some(peer::run(video, &args.model, args.threads, args.pace).await?);
            }
        }
        let ours = ours.expect("run in every round");
        let out = pipeline_report(args, &limits, &ours);
        say(&format!(
            "round {}: decode alone {:.1} f/s, ONNX Runtime alone {:.1} f/s; linesight {:.1} f/s (efficiency {:.3}), {} ms CPU/frame, decision p99 {} ms, VM steal {} ms{}",
            r + 1,
            limits.decode_fps(),
            limits.ort_fps,
            ours.fps,
            out["efficiency"].as_f64().unwrap_or(0.0),
            out["cpu_ms_per_frame"],
            out["decision_latency_ms"]["p99"],
            out["vm_steal_ms"],
            peer.as_ref().map_or(String::new(), |p| format!(
                "; Python peer {} f/s, {} ms CPU/frame, decision p99 {} ms",
                p["fps"], p["cpu_ms_per_frame"], p["decision_latency_ms"]["p99"]
            ))
        ));
        rounds.push((out, peer));
    }
    let report = rounds_report(args, scale, &rounds);
    if args.json {
        println!("{report}");
    } else {
        print_rounds_report(&report);
    }
    Ok(())
}

/// The decode reduction the bench's camera takes: forced by `--decode`, or with `auto` the
/// largest the model allows on this video (what `camera::Camera` decides at run time).
fn decode_scale(args: &BenchArgs, video: &Path) -> Result<u32, String> {
    let cfg = bench_config(args, video, "127.0.0.1:1", None)?;
    let cam = &cfg.config().cameras["cam"];
    if let Some(k) = cam.decode.forced() {
        return Ok(k);
    }
    let lib = runtime::library_path(&RuntimeConfig::default()).map_err(|e| e.to_string())?;
    let env = runtime::environment(&lib).map_err(|e| e.to_string())?;
    let model = crate::inference::load_model(env, &cfg.config().models["model"], 1).map_err(|e| e.to_string())?;
    let (w, h) = crate::camera::transform::Transform::of(cam).size_of(args.width as u32, args.height as u32);
    Ok(model.fit().map_or(1, |f| f.largest_reduction(w, h)))
}

/// Median, min and max of one figure over the rounds (`null` when no round has it).
fn spread(values: impl Iterator<Item = Option<f64>>) -> Value {
    let mut v: Vec<f64> = values.flatten().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({"median": r3(median), "min": r3(v[0]), "max": r3(v[v.len() - 1]), "runs": v.len()})
}

/// The rounds as one document: each figure's median and spread, the peer's beside ours, and the
/// ratios the performance goals are stated in (each round's ratio, then their median and spread).
fn rounds_report(args: &BenchArgs, scale: u32, rounds: &[(Value, Option<Value>)]) -> Value {
    // The number at `path` (keys, outermost first) of one run's report.
    let at = |v: &Value, path: &[&str]| path.iter().fold(v, |v, k| &v[*k]).as_f64();
    let ours = |path: &[&str]| spread(rounds.iter().map(|(o, _)| at(o, path)));
    let theirs = |path: &[&str]| spread(rounds.iter().map(|(_, p)| p.as_ref().and_then(|p| at(p, path))));
    let ratio = |a: &[&str], b: &[&str]| {
        spread(rounds.iter().map(|(o, p)| {
            let (x, y) = (at(o, a)?, at(p.as_ref()?, b)?);
            (y > 0.0).then_some(x / y)
        }))
    };
    // p50, p99 and max of one latency figure, each as its spread over the rounds.
    let latency = |figure: &dyn Fn(&[&str]) -> Value, key: &str| json!({"p50": figure(&[key, "p50"]), "p99": figure(&[key, "p99"]), "max": figure(&[key, "max"])});
    let mut out = json!({
        "rounds": rounds.len(),
        "frames": args.frames,
        "resolution": format!("{}x{}", args.width, args.height),
        "decode": args.decode,
        "decode_scale": scale,
        "pace_fps": args.pace,
        "threads": args.threads,
        "model": args.model.display().to_string(),
        "linesight": {
            "decode_alone_fps": ours(&["decode_fps"]),
            "decode_pass_spread": ours(&["decode_pass_spread"]),
            "ort_alone_fps": ours(&["ort_limit_fps"]),
            "fps": ours(&["pipeline_fps"]),
            "efficiency": ours(&["efficiency"]),
            "cpu_ms_per_frame": ours(&["cpu_ms_per_frame"]),
            "decision_latency_ms": latency(&ours, "decision_latency_ms"),
            "rss_mb": ours(&["rss_mb"]),
            "deadline_misses": ours(&["deadline_misses"]),
            "error": ours(&["error"]),
        },
        "runs": rounds.iter().map(|(o, p)| json!({"linesight": o, "peer": p})).collect::<Vec<_>>(),
        "provider": rounds.first().map(|(o, _)| o["provider"].clone()).unwrap_or_default(),
        "machine": machine(),
    });
    // At a pace the pipeline's frames/s follows the pace, and so its efficiency: no goal there.
    if args.pace.is_none() {
        let (e, noise) = (&out["linesight"]["efficiency"], &out["linesight"]["decode_pass_spread"]);
        out["efficiency_goal"] = json!({
            "goal": EFFICIENCY_GOAL,
            "spread_goal": EFFICIENCY_SPREAD,
            "verdict": efficiency_verdict(e, noise),
        });
    }
    if rounds.iter().any(|(_, p)| p.is_some()) {
        out["peer"] = json!({
            "fps": theirs(&["fps"]),
            "cpu_ms_per_frame": theirs(&["cpu_ms_per_frame"]),
            "decision_latency_ms": latency(&theirs, "decision_latency_ms"),
            "coil_ack_latency_ms": latency(&theirs, "coil_ack_latency_ms"),
            "rss_mb": theirs(&["rss_mb"]),
        });
        // The goals of issue 14: fps >= 2x the peer, CPU <= 0.5x, decision p99 <= 1/3. At a
        // pace both run at the same frame rate, so frames/s is not compared.
        let goals = [
            ("fps", ratio(&["pipeline_fps"], &["fps"]), 2.0, true),
            ("cpu_ms_per_frame", ratio(&["cpu_ms_per_frame"], &["cpu_ms_per_frame"]), 0.5, false),
            ("decision_p99", ratio(&["decision_latency_ms", "p99"], &["decision_latency_ms", "p99"]), 1.0 / 3.0, false),
        ];
        let mut ratios = serde_json::Map::new();
        for (name, r, goal, higher) in goals.into_iter().filter(|g| args.pace.is_none() || g.0 != "fps") {
            let verdict = verdict(&r, goal, higher);
            ratios.insert(
                name.into(),
                json!({"linesight_over_peer": r, "goal": (goal * 1000.0).round() / 1000.0, "verdict": verdict}),
            );
        }
        out["ratios"] = Value::Object(ratios);
    }
    out
}

/// How far passes of the same work differ: (slowest to fastest) / fastest.
fn pass_spread(passes: &[f64]) -> f64 {
    let best = passes.iter().copied().fold(0.0, f64::max);
    let worst = passes.iter().copied().fold(f64::INFINITY, f64::min);
    if best > 0.0 {
        ((best - worst) / best * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

/// The efficiency goal's verdict over the rounds: met when every round reaches the goal and the
/// rounds lie within the allowed spread. When the limit itself (decode alone, pass to pass within
/// a round) moves by more than that spread, the machine cannot resolve the goal, and the verdict
/// says so beside what the rounds showed.
fn efficiency_verdict(efficiency: &Value, limit_pass_spread: &Value) -> String {
    let (Some(lo), Some(hi)) = (efficiency["min"].as_f64(), efficiency["max"].as_f64()) else {
        return "not measured".into();
    };
    if lo >= EFFICIENCY_GOAL && hi - lo <= EFFICIENCY_SPREAD {
        return "met in every round, within the spread".into();
    }
    let shown = if lo >= EFFICIENCY_GOAL {
        format!("every round reached {EFFICIENCY_GOAL} but the rounds spread {:.3}", hi - lo)
    } else if hi >= EFFICIENCY_GOAL {
        "undecided: the rounds' spread straddles the goal".to_string()
    } else {
        "not met in any round".to_string()
    };
    match limit_pass_spread["median"].as_f64() {
        Some(noise) if noise > EFFICIENCY_SPREAD => format!(
            "{shown}; the limit itself moves {noise:.3} between passes of the same decode in a round (median), more than the goal's {EFFICIENCY_SPREAD} spread: this machine cannot resolve the goal"
        ),
        _ => shown,
    }
}

/// "met" or "not met" only when every round agrees; a spread that straddles the goal says so.
fn verdict(r: &Value, goal: f64, higher_is_better: bool) -> &'static str {
    let (Some(lo), Some(hi)) = (r["min"].as_f64(), r["max"].as_f64()) else { return "not measured" };
    let meets = |x: f64| if higher_is_better { x >= goal } else { x <= goal };
    match (meets(lo), meets(hi)) {
        (true, true) => "met in every round",
        (false, false) => "not met in any round",
        _ => "undecided: the rounds' spread straddles the goal",
    }
}

fn print_rounds_report(r: &Value) {
    let m = |v: &Value| {
        if v.is_null() {
            "-".to_string()
        } else {
            format!("{} ({}-{})", v["median"], v["min"], v["max"])
        }
    };
    let l = &r["linesight"];
    println!(
        "median (min-max) of {} rounds, {} frames each, decode 1/{}{}:",
        r["rounds"],
        r["frames"],
        r["decode_scale"],
        r["pace_fps"].as_f64().map_or(String::new(), |f| format!(
            ", fed at {f} frames/s (a line's pace: frames/s and efficiency follow the pace)"
        ))
    );
    println!(
        "  decode alone           {} frames/s (best of {DECODE_PASSES} passes; passes differ by {} of the best)",
        m(&l["decode_alone_fps"]),
        m(&l["decode_pass_spread"])
    );
    println!("  ONNX Runtime alone     {} frames/s", m(&l["ort_alone_fps"]));
    println!("  linesight              {} frames/s, efficiency {}", m(&l["fps"]), m(&l["efficiency"]));
    if let Some(g) = r.get("efficiency_goal") {
        println!(
            "  efficiency goal        >= {} in every round, spread <= {}: {}",
            g["goal"],
            g["spread_goal"],
            g["verdict"].as_str().unwrap_or("-")
        );
    }
    println!("  linesight CPU/frame    {} ms", m(&l["cpu_ms_per_frame"]));
    println!(
        "  linesight decision     p50 {} ms, p99 {} ms, max {} ms",
        m(&l["decision_latency_ms"]["p50"]),
        m(&l["decision_latency_ms"]["p99"]),
        m(&l["decision_latency_ms"]["max"])
    );
    if let Some(p) = r.get("peer") {
        println!(
            "  Python peer            {} frames/s, {} ms CPU/frame, RSS {} MB",
            m(&p["fps"]),
            m(&p["cpu_ms_per_frame"]),
            m(&p["rss_mb"])
        );
        println!(
            "  peer decision          p50 {} ms, p99 {} ms, max {} ms; coil acknowledged p99 {} ms",
            m(&p["decision_latency_ms"]["p50"]),
            m(&p["decision_latency_ms"]["p99"]),
            m(&p["decision_latency_ms"]["max"]),
            m(&p["coil_ack_latency_ms"]["p99"])
        );
        for (name, v) in r["ratios"].as_object().into_iter().flatten() {
            println!(
                "  {name:<22} linesight/peer {} (goal {}): {}",
                m(&v["linesight_over_peer"]),
                v["goal"],
                v["verdict"]
            );
        }
    }
    println!("  machine: {}", r["machine"]);
}

/// (a1) Decode alone, at the pipeline's reduction, through the camera's own source: the best of
/// `DECODE_PASSES` passes, so that a moment of noise on a shared machine does not lower the limit
/// (and flatter the pipeline). Every pass is returned: how far they differ is how far the machine
/// itself moves between two runs of the same work, which an efficiency goal cannot be finer than.
async fn measure_decode(video: &Path, scale: u32) -> Result<Vec<f64>, String> {
    let path = video.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<Vec<f64>, String> {
        (0..DECODE_PASSES).map(|_| decode_only(&path, scale)).collect()
    })
    .await
    .map_err(|e| e.to_string())?
}

/// (a2) Raw ONNX Runtime on tensors prepared in advance: frames/s and the execution provider.
async fn measure_ort(args: &BenchArgs, video: &Path) -> Result<(f64, String), String> {
    // The model as the pipeline will load it (the gate's address does not matter here).
    let model_cfg = bench_config(args, video, "127.0.0.1:1", None)?.config().models["model"].clone();
    let lib = runtime::library_path(&RuntimeConfig::default()).map_err(|e| e.to_string())?;
    let env = runtime::environment(&lib).map_err(|e| e.to_string())?;
    let (threads, path) = (args.threads, video.to_path_buf());
    tokio::task::spawn_blocking(move || ort_only(env, &model_cfg, threads, &path)).await.map_err(|e| e.to_string())?
}

/// Decode-alone passes per round; the limit is the best of them.
const DECODE_PASSES: usize = 3;

/// Issue 14's efficiency goal: the pipeline at this share of its limit in every round, with the
/// rounds within `EFFICIENCY_SPREAD` of each other.
const EFFICIENCY_GOAL: f64 = 0.97;
const EFFICIENCY_SPREAD: f64 = 0.03;

/// The stages alone; the slower one is the most the pipeline can reach.
struct Limits {
    /// Every decode-alone pass of the round.
    decode_passes: Vec<f64>,
    ort_fps: f64,
    provider: String,
}

impl Limits {
    fn fps(&self) -> f64 {
        self.decode_fps().min(self.ort_fps)
    }

    /// Decode alone: the best pass.
    fn decode_fps(&self) -> f64 {
        self.decode_passes.iter().copied().fold(0.0, f64::max)
    }
}

/// What the whole pipeline did.
struct PipelineRun {
    fps: f64,
    frames: u64,
    /// The final stats document.
    stats: Value,
    /// Reject pulses the PLC saw.
    pulses: usize,
    /// CPU seconds of this process during the run.
    cpu: f64,
    /// The VM's steal during the run, ms ([`steal_ms`]).
    steal_ms: f64,
}

impl PipelineRun {
    /// The stats of the bench's one task.
    fn task(&self) -> Value {
        self.stats["tasks"].as_object().and_then(|m| m.values().next()).cloned().unwrap_or_default()
    }
}

/// (b)-(d) The whole pipeline, with the CPU time it took.
async fn measure_pipeline(args: &BenchArgs, video: &Path) -> Result<PipelineRun, String> {
    let (cpu0, steal0) = (cpu_seconds(), steal_ms());
    let (fps, frames, stats, pulses) = pipeline(args, video, None).await?;
    let cpu = cpu_seconds() - cpu0;
    Ok(PipelineRun { fps, frames, stats, pulses, cpu, steal_ms: steal_ms() - steal0 })
}

/// The report of the default bench, as `--json` prints it.
fn pipeline_report(args: &BenchArgs, limits: &Limits, run: &PipelineRun) -> Value {
    let task = run.task();
    let latency = &task["capture_to_reject_ack_ms"];
    json!({
        "decode_fps": round1(limits.decode_fps()),
        "decode_passes_fps": limits.decode_passes.iter().map(|f| round1(*f)).collect::<Vec<_>>(),
        "decode_pass_spread": pass_spread(&limits.decode_passes),
        "ort_limit_fps": round1(limits.ort_fps),
        "limit_fps": round1(limits.fps()),
        "pipeline_fps": round1(run.fps),
        "efficiency": (run.fps / limits.fps() * 1000.0).round() / 1000.0,
        "cpu_ms_per_frame": round1(run.cpu * 1e3 / run.frames.max(1) as f64),
        "rss_mb": round1(peak_rss_mb()),
        "vm_steal_ms": round1(run.steal_ms),
        "latency_ms": {"p50": latency["p50"], "p99": latency["p99"], "max": latency["max"]},
        "gate_delay_ms": BENCH_GATE_DELAY.as_millis() as u64,
        "decision_latency_ms": {
            "p50": task["capture_to_decision_ms"]["p50"],
            "p99": task["capture_to_decision_ms"]["p99"],
            "max": task["capture_to_decision_ms"]["max"],
        },
        "deadline_misses": task["deadline_misses"],
        "frames": run.frames,
        "ok": task["ok"], "ng": task["ng"], "error": task["error"],
        "rejects_fired": task["rejects_fired"], "rejects_failed": task["rejects_failed"], "reject_pulses_seen_by_plc": run.pulses,
        "resolution": format!("{}x{}", args.width, args.height),
        "threads": args.threads,
        "provider": limits.provider,
        "machine": machine(),
    })
}

/// Make (once) the test video: the sample clip scaled to the bench resolution.
fn make_video(args: &BenchArgs) -> Result<PathBuf, String> {
    let dir = PathBuf::from(".cache/bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let out = dir.join(format!("line-{}x{}-{}.avi", args.width, args.height, args.frames));
    if out.is_file() {
        return Ok(out);
    }
    let mut src =
        videoio::VideoCapture::from_file(&*args.source.to_string_lossy(), videoio::CAP_ANY).map_err(|e| e.message)?;
    if !src.is_opened().unwrap_or(false) {
        return Err(format!("cannot open {} (run from the repository root)", args.source.display()));
    }
    let mut clip = Vec::new();
    let mut f = Mat::default();
    while src.read(&mut f).unwrap_or(false) && !f.empty() {
        let mut big = Mat::default();
        imgproc::resize(&f, &mut big, Size::new(args.width, args.height), 0.0, 0.0, imgproc::INTER_LINEAR)
            .map_err(|e| e.message)?;
        clip.push(big);
    }
    if clip.is_empty() {
        return Err(format!("{} has no frames", args.source.display()));
    }
    let tmp = dir.join("partial.avi");
    let fourcc = videoio::VideoWriter::fourcc('M', 'J', 'P', 'G').map_err(|e| e.message)?;
    let mut w =
        videoio::VideoWriter::new(&*tmp.to_string_lossy(), fourcc, 30.0, Size::new(args.width, args.height), true)
            .map_err(|e| e.message)?;
    if !w.is_opened().unwrap_or(false) {
        return Err("OpenCV cannot write MJPG video here".into());
    }
    for i in 0..args.frames {
        w.write(&clip[i % clip.len()]).map_err(|e| e.message)?;
    }
    w.release().map_err(|e| e.message)?;
    std::fs::rename(&tmp, &out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn decode_only(path: &Path, scale: u32) -> Result<f64, String> {
    let t = Instant::now();
    let n = decode_all(path, scale)?;
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Decode every frame of the video at 1/`scale` per side, as the camera does; returns how many
/// there were.
fn decode_all(path: &Path, scale: u32) -> Result<usize, String> {
    let source = SourceConfig::File(path.to_path_buf());
    let mut src = crate::camera::source::open(&source, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    let got = src.reduce(scale);
    if got != scale {
        return Err(format!("{} cannot be decoded at 1/{scale} (got 1/{got})", path.display()));
    }
    let mut n = 0usize;
    while src.next_frame().map_err(|e| e.to_string())?.is_some() {
        n += 1;
    }
    Ok(n)
}

fn ort_only(
    env: &'static ort::environment::Environment,
    cfg: &ModelConfig,
    threads: usize,
    video: &Path,
) -> Result<(f64, String), String> {
    let mut model = Classifier::load(env, cfg, threads).map_err(|e| e.to_string())?;
    // Tensors from real frames, prepared before the clock starts.
    let mut cap =
        videoio::VideoCapture::from_file(&*video.to_string_lossy(), videoio::CAP_ANY).map_err(|e| e.message)?;
    let mut tensors = Vec::new();
    let mut f = Mat::default();
    while tensors.len() < 32 && cap.read(&mut f).unwrap_or(false) && !f.empty() {
        let mut t = Vec::new();
        model.preprocess(&f, &mut t)?;
        tensors.push(t);
    }
    for t in tensors.iter().take(5) {
        model.run_prepared(1, t.clone())?;
    }
    let runs = 400;
    let inputs: Vec<Vec<f32>> = (0..runs).map(|i| tensors[i % tensors.len()].clone()).collect();
    let t = Instant::now();
    for input in inputs {
        model.run_prepared(1, input)?;
    }
    Ok((runs as f64 / t.elapsed().as_secs_f64(), model.provider.to_string()))
}

/// The whole pipeline over the test video; with `viewers`, its operator page on a free port and
/// that many viewers on it for the whole run.
async fn pipeline(args: &BenchArgs, video: &Path, viewers: Option<usize>) -> Result<(f64, u64, Value, usize), String> {
    pipeline_with(args, video, viewers, None).await
}

/// The same, with a candidate shadowed from the first frame on (`linesight bench --shadow`).
async fn pipeline_with(
    args: &BenchArgs,
    video: &Path,
    viewers: Option<usize>,
    shadow: Option<shadow::Candidate>,
) -> Result<(f64, u64, Value, usize), String> {
    let plc = SimPlc::start("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let broker = Broker::start().ok();
    let mut cfg = bench_config(args, video, &plc.addr.to_string(), broker.as_ref().map(|b| b.port))?;
    let mut openers = std::collections::BTreeMap::new();
    let mut gate = None;
    if let Some(c) = &shadow {
        cfg = cfg.edited(|cfg| c.trust(cfg)).map_err(|e| e.to_string())?;
        let (opener, open) = shadow::gated(&cfg.config().cameras["cam"]);
        openers.insert("cam".to_string(), opener);
        gate = Some(open);
    }
    if viewers.is_some() {
        cfg = cfg
            .edited(|c| {
                c.http = Some(HttpConfig {
                    listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                    token_file: None,
                    live_fps: 4.0,
                    gallery: 24,
                    tls: None,
                })
            })
            .map_err(|e| e.to_string())?;
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let t0 = Instant::now();
    let running = app::start(&cfg, app::Options { observer: Some(tx), openers }).await.map_err(|e| e.to_string())?;
    if let (Some(c), Some(open)) = (&shadow, gate) {
        // The camera opens once the candidate is attached: every frame can be offered to it.
        let installed = c.install(&running).await;
        open();
        installed?;
    }
    let load = t0.elapsed();
    let stats = running.stats.clone();
    let watching: Vec<_> = match (viewers, running.http_addr) {
        (Some(n), Some(addr)) => (0..n).map(|_| tokio::spawn(viewers::watch(addr, "cam"))).collect(),
        _ => Vec::new(),
    };
    let run = tokio::spawn(running.run_until(std::future::pending()));
    // Time from the first result to the last, plus one mean frame time for the first.
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut n = 0u64;
    while let Some(_doc) = rx.recv().await {
        let now = Instant::now();
        first.get_or_insert(now);
        last = now;
        n += 1;
    }
    let final_stats = run.await.map_err(|e| e.to_string())?.stats;
    for w in watching {
        w.abort();
    }
    let span = last.duration_since(first.unwrap_or(last)).as_secs_f64();
    let fps = if n > 1 { (n - 1) as f64 / span } else { 0.0 };
    let _ = (load, stats.tasks.values().map(|t| t.stats.processed.load(Ordering::Relaxed)).sum::<u64>());
    drop(broker);
    Ok((fps, n, final_stats, plc.pulses(10)))
}

/// Camera-to-gate time in the pipeline bench.
const BENCH_GATE_DELAY: Duration = Duration::from_millis(100);

/// The bench's node, written as a config file and loaded the way
/// `check-config` loads one, so that the bench runs nothing a node could not
/// be configured to run: the test video as a part-per-frame camera, the model,
/// a reject gate on a coil of the Modbus device at `plc`, and telemetry to a
/// local broker on `broker_port` (none without).
fn bench_config(args: &BenchArgs, video: &Path, plc: &str, broker_port: Option<u16>) -> Result<LoadedConfig, String> {
    let mqtt = match broker_port {
        Some(port) => format!("mqtt: {{ host: 127.0.0.1, port: {port}, stats_interval: 1s }}\n"),
        None => String::new(),
    };
    let yaml = format!(
        r#"node: {{ group_id: bench, node_id: bench }}
{mqtt}modbus:
  devices:
    plc: {{ tcp: {plc}, unit: 1, timeout: 500ms, addressing: zero-based }}
  outputs:
    reject_gate: {{ device: plc, area: coil, address: 10, safe_state: off }}
cameras:
  cam: {camera}
models:
  model: {model}
tasks:
  bench:
    camera: cam
    model: model
    # The gate is a short way downstream: every verdict must be in before
    # its part arrives (else it is a deadline miss, counted), and the
    # latency to the acknowledged reject is this delay plus the write.
    reject: {{ output: reject_gate, delay: {gate}ms, pulse: 500us }}
    # As generous as check-config allows: the time to the gate. A verdict
    # later than that would come after its part had passed the gate; here
    # the part gets ERROR instead (counted), and the gate fires for it.
    inference_timeout: {gate}ms
runtime: {{ threads: {threads}, state_dir: {state} }}
"#,
        plc = yaml_string(plc),
        camera = camera_yaml(video, args.pace, &args.decode)?,
        model = model_yaml(args, 1)?,
        gate = BENCH_GATE_DELAY.as_millis(),
        threads = args.threads,
        state = path_yaml(&state_dir())?,
    );
    load_config(&yaml)
}

/// The bench's own state directory (command ids, the run marker), away from a daemon's.
pub(super) fn state_dir() -> PathBuf {
    std::env::temp_dir().join(format!("linesight-bench-{}", std::process::id()))
}

/// A file camera on the test video, one part per frame, at `fps` or (without)
/// as fast as inspection takes its frames; the file is read once.
fn camera_yaml(video: &Path, fps: Option<f64>, decode: &str) -> Result<String, String> {
    let fps = fps.map_or(String::new(), |f| format!(" fps: {f},"));
    Ok(format!(
        "{{ source: {{ file: {} }}, mode: part-per-frame,{fps} loop: false, queue: 4, stall_frames: 3, timeout: 5s, decode: {} }}",
        path_yaml(video)?,
        yaml_string(decode)
    ))
}

/// The model under test on the CPU with `--threads`, in batches of up to `batch`.
fn model_yaml(args: &BenchArgs, batch: usize) -> Result<String, String> {
    Ok(format!(
        "{{ path: {}, batch: {batch}, batch_wait: 2ms, providers: [ {{ cpu: {{ threads: {} }} }} ] }}",
        path_yaml(&args.model)?,
        args.threads
    ))
}

/// `s` as a double-quoted YAML scalar (JSON's escapes are YAML's too).
fn yaml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn path_yaml(path: &Path) -> Result<String, String> {
    path.to_str().map(yaml_string).ok_or_else(|| format!("{}: the bench needs a path in UTF-8", path.display()))
}

/// Parse and validate config text the bench wrote (relative paths stay
/// relative to the working directory); every problem is named.
pub(super) fn load_config(yaml: &str) -> Result<LoadedConfig, String> {
    crate::config::load_str(yaml, "bench config", Path::new(""))
        .map_err(|e| format!("the config the bench would run is not valid:\n{e}"))
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the command name (which may contain spaces) start after ") ".
    let rest = stat.rsplit_once(") ").map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the full line: 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU time the hypervisor gave to other guests while this machine's CPUs were waiting for it:
/// the `steal` column of /proc/stat (all CPUs, in its 1/100 s ticks), in ms since boot; 0 where
/// it is not reported (bare metal). The difference over a run says how long the run's machine
/// was not its own: figures from a run with steal are the host's as much as ours.
pub(crate) fn steal_ms() -> f64 {
    std::fs::read_to_string("/proc/stat").ok().and_then(|stat| steal_ticks(&stat)).map_or(0.0, |t| t * 10.0)
}

/// The steal column of /proc/stat's all-CPU line: `cpu user nice system idle iowait irq softirq
/// steal ...`.
fn steal_ticks(stat: &str) -> Option<f64> {
    let cpu = stat.lines().find(|l| l.starts_with("cpu "))?;
    cpu.split_whitespace().nth(8)?.parse().ok()
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("{cpu}, {cores} cores, {}", std::env::consts::ARCH)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The bench's arguments as clap gives them for `bench ARGS...`.
    pub(in crate::cli::bench) fn args(argv: &[&str]) -> BenchArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        Cli::parse_from(std::iter::once("bench").chain(argv.iter().copied())).bench
    }

    #[test]
    fn the_bench_config_is_one_check_config_accepts() {
        let dir = tempfile::tempdir().unwrap();
        // Quotes, a backslash and `: ` must reach the config as they are.
        let video = dir.path().join(r#"a "b" \c: d.avi"#);
        std::fs::write(&video, b"").unwrap();
        let loaded = bench_config(&args(&["--threads", "2"]), &video, "127.0.0.1:5020", Some(1883)).unwrap();
        let cfg = loaded.config();
        assert!(matches!(&cfg.cameras["cam"].source, SourceConfig::File(p) if *p == video));
        assert_eq!(
            cfg.models["model"].path,
            PathBuf::from("models/surface-classifier.onnx"),
            "relative stays relative"
        );
        assert_eq!(cfg.modbus.devices["plc"].tcp.as_deref(), Some("127.0.0.1:5020"));
        assert_eq!(cfg.mqtt.as_ref().map(|m| (m.port, m.stats_interval)), Some((1883, Dur::from_secs(1))));
        let task = &cfg.tasks["bench"];
        let reject = task.reject.as_ref().unwrap();
        assert_eq!((reject.delay, reject.pulse), (Some(Dur(BENCH_GATE_DELAY)), Dur(Duration::from_micros(500))));
        assert_eq!(task.inference_timeout, Dur(BENCH_GATE_DELAY));
        assert_eq!(cfg.runtime.threads, Some(2));
        assert!(bench_config(&args(&[]), &video, "127.0.0.1:5020", None).unwrap().config().mqtt.is_none());
    }

    #[test]
    fn a_bench_config_check_config_would_refuse_is_an_error_naming_the_problem() {
        let video = PathBuf::from("samples/line.avi");
        let e = bench_config(&args(&["--threads", "0"]), &video, "127.0.0.1:5020", None).unwrap_err();
        assert!(e.contains("thread budget 0 is out of range"), "{e}");
        let e = bench_config(&args(&["--model", "/nonexistent.onnx"]), &video, "127.0.0.1:5020", None).unwrap_err();
        assert!(e.contains("model file `/nonexistent.onnx` does not exist"), "{e}");
    }

    #[test]
    fn steal_is_the_eighth_column_of_the_all_cpu_line() {
        let stat = "cpu  906389 700961 166761 3192888 21563 0 17554 9650 0 0\ncpu0 404425 306233 72439 1706696 4572 0 8649 4833 0 0\n";
        assert_eq!(steal_ticks(stat), Some(9650.0));
        // A kernel too old to report steal (fewer columns), or no all-CPU line.
        assert_eq!(steal_ticks("cpu  1 2 3 4 5 6 7\n"), None);
        assert_eq!(steal_ticks("cpu0 1 2 3 4 5 6 7 8\n"), None);
    }

    #[test]
    fn the_efficiency_goal_needs_every_round_and_a_limit_steadier_than_its_margin() {
        let e = |lo: f64, hi: f64| json!({"median": (lo + hi) / 2.0, "min": lo, "max": hi});
        let steady = json!({"median": 0.01});
        let noisy = json!({"median": 0.08});
        assert_eq!(efficiency_verdict(&e(0.975, 0.99), &steady), "met in every round, within the spread");
        // Met, but the machine moves more than the goal's margin: still met (every round was).
        assert_eq!(efficiency_verdict(&e(0.975, 0.99), &noisy), "met in every round, within the spread");
        assert!(efficiency_verdict(&e(0.97, 1.05), &steady).contains("rounds spread 0.080"));
        assert_eq!(efficiency_verdict(&e(0.90, 0.98), &steady), "undecided: the rounds' spread straddles the goal");
        assert_eq!(efficiency_verdict(&e(0.80, 0.92), &steady), "not met in any round");
        let v = efficiency_verdict(&e(0.80, 0.92), &noisy);
        assert!(v.starts_with("not met in any round; the limit itself moves 0.080"), "{v}");
        assert!(v.ends_with("this machine cannot resolve the goal"), "{v}");
        assert_eq!(pass_spread(&[600.0, 570.0, 588.0]), 0.05);
        assert_eq!(pass_spread(&[]), 0.0);
    }

    #[test]
    fn at_a_pace_the_peer_is_compared_on_cpu_and_latency_not_frames_per_second() {
        let ours = json!({"pipeline_fps": 99.7, "cpu_ms_per_frame": 5.0, "decision_latency_ms": {"p99": 2.5}});
        let peer = json!({"fps": 100.0, "cpu_ms_per_frame": 10.0, "decision_latency_ms": {"p99": 3.0}});
        let rounds = vec![(ours.clone(), Some(peer.clone())), (ours, Some(peer))];
        let paced = rounds_report(&args(&["--peer", "--pace", "100"]), 8, &rounds);
        let names: Vec<&String> = paced["ratios"].as_object().unwrap().keys().collect();
        assert_eq!(names, ["cpu_ms_per_frame", "decision_p99"], "{paced}");
        assert_eq!(paced["pace_fps"], 100.0);
        assert_eq!(paced["ratios"]["cpu_ms_per_frame"]["verdict"], "met in every round");
        let free = rounds_report(&args(&["--peer"]), 8, &rounds);
        assert_eq!(free["ratios"]["fps"]["verdict"], "not met in any round", "{free}");
    }
}
