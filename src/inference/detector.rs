//! An Ultralytics YOLO detection model in an ONNX Runtime session: load,
//! check its inputs and outputs against its metadata, letterbox a frame,
//! run, decode (see [`super::yolo`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use opencv::core::{self as cv, Mat, Scalar, Size};
use opencv::imgproc;
use opencv::prelude::*;
use ort::session::Session;
use ort::value::{Tensor, TensorElementType};
use sha2::Digest;

use super::classifier::Timing;
use super::runtime::{build_session, ProviderReport, RuntimeError};
use super::yolo::{decode_nms, decode_raw_rows, Letterbox, YoloMeta};
use crate::config::ModelConfig;
use crate::part::Detection;

/// What the output looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// `[N, 4+nc, anchors]`.
    Raw,
    /// `[N, k, 6]`.
    Nms,
}

pub struct Detector {
    session: Session,
    pub meta: YoloMeta,
    input: String,
    output_name: String,
    output: Output,
    /// The batch dimension: `Some(n)` when fixed, `None` when dynamic.
    batch: Option<usize>,
    /// Segmentation exports: the prototype output's name, its mask count and size.
    protos: Option<Protos>,
    pub provider: &'static str,
    pub providers: Vec<ProviderReport>,
    pub sha256: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
struct Protos {
    name: String,
    nm: usize,
    mh: usize,
    mw: usize,
}

/// The Ultralytics metadata keys linesight reads.
const KEYS: [&str; 6] = ["task", "names", "imgsz", "stride", "args", "end2end"];

/// Whether a session's model is an Ultralytics export (it carries `task` and `names`).
pub fn is_ultralytics(session: &Session) -> bool {
    session.metadata().ok().is_some_and(|m| m.custom("task").is_some() && m.custom("names").is_some())
}

impl Detector {
    pub fn load(env: &ort::environment::Environment, cfg: &ModelConfig, threads: usize) -> Result<Self, RuntimeError> {
        let fail = |why: String| RuntimeError::Model { path: cfg.path.clone(), why };
        let bytes =
            std::fs::read(&cfg.path).map_err(|e| fail(format!("cannot read: {e} (check the path and permissions)")))?;
        let sha256 = super::classifier::hex(&sha2::Sha256::digest(&bytes));
        let built = build_session(env, &cfg.path, &bytes, &cfg.providers, threads)?;
        drop(bytes);
        let map: HashMap<String, String> = match built.session.metadata() {
            Ok(m) => KEYS.iter().filter_map(|k| m.custom(k).map(|v| (k.to_string(), v))).collect(),
            Err(e) => return Err(fail(format!("its metadata cannot be read: {e}"))),
        };
        let meta = YoloMeta::from_metadata(&map).map_err(fail)?;
        if meta.task != "detect" && meta.task != "segment" {
            return Err(fail(format!(
                "it is an Ultralytics `{}` model; this adapter reads `detect` and `segment` exports",
                meta.task
            )));
        }
        let (input, output_name, output, batch, protos) = check_io(&built.session, &meta).map_err(fail)?;
        Ok(Detector {
            session: built.session,
            meta,
            input,
            output_name,
            output,
            batch,
            protos,
            provider: built.provider,
            providers: built.reports,
            sha256,
            path: cfg.path.clone(),
        })
    }

    /// Letterbox a BGR frame into the model's input tensor (appended to `out`).
    pub fn preprocess(&self, frame: &Mat, out: &mut Vec<f32>) -> Result<Letterbox, String> {
        let (in_h, in_w) = self.meta.imgsz;
        let (w, h) = (frame.cols() as u32, frame.rows() as u32);
        if w == 0 || h == 0 {
            return Err("empty image".into());
        }
        let bgr = super::to_bgr(frame)?;
        let lb = Letterbox::fit(w, h, in_w, in_h);
        let mut resized = Mat::default();
        imgproc::resize(
            &*bgr,
            &mut resized,
            Size::new(lb.new_w as i32, lb.new_h as i32),
            0.0,
            0.0,
            imgproc::INTER_LINEAR,
        )
        .map_err(|e| e.message)?;
        let mut padded = Mat::default();
        cv::copy_make_border(
            &resized,
            &mut padded,
            lb.top as i32,
            lb.bottom as i32,
            lb.left as i32,
            lb.right as i32,
            cv::BORDER_CONSTANT,
            Scalar::all(114.0),
        )
        .map_err(|e| e.message)?;
        let data = padded.data_bytes().map_err(|e| e.message)?;
        let plane = (in_w * in_h) as usize;
        if data.len() != plane * 3 {
            return Err(format!("letterboxed image is {}x{}, not {in_w}x{in_h}", padded.cols(), padded.rows()));
        }
        let start = out.len();
        out.resize(start + 3 * plane, 0.0);
        let dst = &mut out[start..];
        // BGR interleaved to RGB planes, 0..1.
        for (i, px) in data.chunks_exact(3).enumerate() {
            dst[i] = f32::from(px[2]) / 255.0;
            dst[plane + i] = f32::from(px[1]) / 255.0;
            dst[2 * plane + i] = f32::from(px[0]) / 255.0;
        }
        Ok(lb)
    }

