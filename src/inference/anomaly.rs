//! The anomalib adapter: PatchCore, PaDiM and the others exported with
//! anomalib's own `to_onnx`.
//!
//! The graph takes `input` f32 `[N, 3, H, W]`, RGB in 0..1; resizing to the
//! training size and ImageNet normalisation happen inside it, but scores only
//! match training when the frame is resized to that size first (anomalib
//! #2747), so the adapter does. The outputs, in this order and only those the
//! model has: `pred_score` `[N]` (normalised so that the learned threshold is
//! 0.5), `pred_label` `[N]` bool, `anomaly_map` `[N, 1, h, w]`, `pred_mask`
//! `[N, 1, h, w]` bool. anomalib writes no metadata into the file, so a
//! sidecar (`<model>.json`) gives the input size and the threshold.

use std::path::{Path, PathBuf};
use std::time::Instant;

use opencv::core::{Mat, Size};
use opencv::imgproc;
use opencv::prelude::*;
use ort::session::Session;
use ort::value::{Tensor, TensorElementType, ValueType};
use serde::{Deserialize, Serialize};

use super::classifier::{sidecar_for, Timing};
use super::runtime::{build_session, ProviderReport, RuntimeError};
use crate::config::ModelConfig;
use crate::part::{AnomalyResult, HeatMap};

/// What the sidecar says. Unknown keys are allowed: the training script
/// records its metrics and versions there too.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AnomalyContract {
    /// Must be `anomaly`.
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    pub input: AnomalyInput,
    /// The score at and above which a part is NG; 0.5 for anomalib's normalised scores.
    #[serde(default = "half")]
    pub threshold: f32,
}

fn half() -> f32 {
    0.5
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AnomalyInput {
    /// The training image size: frames are resized to it before the graph.
    pub width: u32,
    pub height: u32,
}

pub struct Anomaly {
    session: Session,
    pub contract: AnomalyContract,
    input: String,
    /// Output names as the model has them.
    score: String,
    label: Option<String>,
    map: Option<String>,
    mask: Option<String>,
    batch: Option<usize>,
    pub provider: &'static str,
    pub providers: Vec<ProviderReport>,
    pub sha256: String,
    pub path: PathBuf,
}

/// The sidecar of an anomaly model, if it exists and says `kind: anomaly`.
pub fn sidecar_says_anomaly(cfg: &ModelConfig) -> bool {
    let path = cfg.sidecar.clone().unwrap_or_else(|| sidecar_for(&cfg.path));
    std::fs::read_to_string(path).ok().is_some_and(|t| says_anomaly(&t))
}

/// Whether a sidecar's text is JSON saying `kind: anomaly`.
pub fn says_anomaly(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text).ok().is_some_and(|v| v["kind"] == "anomaly")
}

fn read_contract(cfg: &ModelConfig) -> Result<AnomalyContract, String> {
    let path = cfg.sidecar.clone().unwrap_or_else(|| sidecar_for(&cfg.path));
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "anomalib writes no metadata into the ONNX file, so it needs a sidecar `{}` ({e}); write {{\"kind\": \"anomaly\", \"input\": {{\"width\": W, \"height\": H}}, \"threshold\": 0.5}} with the training image size",
            path.display()
        )
    })?;
    parse_contract(&text, &path)
}

/// An anomaly sidecar's text, checked; errors name the sidecar `path`.
pub fn parse_contract(text: &str, path: &Path) -> Result<AnomalyContract, String> {
    let c: AnomalyContract =
        serde_json::from_str(text).map_err(|e| format!("sidecar `{}` is not valid: {e}", path.display()))?;
    if c.kind != "anomaly" {
        return Err(format!("sidecar `{}` says kind `{}`; an anomaly model's says `anomaly`", path.display(), c.kind));
    }
    if c.input.width == 0 || c.input.height == 0 || c.input.width > 8192 || c.input.height > 8192 {
        return Err(format!(
            "sidecar `{}`: input size {}x{} is out of range",
            path.display(),
            c.input.width,
            c.input.height
        ));
    }
    if !(c.threshold > 0.0 && c.threshold <= 1.0) {
        return Err(format!("sidecar `{}`: threshold {} is outside (0, 1]", path.display(), c.threshold));
    }
    Ok(c)
}

