//! Ultralytics YOLO classification exports (`yolo classify ... export
//! format=onnx`), read the way Ultralytics' predictor reads them:
//! `classify_transforms`: the short side resized to the input size with
//! Pillow's antialiasing bilinear filter, centre crop, 0..1, RGB; the output
//! is already a softmax. Pillow's fixed-point arithmetic is copied below so
//! the input tensor is the same to the bit (`tools/yolo_reference_seg_cls.py`
//! writes the steps out and checks a numpy copy against Ultralytics).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use opencv::core::Mat;
use opencv::prelude::*;
use ort::session::Session;
use ort::value::{Tensor, TensorElementType};

use super::classifier::Timing;
use super::runtime::{build_session, ProviderReport, RuntimeError};
use super::yolo::YoloMeta;
use crate::config::ModelConfig;

pub struct YoloClassifier {
    session: Session,
    pub meta: YoloMeta,
    input: String,
    output: String,
    batch: Option<usize>,
    pub provider: &'static str,
    pub providers: Vec<ProviderReport>,
    pub sha256: String,
    pub path: PathBuf,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for BILINEAR: per output
/// index, the first source index and the fixed-point weights (22 fractional bits).
fn pil_coeffs(n_in: usize, n_out: usize) -> Vec<(usize, Vec<i64>)> {
    let scale = n_in as f64 / n_out as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale;
    (0..n_out)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(n_in as i64) as usize;
            let w: Vec<f64> = (0..xmax - xmin)
                .map(|k| (1.0 - ((xmin + k) as f64 - center + 0.5).abs() / filterscale).max(0.0))
                .collect();
            let sum: f64 = w.iter().sum();
            let w = w
                .iter()
                .map(|v| {
                    let v = if sum != 0.0 { v / sum } else { *v };
                    if v < 0.0 {
                        (-0.5 + v * f64::from(1u32 << 22)) as i64
                    } else {
                        (0.5 + v * f64::from(1u32 << 22)) as i64
                    }
                })
                .collect();
            (xmin, w)
        })
        .collect()
}

/// One Pillow 8-bit resampling pass of an interleaved `h x w x 3` image along x (`horizontal`) or y.
fn pil_pass(src: &[u8], h: usize, w: usize, out_len: usize, horizontal: bool) -> Vec<u8> {
    let (n_in, other) = if horizontal { (w, h) } else { (h, w) };
    let coeffs = pil_coeffs(n_in, out_len);
    let (oh, ow) = if horizontal { (h, out_len) } else { (out_len, w) };
    let mut out = vec![0u8; oh * ow * 3];
    for o in 0..other {
        for (i, (x0, ws)) in coeffs.iter().enumerate() {
            for c in 0..3 {
                let mut acc: i64 = 1 << 21;
                for (k, wk) in ws.iter().enumerate() {
                    let s = if horizontal { src[(o * w + x0 + k) * 3 + c] } else { src[((x0 + k) * w + o) * 3 + c] };
                    acc += i64::from(s) * wk;
                }
                let v = (acc >> 22).clamp(0, 255) as u8;
                let at = if horizontal { (o * ow + i) * 3 + c } else { (i * ow + o) * 3 + c };
                out[at] = v;
            }
        }
    }
    out
}

/// `classify_transforms(size)` on a BGR frame: the input tensor (appended to `out`).
pub fn classify_preprocess(bgr: &[u8], h: usize, w: usize, size: usize, out: &mut Vec<f32>) {
    let (short, long) = (h.min(w), h.max(w));
    let (ns, nl) = (size, (size as f64 * long as f64 / short as f64) as usize);
    let (nw, nh) = if w <= h { (ns, nl) } else { (nl, ns) };
    let mut img = bgr.to_vec();
    let (mut ch, mut cw) = (h, w);
    if nw != w {
        img = pil_pass(&img, ch, cw, nw, true);
        cw = nw;
    }
    if nh != h {
        img = pil_pass(&img, ch, cw, nh, false);
        ch = nh;
    }
    let round_half_even = |x: f64| -> usize {
        let r = x.round();
        (if (x - x.trunc()).abs() == 0.5 { 2.0 * (x / 2.0).round() } else { r }) as usize
    };
    let top = round_half_even((ch - size) as f64 / 2.0);
    let left = round_half_even((cw - size) as f64 / 2.0);
    let plane = size * size;
    let start = out.len();
    out.resize(start + 3 * plane, 0.0);
    let dst = &mut out[start..];
    for y in 0..size {
        for x in 0..size {
            let p = ((top + y) * cw + left + x) * 3;
            let i = y * size + x;
            dst[i] = f32::from(img[p + 2]) / 255.0;
            dst[plane + i] = f32::from(img[p + 1]) / 255.0;
            dst[2 * plane + i] = f32::from(img[p]) / 255.0;
        }
    }
}

