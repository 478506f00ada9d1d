//! `linesight bench --shadow`: does a candidate in shadow mode slow production? The pipeline
//! bench, alternately without a shadow and with one (the same model, packed, signed and
//! installed as a candidate the way an operator would, attached before the first frame), in
//! `--rounds` rounds whose order alternates (off, on; on, off; ...) so that a drift of the
//! machine falls on both arms. Reported per arm: median and spread of frames/s, CPU ms per frame
//! and capture-to-decision p50/p99; the with/without ratios; and how many frames the shadow
//! took and skipped. The bench runs as fast as inspection goes, so production saturates the
//! machine: the shadow, at the idle scheduling class, gets what is left and skips the rest.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::viewers::{arm, ratio_of_medians, round3, summary, Run};
use super::{cpu_seconds, pipeline_with, BenchArgs};
use crate::camera::{Camera, Opener};
use crate::config::{CameraConfig, Config, TrustedKeyConfig};
use crate::rollout::{keys, pack};

/// The bench's model entry (see `bench_config`).
const MODEL: &str = "model";

/// A package of the bench's model waiting in a drop folder, and the key that signed it.
pub struct Candidate {
    incoming: PathBuf,
    package: String,
    public_hex: String,
}

/// Package versions: each run installs a newer one into the same state directory.
static VERSION: AtomicU64 = AtomicU64::new(2);

impl Candidate {
    /// Pack the bench's model as a candidate, signed with a fresh key. Its golden images are the
    /// committed samples (`samples/parts`, named `NNN_<class>.png`), so this is for the committed
    /// classifier.
    pub fn make(args: &BenchArgs, work: &Path) -> Result<Candidate, String> {
        let version = VERSION.fetch_add(1, Ordering::Relaxed);
        let dir = work.join(format!("shadow-{version}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (key, public) = keys::keygen(&dir.join("bench.key"))?;
        let public_hex = std::fs::read_to_string(&public).map_err(|e| e.to_string())?.trim().to_string();
        let incoming = dir.join("incoming");
        std::fs::create_dir_all(&incoming).map_err(|e| format!("{}: {e}", incoming.display()))?;
        let mut opts = pack::PackOptions::new(args.model.clone(), MODEL, version, incoming.clone());
        opts.kind = Some("classifier".into());
        opts.golden = golden(Path::new("samples/parts"))?;
        let (out, _) = pack::pack(&opts, &key)?;
        let package = out.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        Ok(Candidate { incoming, package, public_hex })
    }

    /// The node trusts the candidate's key and takes packages from its drop folder.
    pub fn trust(&self, cfg: &mut Config) {
        cfg.rollout.trusted_keys =
            vec![TrustedKeyConfig { name: "bench".into(), public_key: Some(self.public_hex.clone()), file: None }];
        cfg.rollout.incoming = Some(self.incoming.clone());
    }

    /// Install it on the running node: checked, staged, golden images run, shadowed.
    pub async fn install(&self, running: &crate::app::Running) -> Result<(), String> {
        let rollouts = running.rollouts.as_ref().ok_or("the bench's node has no model rollout")?;
        rollouts.install(MODEL, &self.package, "bench").await
    }
}

/// Labelled stills: `NNN_good.png` must be OK, any other class NG.
fn golden(dir: &Path) -> Result<Vec<(PathBuf, String)>, String> {
    let mut out = Vec::new();
    for entry in
        std::fs::read_dir(dir).map_err(|e| format!("{}: {e}; run the bench from the repository", dir.display()))?
    {
        let path = entry.map_err(|e| e.to_string())?.path();
        let name = path.file_stem().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        if path.extension().is_some_and(|e| e == "png") {
            let verdict = if name.ends_with("_good") { "OK" } else { "NG" };
            out.push((path, verdict.to_string()));
        }
    }
    out.sort();
    Ok(out)
}

/// The camera's opener, held until `open` is called (the candidate is attached by then).
pub fn gated(cam: &CameraConfig) -> (Opener, impl FnOnce()) {
    let flag = Arc::new((Mutex::new(false), Condvar::new()));
    let mut inner = Camera::opener_for(&cam.source, cam.timeout.get());
    let waiting = flag.clone();
    let opener: Opener = Box::new(move || {
        let (lock, cv) = &*waiting;
        let open = lock.lock().unwrap_or_else(|p| p.into_inner());
        // Not forever: a failed install opens it too, and the bench reports the failure.
        let _ = cv.wait_timeout_while(open, Duration::from_secs(120), |o| !*o);
        inner()
    });
    let open = move || {
        let (lock, cv) = &*flag;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    };
    (opener, open)
}

/// One run: the figures, and with a shadow what it took and skipped and how it agreed.
async fn one(args: &BenchArgs, video: &Path, shadow: bool) -> Result<(Run, Option<Value>), String> {
    let candidate = if shadow { Some(Candidate::make(args, &super::state_dir())?) } else { None };
    let cpu0 = cpu_seconds();
    let (fps, frames, stats, _) = pipeline_with(args, video, None, candidate).await?;
    let run = Run::of(fps, frames, cpu_seconds() - cpu0, &stats);
    let figures = shadow.then(|| {
        let taps = &stats["models"][MODEL]["shadow"];
        let table = stats["tasks"].as_object().and_then(|t| t.values().next()).map(|t| t["shadow"].clone());
        json!({"frames": taps, "agreement": table})
    });
    Ok((run, figures))
}

pub async fn run(args: &BenchArgs, video: &Path) -> Result<Value, String> {
    if args.model != Path::new("models/surface-classifier.onnx") {
        return Err("bench --shadow packs the committed classifier with samples/parts as golden images; leave --model at its default".into());
    }
    let (mut without, mut with, mut shadows) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds.max(1) {
        let order = if round % 2 == 0 { [false, true] } else { [true, false] };
        for on in order {
            let (r, figures) = one(args, video, on).await?;
            if !args.json {
                eprintln!(
                    "round {} shadow {}: {:.1} frames/s, {:.2} ms CPU per frame, decision p50 {:.2} ms p99 {:.2} ms{}",
                    round + 1,
                    if on { "on " } else { "off" },
                    r.fps,
                    r.cpu_ms_per_frame,
                    r.p50,
                    r.p99,
                    figures.as_ref().map_or(String::new(), |f| format!(
                        "; shadow took {} of {} frames",
                        f["frames"]["offered"].as_u64().unwrap_or(0) - f["frames"]["skipped"].as_u64().unwrap_or(0),
                        f["frames"]["offered"]
                    ))
                );
            }
            if on {
                with.push(r);
                shadows.extend(figures);
            } else {
                without.push(r);
            }
        }
    }
    let ratio = |f: fn(&Run) -> f64| ratio_of_medians(&with, &without, f);
    let (fps_median, fps_spread) = summary(without.iter().map(|r| r.fps).collect());
    Ok(json!({
        "rounds": args.rounds,
        "frames_per_run": args.frames,
        "without_shadow": arm(&without),
        "with_shadow": arm(&with),
        "ratio_with_to_without": {
            "fps": ratio(|r| r.fps),
            "cpu_ms_per_frame": ratio(|r| r.cpu_ms_per_frame),
            "decision_p50_ms": ratio(|r| r.p50),
            "decision_p99_ms": ratio(|r| r.p99),
        },
        // A ratio inside the runs' own spread says "no difference measurable", not a winner.
        "fps_relative_spread_without_shadow": round3(fps_spread / fps_median),
        "shadow": shadows,
        "machine": super::machine(),
        "resolution": format!("{}x{}", args.width, args.height),
        "threads": args.threads,
    }))
}
