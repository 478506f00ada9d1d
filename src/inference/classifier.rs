//! The N-class image classifier adapter.
//!
//! Preprocessing is never hard-coded: it comes from the model's contract,
//! a JSON document the training script writes into the ONNX metadata (key
//! `linesight`) and beside the model (`<model>.json`). The contract is
//! checked against the session's real inputs and outputs at load, so a
//! mismatched model is refused with what was expected and what was found.

use std::path::{Path, PathBuf};
use std::time::Instant;

use opencv::core::{Mat, Size};
use opencv::imgproc;
use opencv::prelude::*;
use ort::session::Session;
use ort::value::{Tensor, ValueType};
use serde::{Deserialize, Serialize};

use super::runtime::{build_session, ProviderReport, RuntimeError};
use crate::config::{ModelConfig, ModelKind};

/// The preprocessing and output contract of a classifier.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    pub kind: String,
    pub name: String,
    pub version: String,
    pub input: InputSpec,
    pub output: OutputSpec,
    pub classes: Vec<String>,
    /// Classes that mean a good part.
    pub ok_classes: Vec<String>,
    /// The NG threshold chosen on validation data by the training script.
    #[serde(default)]
    pub ng_threshold: Option<f32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// `rgb` or `bgr`: the order the model expects (frames arrive as BGR).
    pub channel_order: String,
    /// Multiplies raw 0..255 values before normalisation (1/255 for 0..1).
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// `bilinear`, `area` or `nearest`.
    pub resize: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub name: String,
    /// `logits` (softmax applied here) or `softmax`.
    pub activation: String,
}

impl Contract {
    /// A contract as written (ONNX metadata key `linesight`, or the sidecar), unchecked.
    pub fn parse(text: &str) -> Result<Contract, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Whether the contract is one this adapter can run (before it is checked against the session).
    pub fn check(&self) -> Result<(), String> {
        if self.kind != "classifier" {
            return Err(format!("its contract says kind `{}`, this adapter takes `classifier`", self.kind));
        }
        if self.classes.len() < 2 {
            return Err("its contract lists fewer than two classes".into());
        }
        for c in &self.ok_classes {
            if !self.classes.contains(c) {
                return Err(format!("ok class `{c}` is not one of its classes {:?}", self.classes));
            }
        }
        if self.ok_classes.is_empty() {
            return Err("its contract names no ok class".into());
        }
        if !matches!(self.input.channel_order.as_str(), "rgb" | "bgr") {
            return Err(format!("channel_order `{}` is neither rgb nor bgr", self.input.channel_order));
        }
        if !matches!(self.input.resize.as_str(), "bilinear" | "area" | "nearest") {
            return Err(format!("resize `{}` is not bilinear, area or nearest", self.input.resize));
        }
        if !matches!(self.output.activation.as_str(), "logits" | "softmax") {
            return Err(format!("activation `{}` is neither logits nor softmax", self.output.activation));
        }
        if self.input.width == 0 || self.input.height == 0 || self.input.width > 8192 || self.input.height > 8192 {
            return Err("its input size is out of range".into());
        }
        if self.input.std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
            return Err("its input std has a zero".into());
        }
        if let Some(t) = self.ng_threshold {
            if !(0.0..=1.0).contains(&t) {
                return Err(format!("its ng_threshold {t} is outside 0..1"));
            }
        }
        Ok(())
    }
}

/// A loaded classifier, owned by one inference thread (`Session::run` takes `&mut`).
pub struct Classifier {
    session: Session,
    pub contract: Contract,
    pub provider: &'static str,
    pub providers: Vec<ProviderReport>,
    /// sha256 of the model file, for telemetry and audit.
    pub sha256: String,
    pub path: PathBuf,
    ok_mask: Vec<bool>,
    interpolation: i32,
    /// Reused between frames to avoid a per-frame allocation.
    resized: Mat,
    /// The batch dimension: `Some(n)` when fixed, `None` when dynamic.
    batch: Option<usize>,
}

/// Timings of one inference, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    pub preprocess_ms: f64,
    pub inference_ms: f64,
}

impl Timing {
    /// Preprocessing from `t0` to `t1`, inference from `t1` to `t2`.
    pub fn between(t0: Instant, t1: Instant, t2: Instant) -> Self {
        Timing { preprocess_ms: (t1 - t0).as_secs_f64() * 1e3, inference_ms: (t2 - t1).as_secs_f64() * 1e3 }
    }
}