impl YoloClassifier {
    pub fn load(env: &ort::environment::Environment, cfg: &ModelConfig, threads: usize) -> Result<Self, RuntimeError> {
        let fail = |why: String| RuntimeError::Model { path: cfg.path.clone(), why };
        let (bytes, sha256) = super::runtime::read_model(cfg)?;
        let built = build_session(env, &cfg.path, &bytes, &cfg.providers, threads)?;
        drop(bytes);
        let map: HashMap<String, String> = match built.session.metadata() {
            Ok(m) => ["task", "names", "imgsz", "stride", "args", "end2end"]
                .iter()
                .filter_map(|k| m.custom(k).map(|v| (k.to_string(), v)))
                .collect(),
            Err(e) => return Err(fail(format!("its metadata cannot be read: {e}"))),
        };
        let meta = YoloMeta::from_metadata(&map).map_err(fail)?;
        if meta.task != "classify" {
            return Err(fail(format!("it is an Ultralytics `{}` model, not a `classify` one", meta.task)));
        }
        if meta.imgsz.0 != meta.imgsz.1 {
            return Err(fail(format!(
                "its input is {}x{}; classification exports are square",
                meta.imgsz.1, meta.imgsz.0
            )));
        }
        let s = &built.session;
        let found = || {
            let d = |ty: &ort::value::ValueType| {
                format!("{:?} {:?}", ty.tensor_type(), ty.tensor_shape().map(|s| s.to_vec()))
            };
            let i: Vec<String> = s.inputs().iter().map(|i| format!("`{}` {}", i.name(), d(i.dtype()))).collect();
            let o: Vec<String> = s.outputs().iter().map(|o| format!("`{}` {}", o.name(), d(o.dtype()))).collect();
            format!("found inputs {} and outputs {}", i.join(", "), o.join(", "))
        };
        let size = i64::from(meta.imgsz.0);
        let nc = meta.names.len() as i64;
        let (Some(input), Some(output)) = (s.inputs().first(), s.outputs().first()) else {
            return Err(fail(format!("expected one input and one output, {}", found())));
        };
        let ishape = input.dtype().tensor_shape().map(|s| s.to_vec()).unwrap_or_default();
        let oshape = output.dtype().tensor_shape().map(|s| s.to_vec()).unwrap_or_default();
        let ok = input.dtype().tensor_type() == Some(TensorElementType::Float32)
            && ishape.len() == 4
            && ishape[1] == 3
            && (ishape[2] == size || ishape[2] == -1)
            && (ishape[3] == size || ishape[3] == -1)
            && oshape.len() == 2
            && (oshape[1] == nc || oshape[1] == -1);
        if !ok {
            return Err(fail(format!(
                "expected input Float32 [N, 3, {size}, {size}] and output [N, {nc}], {}",
                found()
            )));
        }
        Ok(YoloClassifier {
            input: input.name().to_string(),
            output: output.name().to_string(),
            batch: usize::try_from(ishape[0]).ok(),
            session: built.session,
            meta,
            provider: built.provider,
            providers: built.reports,
            sha256,
            path: cfg.path.clone(),
        })
    }

    pub fn max_batch(&self) -> Option<usize> {
        self.batch
    }

    pub fn preprocess(&self, frame: &Mat, out: &mut Vec<f32>) -> Result<(), String> {
        let bgr = super::to_bgr(frame)?;
        let (h, w) = (bgr.rows() as usize, bgr.cols() as usize);
        if h == 0 || w == 0 {
            return Err("empty image".into());
        }
        let owned;
        let bgr = if bgr.is_continuous() {
            &*bgr
        } else {
            owned = bgr.try_clone().map_err(|e| e.message)?;
            &owned
        };
        let bytes = bgr.data_bytes().map_err(|e| e.message)?;
        classify_preprocess(bytes, h, w, self.meta.imgsz.0 as usize, out);
        Ok(())
    }

    pub fn run_prepared(&mut self, n: usize, data: Vec<f32>) -> Result<Vec<Vec<f32>>, String> {
        let s = self.meta.imgsz.0 as usize;
        let tensor = Tensor::from_array(([n, 3, s, s], data)).map_err(|e| e.to_string())?;
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => tensor])
            .map_err(|e| format!("inference failed: {e}"))?;
        let out = outputs.get(&self.output).ok_or_else(|| format!("the model returned no output `{}`", self.output))?;
        let (_, values) = out.try_extract_tensor::<f32>().map_err(|e| e.to_string())?;
        let nc = self.meta.names.len();
        if values.len() != n * nc {
            return Err(format!("output holds {} values, [{n}, {nc}] expected", values.len()));
        }
        Ok(values.chunks(nc).map(<[f32]>::to_vec).collect())
    }

    /// Class probabilities for several frames in one call.
    pub fn classify_many(&mut self, frames: &[&Mat]) -> Result<(Vec<Vec<f32>>, Timing), String> {
        let n = frames.len();
        super::check_batch(n, self.batch)?;
        let t0 = Instant::now();
        let s = self.meta.imgsz.0 as usize;
        let mut data = Vec::with_capacity(3 * s * s * n);
        for f in frames {
            self.preprocess(f, &mut data)?;
        }
        let t1 = Instant::now();
        let probs = self.run_prepared(n, data)?;
        let t2 = Instant::now();
        Ok((probs, Timing::between(t0, t1, t2)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pillow_weights_for_halving_are_the_1_3_3_1_kernel() {
        let c = pil_coeffs(256, 128);
        assert_eq!(c[5], (9, vec![524288, 1572864, 1572864, 524288]));
        assert_eq!(c[0], (0, vec![1797559, 1797559, 599186]));
        assert_eq!(c[127], (253, vec![599186, 1797559, 1797559]));
    }

    #[test]
    fn an_image_of_the_right_size_is_only_scaled() {
        let bgr: Vec<u8> = (0..4 * 4 * 3).map(|i| i as u8).collect();
        let mut out = Vec::new();
        classify_preprocess(&bgr, 4, 4, 4, &mut out);
        assert_eq!(out.len(), 48);
        // Pixel 0 is B=0, G=1, R=2: the R plane comes first.
        assert_eq!((out[0], out[16], out[32]), (2.0 / 255.0, 1.0 / 255.0, 0.0));
    }
}