impl Anomaly {
    pub fn load(env: &ort::environment::Environment, cfg: &ModelConfig, threads: usize) -> Result<Self, RuntimeError> {
        let fail = |why: String| RuntimeError::Model { path: cfg.path.clone(), why };
        let contract = read_contract(cfg).map_err(fail)?;
        let (bytes, sha256) = super::runtime::read_model(cfg)?;
        let built = build_session(env, &cfg.path, &bytes, &cfg.providers, threads)?;
        drop(bytes);
        let io = check_io(&built.session, &contract).map_err(fail)?;
        Ok(Anomaly {
            session: built.session,
            contract,
            input: io.input,
            score: io.score,
            label: io.label,
            map: io.map,
            mask: io.mask,
            batch: io.batch,
            provider: built.provider,
            providers: built.reports,
            sha256,
            path: cfg.path.clone(),
        })
    }

    pub fn max_batch(&self) -> Option<usize> {
        self.batch
    }

    /// Resize a BGR frame to the training size, RGB, 0..1, planar (appended to `out`).
    pub fn preprocess(&self, frame: &Mat, out: &mut Vec<f32>) -> Result<(), String> {
        let (w, h) = (self.contract.input.width, self.contract.input.height);
        if frame.cols() == 0 || frame.rows() == 0 {
            return Err("empty image".into());
        }
        let bgr = super::to_bgr(frame)?;
        let mut resized = Mat::default();
        imgproc::resize(&*bgr, &mut resized, Size::new(w as i32, h as i32), 0.0, 0.0, imgproc::INTER_LINEAR)
            .map_err(|e| e.message)?;
        let data = resized.data_bytes().map_err(|e| e.message)?;
        let plane = (w * h) as usize;
        let start = out.len();
        out.resize(start + 3 * plane, 0.0);
        let dst = &mut out[start..];
        for (i, px) in data.chunks_exact(3).enumerate() {
            dst[i] = f32::from(px[2]) / 255.0;
            dst[plane + i] = f32::from(px[1]) / 255.0;
            dst[2 * plane + i] = f32::from(px[0]) / 255.0;
        }
        Ok(())
    }

    /// Only `Session::run` on `n` prepared frames.
    pub fn run_prepared(&mut self, n: usize, data: Vec<f32>) -> Result<Vec<AnomalyResult>, String> {
        let (w, h) = (self.contract.input.width as usize, self.contract.input.height as usize);
        let tensor = Tensor::from_array(([n, 3, h, w], data)).map_err(|e| e.to_string())?;
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => tensor])
            .map_err(|e| format!("inference failed: {e}"))?;
        let mut results: Vec<AnomalyResult> = {
            let v = outputs.get(&self.score).ok_or_else(|| format!("the model returned no `{}`", self.score))?;
            let (_, s) = v.try_extract_tensor::<f32>().map_err(|e| e.to_string())?;
            if s.len() != n {
                return Err(format!("`{}` holds {} values for {n} frames", self.score, s.len()));
            }
            s.iter()
                .map(|&score| AnomalyResult {
                    score,
                    label: None,
                    map_max: None,
                    map_shape: None,
                    mask_area: None,
                    map: None,
                })
                .collect()
        };
        // The optional outputs, read where they lie. The map is copied once, into the shared heat
        // map the page draws: h x w floats (64k at 256x256, a few microseconds beside a PatchCore
        // run of tens of milliseconds).
        let present = |name: &Option<String>| name.as_ref().and_then(|k| outputs.get(k));
        if let Some(v) = present(&self.label) {
            let (_, l) = v.try_extract_tensor::<bool>().map_err(|e| e.to_string())?;
            for (r, chunk) in results.iter_mut().zip(l.chunks(per_frame(l.len(), n))) {
                r.label = chunk.first().copied();
            }
        }
        if let Some(v) = present(&self.map) {
            let (shape, m) = v.try_extract_tensor::<f32>().map_err(|e| e.to_string())?;
            let [.., h, w] = shape[..] else {
                return Err(format!("`anomaly_map` has shape {:?}, expected [N, 1, h, w]", &shape[..]));
            };
            let hw = [h as usize, w as usize];
            for (r, chunk) in results.iter_mut().zip(m.chunks(per_frame(m.len(), n))) {
                r.map_max = Some(chunk.iter().copied().fold(f32::NEG_INFINITY, f32::max));
                r.map_shape = Some(hw);
                if chunk.len() == hw[0] * hw[1] {
                    r.map = Some(HeatMap { height: hw[0], width: hw[1], values: chunk.into() });
                }
            }
        }
        if let Some(v) = present(&self.mask) {
            let (_, m) = v.try_extract_tensor::<bool>().map_err(|e| e.to_string())?;
            for (r, chunk) in results.iter_mut().zip(m.chunks(per_frame(m.len(), n))) {
                r.mask_area = Some(chunk.iter().filter(|b| **b).count());
            }
        }
        Ok(results)
    }

    /// Judge several frames in one call.
    pub fn score_many(&mut self, frames: &[&Mat]) -> Result<(Vec<AnomalyResult>, Timing), String> {
        let n = frames.len();
        super::check_batch(n, self.batch)?;
        let t0 = Instant::now();
        let (w, h) = (self.contract.input.width as usize, self.contract.input.height as usize);
        let mut data = Vec::with_capacity(3 * w * h * n);
        for f in frames {
            self.preprocess(f, &mut data)?;
        }
        let t1 = Instant::now();
        let out = self.run_prepared(n, data)?;
        let t2 = Instant::now();
        Ok((out, Timing::between(t0, t1, t2)))
    }
}