    /// Detect on one BGR frame: boxes in frame pixels, best first.
    pub fn detect(&mut self, frame: &Mat, conf: f32, iou: f32) -> Result<(Vec<Detection>, Timing), String> {
        let (mut dets, timing) = self.detect_many(&[frame], conf, iou)?;
        Ok((dets.pop().unwrap_or_default(), timing))
    }

    /// The largest batch one call may hold: `None` when the batch dimension is dynamic.
    pub fn max_batch(&self) -> Option<usize> {
        self.batch
    }

    /// Only `Session::run` on `n` letterboxed frames prepared by [`Detector::preprocess`]
    /// (for the benchmark's limit); the output is not decoded.
    pub fn run_prepared(&mut self, n: usize, data: Vec<f32>) -> Result<(), String> {
        let (in_h, in_w) = self.meta.imgsz;
        let tensor = Tensor::from_array(([n, 3, in_h as usize, in_w as usize], data)).map_err(|e| e.to_string())?;
        self.session.run(ort::inputs![self.input.as_str() => tensor]).map_err(|e| format!("inference failed: {e}"))?;
        Ok(())
    }

    /// Detect on several frames in one inference call (a batch), one list per frame.
    /// The timing is the whole call's.
    pub fn detect_many(
        &mut self,
        frames: &[&Mat],
        conf: f32,
        iou: f32,
    ) -> Result<(Vec<Vec<Detection>>, Timing), String> {
        let n = frames.len();
        super::check_batch(n, self.batch)?;
        let t0 = Instant::now();
        let (in_h, in_w) = self.meta.imgsz;
        let per = 3 * (in_h * in_w) as usize;
        let mut data = Vec::with_capacity(per * n);
        let mut boxes = Vec::with_capacity(n);
        for f in frames {
            boxes.push(self.preprocess(f, &mut data)?);
        }
        let t1 = Instant::now();
        let tensor = Tensor::from_array(([n, 3, in_h as usize, in_w as usize], data)).map_err(|e| e.to_string())?;
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => tensor])
            .map_err(|e| format!("inference failed: {e}"))?;
        let out = outputs
            .get(&self.output_name)
            .ok_or_else(|| format!("the model returned no output `{}`", self.output_name))?;
        let (shape, values) = out.try_extract_tensor::<f32>().map_err(|e| e.to_string())?;
        let nc = self.meta.names.len();
        let nm = self.protos.as_ref().map_or(0, |p| p.nm);
        // Dynamic exports declare -1 for the anchor count: the real shape says it.
        let dims: Vec<usize> = shape.iter().map(|d| *d as usize).collect();
        let (rows, cols) = match (self.output, dims.as_slice()) {
            (Output::Raw, [b, c, k]) if *b == n && *c == 4 + nc + nm => (*c, *k),
            (Output::Nms, [b, k, 6]) if *b == n => (*k, 6),
            _ => return Err(format!("output shape {dims:?} does not fit a batch of {n} with {nc} classes")),
        };
        let protos = match &self.protos {
            Some(p) => {
                let v = outputs.get(&p.name).ok_or_else(|| format!("the model returned no output `{}`", p.name))?;
                let (_, data) = v.try_extract_tensor::<f32>().map_err(|e| e.to_string())?;
                if data.len() != n * p.nm * p.mh * p.mw {
                    return Err(format!(
                        "`{}` holds {} values, [{n}, {}, {}, {}] expected",
                        p.name,
                        data.len(),
                        p.nm,
                        p.mh,
                        p.mw
                    ));
                }
                Some((p.clone(), data))
            }
            None => None,
        };
        let mut all = Vec::with_capacity(n);
        for (i, (frame, lb)) in frames.iter().zip(&boxes).enumerate() {
            let one = &values[i * rows * cols..(i + 1) * rows * cols];
            let raw = match self.output {
                Output::Raw => decode_raw_rows(one, nc, rows, cols, conf, iou)?,
                Output::Nms => decode_nms(one, rows, nc, conf)?,
            };
            let (w, h) = (frame.cols() as u32, frame.rows() as u32);
            let mut dets = Vec::with_capacity(raw.len());
            for r in raw {
                let bbox = lb.to_image(r.xyxy, w, h);
                let mut d = Detection {
                    class: self.meta.names[r.class].clone(),
                    class_id: r.class,
                    score: r.score,
                    bbox,
                    mask_area: None,
                    mask: None,
                };
                if let Some((p, data)) = &protos {
                    let plane = p.mh * p.mw;
                    let base = i * p.nm * plane;
                    let mut logits = vec![0.0_f32; plane];
                    for k in 0..p.nm {
                        let c = one[(4 + nc + k) * cols + r.anchor];
                        for (l, v) in logits.iter_mut().zip(&data[base + k * plane..base + (k + 1) * plane]) {
                            *l += c * v;
                        }
                    }
                    let mask = super::segment::mask_native(&logits, p.mh, p.mw, bbox, h as usize, w as usize);
                    let area = mask.iter().filter(|b| **b).count() as u64;
                    // Ultralytics drops a detection whose cropped mask is empty.
                    if area == 0 {
                        continue;
                    }
                    d.mask_area = Some(area);
                    d.mask = Some(std::sync::Arc::new(mask));
                }
                dets.push(d);
            }
            all.push(dets);
        }
        let t2 = Instant::now();
        Ok((all, Timing::between(t0, t1, t2)))
    }
}