impl Classifier {
    pub fn load(env: &ort::environment::Environment, cfg: &ModelConfig, threads: usize) -> Result<Self, RuntimeError> {
        let fail = |why: String| RuntimeError::Model { path: cfg.path.clone(), why };
        let (bytes, sha256) = super::runtime::read_model(cfg)?;
        let built = build_session(env, &cfg.path, &bytes, &cfg.providers, threads)?;
        drop(bytes);
        let contract = read_contract(&built.session, cfg).map_err(fail)?;
        // `kind` in the config can only say `classifier` today; the contract must agree.
        if cfg.kind == Some(ModelKind::Classifier) && contract.kind != "classifier" {
            return Err(fail(format!("the config says kind `classifier`, its contract says `{}`", contract.kind)));
        }
        contract.check().map_err(|e| fail(format!("bad contract: {e}")))?;
        check_io(&built.session, &contract).map_err(fail)?;
        let batch = built
            .session
            .inputs()
            .iter()
            .find(|i| i.name() == contract.input.name)
            .and_then(|i| i.dtype().tensor_shape().and_then(|s| usize::try_from(s[0]).ok()));
        let ok_mask = contract.classes.iter().map(|c| contract.ok_classes.contains(c)).collect();
        let interpolation = match contract.input.resize.as_str() {
            "area" => imgproc::INTER_AREA,
            "nearest" => imgproc::INTER_NEAREST,
            _ => imgproc::INTER_LINEAR,
        };
        Ok(Classifier {
            session: built.session,
            contract,
            provider: built.provider,
            providers: built.reports,
            sha256,
            path: cfg.path.clone(),
            ok_mask,
            interpolation,
            resized: Mat::default(),
            batch,
        })
    }

    pub fn ok_mask(&self) -> &[bool] {
        &self.ok_mask
    }

    pub fn input_len(&self) -> usize {
        3 * self.contract.input.width as usize * self.contract.input.height as usize
    }

    /// BGR (or grey, or BGRA) frame to the model's normalised NCHW tensor, appended to `out`.
    pub fn preprocess(&mut self, frame: &Mat, out: &mut Vec<f32>) -> Result<(), String> {
        let spec = &self.contract.input;
        let bgr = super::to_bgr(frame)?;
        let src = &*bgr;
        imgproc::resize(
            src,
            &mut self.resized,
            Size::new(spec.width as i32, spec.height as i32),
            0.0,
            0.0,
            self.interpolation,
        )
        .map_err(|e| e.message.clone())?;
        let bytes = self.resized.data_bytes().map_err(|e| e.message.clone())?;
        let plane = (spec.width * spec.height) as usize;
        let base = out.len();
        out.resize(base + 3 * plane, 0.0);
        let dst = &mut out[base..];
        // Frames are BGR; channel c of the model reads source channel order[c].
        let order = if spec.channel_order == "rgb" { [2, 1, 0] } else { [0, 1, 2] };
        for c in 0..3 {
            let k = spec.scale / spec.std[c];
            let b = -spec.mean[c] / spec.std[c];
            let src_c = order[c];
            let plane_out = &mut dst[c * plane..(c + 1) * plane];
            for (i, px) in plane_out.iter_mut().enumerate() {
                *px = bytes[i * 3 + src_c] as f32 * k + b;
            }
        }
        Ok(())
    }

    /// Run a prepared batch; returns probabilities per image.
    pub fn run_prepared(&mut self, batch: usize, data: Vec<f32>) -> Result<Vec<Vec<f32>>, String> {
        let spec = &self.contract.input;
        let shape = [batch, 3, spec.height as usize, spec.width as usize];
        let tensor = Tensor::from_array((shape, data)).map_err(|e| e.to_string())?;
        let outputs = self
            .session
            .run(ort::inputs![spec.name.as_str() => tensor])
            .map_err(|e| format!("inference failed: {e}"))?;
        let out = outputs
            .get(&self.contract.output.name)
            .ok_or_else(|| format!("the model returned no output `{}`", self.contract.output.name))?;
        let (shape, values) = out.try_extract_tensor::<f32>().map_err(|e| e.to_string())?;
        let n = self.contract.classes.len();
        if shape.len() != 2 || shape[0] as usize != batch || shape[1] as usize != n {
            return Err(format!("output shape {:?}, expected [{batch}, {n}]", &shape[..]));
        }
        let logits = self.contract.output.activation == "logits";
        Ok(values.chunks(n).map(|row| if logits { softmax(row) } else { row.to_vec() }).collect())
    }

    /// Preprocess and run one frame.
    pub fn classify(&mut self, frame: &Mat) -> Result<(Vec<f32>, Timing), String> {
        let (mut probs, timing) = self.classify_many(&[frame])?;
        Ok((probs.pop().unwrap_or_default(), timing))
    }

    /// The largest batch one call may hold: `None` when the batch dimension is dynamic.
    pub fn max_batch(&self) -> Option<usize> {
        self.batch
    }

    /// Class probabilities for several frames in one inference call.
    pub fn classify_many(&mut self, frames: &[&Mat]) -> Result<(Vec<Vec<f32>>, Timing), String> {
        let n = frames.len();
        super::check_batch(n, self.batch)?;
        let t0 = Instant::now();
        let mut data = Vec::with_capacity(self.input_len() * n);
        for f in frames {
            self.preprocess(f, &mut data)?;
        }
        let t1 = Instant::now();
        let probs = self.run_prepared(n, data)?;
        let t2 = Instant::now();
        Ok((probs, Timing::between(t0, t1, t2)))
    }
}