/// Values per frame of an output holding `len` values for `n` frames (at least 1, for `chunks`).
fn per_frame(len: usize, n: usize) -> usize {
    (len / n.max(1)).max(1)
}

struct Io {
    input: String,
    score: String,
    label: Option<String>,
    map: Option<String>,
    mask: Option<String>,
    batch: Option<usize>,
}

/// The session must look like an anomalib export of the sidecar's size.
fn check_io(session: &Session, c: &AnomalyContract) -> Result<Io, String> {
    let describe = |ty: &ValueType| match (ty.tensor_type(), ty.tensor_shape()) {
        (Some(t), Some(s)) => format!("{t:?} {:?}", &s[..]),
        _ => format!("{ty:?}"),
    };
    let found = || {
        let i: Vec<String> =
            session.inputs().iter().map(|i| format!("`{}` {}", i.name(), describe(i.dtype()))).collect();
        let o: Vec<String> =
            session.outputs().iter().map(|o| format!("`{}` {}", o.name(), describe(o.dtype()))).collect();
        format!("found inputs {} and outputs {}", i.join(", "), o.join(", "))
    };
    let (h, w) = (i64::from(c.input.height), i64::from(c.input.width));
    let [input] = session.inputs() else {
        return Err(format!("an anomalib export has one input; {}", found()));
    };
    let shape = input.dtype().tensor_shape().map(|s| s.to_vec()).unwrap_or_default();
    let ok_in = input.dtype().tensor_type() == Some(TensorElementType::Float32)
        && shape.len() == 4
        && shape[1] == 3
        && (shape[2] == h || shape[2] == -1)
        && (shape[3] == w || shape[3] == -1);
    if !ok_in {
        return Err(format!("expected input Float32 [N, 3, {h}, {w}] (size from the sidecar), {}", found()));
    }
    let out = |name: &str, ty: TensorElementType| {
        session
            .outputs()
            .iter()
            .find(|o| o.name() == name && o.dtype().tensor_type() == Some(ty))
            .map(|o| o.name().to_string())
    };
    let Some(score) = out("pred_score", TensorElementType::Float32) else {
        return Err(format!(
            "expected output `pred_score` Float32 [N] (and optionally `pred_label`, `anomaly_map`, `pred_mask`) as anomalib's exporter writes them, {}",
            found()
        ));
    };
    let map = out("anomaly_map", TensorElementType::Float32);
    let map_shape =
        session.outputs().iter().find(|o| Some(o.name()) == map.as_deref()).and_then(|o| o.dtype().tensor_shape());
    // The map's height and width are its last two dimensions: a map of lower rank is no image.
    if map_shape.is_some_and(|s| s.len() < 2) {
        return Err(format!(
            "expected `anomaly_map` Float32 [N, 1, h, w] as anomalib's exporter writes it, {}",
            found()
        ));
    }
    Ok(Io {
        input: input.name().to_string(),
        score,
        label: out("pred_label", TensorElementType::Bool),
        map,
        mask: out("pred_mask", TensorElementType::Bool),
        batch: usize::try_from(shape[0]).ok(),
    })
}