/// The session's input and output must be what the metadata declares.
#[allow(clippy::type_complexity)]
fn check_io(
    session: &Session,
    meta: &YoloMeta,
) -> Result<(String, String, Output, Option<usize>, Option<Protos>), String> {
    let nc = meta.names.len();
    let (in_h, in_w) = (i64::from(meta.imgsz.0), i64::from(meta.imgsz.1));
    let describe = |name: &str, ty: &ort::value::ValueType| match (ty.tensor_type(), ty.tensor_shape()) {
        (Some(t), Some(s)) => format!("`{name}` {t:?} {:?}", &s[..]),
        _ => format!("`{name}` {ty:?}"),
    };
    let found = || {
        let i: Vec<String> = session.inputs().iter().map(|i| describe(i.name(), i.dtype())).collect();
        let o: Vec<String> = session.outputs().iter().map(|o| describe(o.name(), o.dtype())).collect();
        format!("found inputs {} and outputs {}", i.join(", "), o.join(", "))
    };
    let [input] = session.inputs() else {
        return Err(format!("a YOLO detector has one input; {}", found()));
    };
    let ok_in = input.dtype().tensor_type() == Some(TensorElementType::Float32)
        && input.dtype().tensor_shape().is_some_and(|s| {
            s.len() == 4
                && (s[0] >= 1 || s[0] == -1)
                && s[1] == 3
                && (s[2] == in_h || s[2] == -1)
                && (s[3] == in_w || s[3] == -1)
        });
    if !ok_in {
        return Err(format!(
            "expected input Float32 [N, 3, {in_h}, {in_w}] (imgsz from its metadata; a half=True export is not supported), {}",
            found()
        ));
    }
    let Some(output) = session.outputs().first() else {
        return Err(format!("it has no output; {}", found()));
    };
    let shape = output.dtype().tensor_shape().map(|s| s.to_vec()).unwrap_or_default();
    let batch = input.dtype().tensor_shape().and_then(|s| usize::try_from(s[0]).ok());
    // Segmentation: a second output of mask prototypes [N, nm, H/4, W/4], and nm coefficient rows.
    let protos = if meta.task == "segment" {
        let p = session.outputs().get(1).ok_or_else(|| {
            format!("a YOLO segmentation export has a second output of mask prototypes [N, 32, H/4, W/4]; {}", found())
        })?;
        match p.dtype().tensor_shape().map(|s| s.to_vec()).as_deref() {
            Some([_, nm, mh, mw]) if *nm > 0 && *mh > 0 && *mw > 0 => {
                Some(Protos { name: p.name().to_string(), nm: *nm as usize, mh: *mh as usize, mw: *mw as usize })
            }
            _ => return Err(format!("expected mask prototypes [N, 32, H/4, W/4] as the second output, {}", found())),
        }
    } else {
        None
    };
    let nm = protos.as_ref().map_or(0, |p| p.nm as i64);
    let out = match (meta.end2end, shape.as_slice()) {
        // Dynamic exports may leave the channel count symbolic (-1): the run checks it.
        (false, [b, c, n])
            if (*b >= 1 || *b == -1) && (*c == 4 + nc as i64 + nm || *c == -1) && (*n > 0 || *n == -1) =>
        {
            Output::Raw
        }
        (true, [b, k, 6]) if (*b >= 1 || *b == -1) && (*k > 0 || *k == -1) => Output::Nms,
        _ => {
            let expected = if meta.end2end {
                "[N, K, 6] (an nms=True export)".to_string()
            } else {
                format!(
                    "[N, {}, A] (4 box values, {nc} class scores and {nm} mask coefficients per anchor)",
                    4 + nc as i64 + nm
                )
            };
            return Err(format!("expected output {expected}, {}", found()));
        }
    };
    if output.dtype().tensor_type() != Some(TensorElementType::Float32) {
        return Err(format!("expected a Float32 output, {}", found()));
    }
    Ok((input.name().to_string(), output.name().to_string(), out, batch, protos))
}
