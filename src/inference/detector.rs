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
        let (bytes, sha256) = super::runtime::read_model(cfg)?;
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
        let io = check_io(&built.session, &meta).map_err(fail)?;
        Ok(Detector {
            session: built.session,
            meta,
            input: io.input,
            output_name: io.output,
            output: io.layout,
            batch: io.batch,
            protos: io.protos,
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
                        // In bounds: the run checked rows == 4 + nc + nm (raw layout; check_io
                        // refuses segmentation with any other).
                        let c = *one
                            .get((4 + nc + k) * cols + r.anchor)
                            .ok_or_else(|| format!("output shape {dims:?} holds no mask coefficients"))?;
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

/// One input or output of the session as the file declares it.
#[derive(Debug, Clone)]
struct Port {
    name: String,
    ty: Option<TensorElementType>,
    shape: Option<Vec<i64>>,
}

impl Port {
    fn of(name: &str, ty: &ort::value::ValueType) -> Port {
        Port { name: name.to_string(), ty: ty.tensor_type(), shape: ty.tensor_shape().map(|s| s.to_vec()) }
    }

    fn describe(&self) -> String {
        match (self.ty, &self.shape) {
            (Some(t), Some(s)) => format!("`{}` {t:?} {s:?}", self.name),
            _ => format!("`{}` (not a tensor)", self.name),
        }
    }
}

/// What [`check_ports`] accepted.
#[derive(Debug)]
struct Io {
    input: String,
    output: String,
    layout: Output,
    batch: Option<usize>,
    protos: Option<Protos>,
}

/// Most mask coefficients a segmentation export may declare (Ultralytics writes 32).
const MAX_MASKS: i64 = 256;

/// The session's input and output must be what the metadata declares.
fn check_io(session: &Session, meta: &YoloMeta) -> Result<Io, String> {
    let inputs: Vec<Port> = session.inputs().iter().map(|i| Port::of(i.name(), i.dtype())).collect();
    let outputs: Vec<Port> = session.outputs().iter().map(|o| Port::of(o.name(), o.dtype())).collect();
    check_ports(meta, &inputs, &outputs).map_err(|why| {
        let i: Vec<String> = inputs.iter().map(Port::describe).collect();
        let o: Vec<String> = outputs.iter().map(Port::describe).collect();
        format!("{why}, found inputs {} and outputs {}", i.join(", "), o.join(", "))
    })
}

/// [`check_io`] on the declared inputs and outputs: every shape the decoder relies on is
/// checked here, so that a file whose shapes disagree with its metadata is refused at load
/// (saying what was expected) instead of being indexed out of bounds at the first part.
fn check_ports(meta: &YoloMeta, inputs: &[Port], outputs: &[Port]) -> Result<Io, String> {
    let nc = meta.names.len() as i64;
    let (in_h, in_w) = (i64::from(meta.imgsz.0), i64::from(meta.imgsz.1));
    let [input] = inputs else {
        return Err("a YOLO detector has one input".into());
    };
    let in_shape = input.shape.as_deref().unwrap_or_default();
    let ok_in = input.ty == Some(TensorElementType::Float32)
        && matches!(in_shape, [b, 3, h, w]
            if (*b >= 1 || *b == -1) && (*h == in_h || *h == -1) && (*w == in_w || *w == -1));
    if !ok_in {
        return Err(format!(
            "expected input Float32 [N, 3, {in_h}, {in_w}] (imgsz from its metadata; a half=True export is not supported)"
        ));
    }
    let batch = usize::try_from(in_shape[0]).ok();
    let Some(output) = outputs.first() else {
        return Err("it has no output".into());
    };
    // Segmentation: a second output of mask prototypes [N, nm, H/4, W/4] (one prototype cell per
    // 4 input pixels, which the mask arithmetic relies on), and nm coefficient rows.
    let protos = if meta.task == "segment" {
        let (mh, mw) = (in_h / 4, in_w / 4);
        let expected = format!("mask prototypes [N, 32, H/4, W/4] = [N, 32, {mh}, {mw}] as the second output");
        let p = outputs.get(1).ok_or_else(|| format!("a YOLO segmentation export has {expected}"))?;
        match p.shape.as_deref() {
            Some([b, nm, h, w])
                if p.ty == Some(TensorElementType::Float32)
                    && (*b >= 1 || *b == -1)
                    && (1..=MAX_MASKS).contains(nm)
                    && *h == mh
                    && *w == mw
                    && in_h % 4 == 0
                    && in_w % 4 == 0 =>
            {
                Some(Protos { name: p.name.clone(), nm: *nm as usize, mh: mh as usize, mw: mw as usize })
            }
            _ => return Err(format!("expected Float32 {expected}")),
        }
    } else {
        None
    };
    let nm = protos.as_ref().map_or(0, |p| p.nm as i64);
    let raw_rows = 4 + nc + nm;
    let raw = |extra: &str| {
        if protos.is_some() {
            format!(
                "[N, {raw_rows}, A] (4 box values, {nc} class scores and {nm} mask coefficients per anchor) with mask prototypes [N, {nm}, H/4, W/4]{extra}"
            )
        } else {
            format!("[N, {raw_rows}, A] (4 box values and {nc} class scores per anchor){extra}")
        }
    };
    if protos.is_some() && meta.end2end {
        // An nms=True segmentation export carries its mask coefficients in each row
        // ([N, K, 6 + 32]); linesight decodes segmentation from the raw output only.
        return Err(format!(
            "its metadata says nms=True (end2end), which linesight reads for detection only: export the segmentation model with nms=False, which gives output {}",
            raw("")
        ));
    }
    let shape = output.shape.as_deref().unwrap_or_default();
    let layout = match (meta.end2end, shape) {
        // Dynamic exports may leave the channel count symbolic (-1): the run checks it.
        (false, [b, c, n]) if (*b >= 1 || *b == -1) && (*c == raw_rows || *c == -1) && (*n > 0 || *n == -1) => {
            Output::Raw
        }
        (true, [b, k, 6]) if (*b >= 1 || *b == -1) && (*k > 0 || *k == -1) => Output::Nms,
        _ => {
            let expected = if meta.end2end { "[N, K, 6] (an nms=True export)".to_string() } else { raw("") };
            return Err(format!("expected output {expected}"));
        }
    };
    if output.ty != Some(TensorElementType::Float32) {
        return Err("expected a Float32 output".into());
    }
    Ok(Io { input: input.name.clone(), output: output.name.clone(), layout, batch, protos })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(task: &str, end2end: bool) -> YoloMeta {
        YoloMeta { task: task.into(), names: vec!["scratch".into()], imgsz: (32, 32), stride: 32, end2end }
    }

    fn port(name: &str, shape: &[i64]) -> Port {
        Port { name: name.into(), ty: Some(TensorElementType::Float32), shape: Some(shape.to_vec()) }
    }

    fn images() -> Vec<Port> {
        vec![port("images", &[1, 3, 32, 32])]
    }

    #[test]
    fn real_layouts_are_accepted() {
        let io = check_ports(&meta("detect", false), &images(), &[port("output0", &[1, 5, 21])]).unwrap();
        assert_eq!((io.layout, io.batch, io.protos.is_none()), (Output::Raw, Some(1), true));
        let io = check_ports(&meta("detect", true), &images(), &[port("output0", &[-1, 300, 6])]).unwrap();
        assert_eq!(io.layout, Output::Nms);
        let seg = [port("output0", &[1, 37, 21]), port("output1", &[1, 32, 8, 8])];
        let io = check_ports(&meta("segment", false), &images(), &seg).unwrap();
        let p = io.protos.unwrap();
        assert_eq!((p.nm, p.mh, p.mw), (32, 8, 8));
    }

    #[test]
    fn a_segment_nms_export_is_refused_with_the_shapes_expected() {
        // [N, K, 6]: no mask coefficients at all; [N, K, 38]: Ultralytics' nms=True layout,
        // which linesight does not decode for masks. Both are refused, never indexed.
        for k in [[1, 2, 6], [1, 300, 38]] {
            let outs = [port("output0", &k), port("output1", &[1, 32, 8, 8])];
            let e = check_ports(&meta("segment", true), &images(), &outs).unwrap_err();
            assert!(e.contains("nms=False") && e.contains("[N, 37, A]") && e.contains("[N, 32, H/4, W/4]"), "{e}");
        }
    }

    #[test]
    fn prototype_shapes_from_the_file_are_bounded() {
        let seg = |protos: &[i64]| {
            let outs = [port("output0", &[1, -1, 21]), port("output1", protos)];
            check_ports(&meta("segment", false), &images(), &outs)
        };
        // Sizes whose product overflows, prototypes that do not cover the input at 4 px a cell,
        // symbolic or zero sizes, a missing prototype output: all refused at load.
        for bad in
            [&[1, i64::MAX, i64::MAX, i64::MAX][..], &[1, 32, 16, 16], &[1, 32, -1, -1], &[1, 0, 8, 8], &[1, 32, 8]]
        {
            let e = seg(bad).unwrap_err();
            assert!(e.contains("[N, 32, 8, 8]"), "{bad:?}: {e}");
        }
        let e = check_ports(&meta("segment", false), &images(), &[port("output0", &[1, 37, 21])]).unwrap_err();
        assert!(e.contains("second output"), "{e}");
    }

    #[test]
    fn outputs_that_disagree_with_the_metadata_are_refused() {
        let e = check_ports(&meta("detect", false), &images(), &[port("output0", &[1, 6, 21])]).unwrap_err();
        assert!(e.contains("[N, 5, A]"), "{e}");
        let e = check_ports(&meta("detect", true), &images(), &[port("output0", &[1, 300, 7])]).unwrap_err();
        assert!(e.contains("[N, K, 6]"), "{e}");
        let e = check_ports(&meta("detect", false), &[port("images", &[1, 3, 64, 64])], &[]).unwrap_err();
        assert!(e.contains("[N, 3, 32, 32]"), "{e}");
        let e = check_ports(&meta("detect", false), &images(), &[]).unwrap_err();
        assert!(e.contains("no output"), "{e}");
        let e = check_ports(&meta("detect", false), &[], &[]).unwrap_err();
        assert!(e.contains("one input"), "{e}");
    }
}