fn read_contract(session: &Session, cfg: &ModelConfig) -> Result<Contract, String> {
    let embedded = session.metadata().ok().and_then(|m| m.custom("linesight"));
    let sidecar_path = cfg.sidecar.clone().unwrap_or_else(|| sidecar_for(&cfg.path));
    let (text, from) = match embedded {
        Some(t) => (t, "its ONNX metadata (key `linesight`)".to_string()),
        None => match std::fs::read_to_string(&sidecar_path) {
            Ok(t) => (t, format!("sidecar `{}`", sidecar_path.display())),
            Err(_) => {
                return Err(format!(
                    "it carries no `linesight` metadata and there is no sidecar `{}` — export it with tools/train_classifier.py, or write the sidecar (see docs/models.md)",
                    sidecar_path.display()
                ))
            }
        },
    };
    Contract::parse(&text).map_err(|e| format!("the contract in {from} is not valid: {e}"))
}

/// `model.onnx` -> `model.onnx.json`.
pub fn sidecar_for(model: &Path) -> PathBuf {
    let mut s = model.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

fn check_io(session: &Session, c: &Contract) -> Result<(), String> {
    let describe = |ty: &ValueType| match (ty.tensor_type(), ty.tensor_shape()) {
        (Some(t), Some(s)) => format!("{t:?} {:?}", &s[..]),
        _ => format!("{ty:?}"),
    };
    let inputs: Vec<String> =
        session.inputs().iter().map(|i| format!("`{}` {}", i.name(), describe(i.dtype()))).collect();
    let outputs: Vec<String> =
        session.outputs().iter().map(|o| format!("`{}` {}", o.name(), describe(o.dtype()))).collect();
    let expected_in = format!("`{}` Float32 [N, 3, {}, {}]", c.input.name, c.input.height, c.input.width);
    let expected_out = format!("`{}` Float32 [N, {}]", c.output.name, c.classes.len());
    let found = || format!("found inputs {} and outputs {}", inputs.join(", "), outputs.join(", "));
    let input = session.inputs().iter().find(|i| i.name() == c.input.name);
    let ok_in = input.is_some_and(|i| {
        let shape = i.dtype().tensor_shape();
        i.dtype().tensor_type() == Some(ort::value::TensorElementType::Float32)
            && shape.is_some_and(|s| {
                s.len() == 4
                    && s[1] == 3
                    && (s[2] == -1 || s[2] == c.input.height as i64)
                    && (s[3] == -1 || s[3] == c.input.width as i64)
            })
    });
    if !ok_in {
        return Err(format!("expected input {expected_in} (from its contract), {}", found()));
    }
    let output = session.outputs().iter().find(|o| o.name() == c.output.name);
    let ok_out = output.is_some_and(|o| {
        o.dtype().tensor_type() == Some(ort::value::TensorElementType::Float32)
            && o.dtype().tensor_shape().is_some_and(|s| s.len() == 2 && (s[1] == -1 || s[1] == c.classes.len() as i64))
    });
    if !ok_out {
        return Err(format!("expected output {expected_out} (from its contract), {}", found()));
    }
    Ok(())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_stable_for_large_logits() {
        let p = softmax(&[1000.0, 0.0, -1000.0]);
        assert!((p[0] - 1.0).abs() < 1e-6 && p.iter().all(|x| x.is_finite()));
        let s: f32 = softmax(&[0.3, -1.2, 2.0]).iter().sum();
        assert!((s - 1.0).abs() < 1e-6);
    }

    fn contract() -> Contract {
        serde_json::from_str(include_str!("../../models/surface-classifier.onnx.json")).unwrap()
    }

    #[test]
    fn the_committed_sidecar_is_a_valid_contract() {
        contract().check().unwrap();
        assert_eq!(sidecar_for(Path::new("m/x.onnx")), PathBuf::from("m/x.onnx.json"));
    }

    #[test]
    fn bad_contracts_say_what_is_wrong() {
        let mut c = contract();
        c.ok_classes = vec!["fine".into()];
        assert!(c.check().unwrap_err().contains("ok class `fine`"));
        let mut c = contract();
        c.kind = "yolo".into();
        assert!(c.check().unwrap_err().contains("kind `yolo`"));
        let mut c = contract();
        c.input.std[1] = 0.0;
        assert!(c.check().unwrap_err().contains("std"));
        let mut c = contract();
        c.ng_threshold = Some(1.5);
        assert!(c.check().unwrap_err().contains("outside 0..1"));
        let mut c = contract();
        c.output.activation = "sigmoid".into();
        assert!(c.check().unwrap_err().contains("activation"));
        // Unknown keys are refused, like in the config.
        let text = include_str!("../../models/surface-classifier.onnx.json").replacen('{', "{\"colour\": 1,", 1);
        assert!(serde_json::from_str::<Contract>(&text).is_err());
    }
}
