//! Ultralytics YOLO detection exports, unchanged: what `yolo export
//! format=onnx` writes (raw `[1, 4+nc, N]`, or `[1, 300, 6]` with
//! `nms=True`), read the way Ultralytics' own predictor reads them.
//!
//! Preprocessing is Ultralytics' `LetterBox(auto=False, center=True)`:
//! scale to fit keeping the aspect ratio, pad with 114 around the centre,
//! BGR to RGB, divide by 255, CHW. Postprocessing is its
//! `non_max_suppression` (best class per anchor, confidence filter, NMS per
//! class, at most 300 boxes) and `scale_boxes` (remove the padding, undo
//! the scale, clip to the image). The arithmetic below follows theirs,
//! rounding included, so that boxes agree with `YOLO(model).predict`.

use std::collections::HashMap;

use super::pyliteral::{self, Py};

/// What the export's metadata says about the model.
#[derive(Debug, Clone, PartialEq)]
pub struct YoloMeta {
    pub task: String,
    pub names: Vec<String>,
    /// Input height and width.
    pub imgsz: (u32, u32),
    pub stride: u32,
    /// `[1, 300, 6]` output (exported with `nms=True`, or an end-to-end model).
    pub end2end: bool,
}

impl YoloMeta {
    /// From the ONNX custom metadata map. Errors say which key is wrong.
    pub fn from_metadata(map: &HashMap<String, String>) -> Result<YoloMeta, String> {
        let get = |k: &str| map.get(k).ok_or_else(|| format!("its metadata has no `{k}` (not an Ultralytics export?)"));
        let lit = |k: &str| -> Result<Py, String> {
            pyliteral::parse(get(k)?).map_err(|e| format!("metadata `{k}` is not a Python literal: {e}"))
        };
        let task = get("task")?.trim().to_string();
        let names = match lit("names")? {
            Py::Dict(items) => {
                let mut v: Vec<(i64, String)> = items
                    .into_iter()
                    .map(|(k, v)| match (k, v) {
                        (Py::Int(i), Py::Str(s)) => Ok((i, s)),
                        _ => Err("metadata `names` must map class numbers to names".to_string()),
                    })
                    .collect::<Result<_, _>>()?;
                v.sort_by_key(|(i, _)| *i);
                if v.iter().enumerate().any(|(n, (i, _))| *i != n as i64) {
                    return Err("metadata `names` must number the classes 0, 1, 2, ...".into());
                }
                if v.is_empty() {
                    return Err("metadata `names` lists no class".into());
                }
                v.into_iter().map(|(_, s)| s).collect()
            }
            _ => return Err("metadata `names` is not a dict".into()),
        };
        let imgsz = match lit("imgsz")? {
            Py::List(v) if v.len() == 2 => match (v[0].as_i64(), v[1].as_i64()) {
                (Some(h), Some(w)) if (1..=8192).contains(&h) && (1..=8192).contains(&w) => (h as u32, w as u32),
                _ => return Err("metadata `imgsz` must be two sizes in pixels".into()),
            },
            Py::Int(s) if (1..=8192).contains(&s) => (s as u32, s as u32),
            _ => return Err("metadata `imgsz` must be [height, width]".into()),
        };
        let stride = match map.get("stride").map(|s| pyliteral::parse(s)) {
            // Not `as u32`: 2^32 would be stride 0, 2^32 + 32 stride 32.
            Some(Ok(Py::Int(s))) if s > 0 && s <= i64::from(u32::MAX) => s as u32,
            None => 32,
            _ => return Err("metadata `stride` must be a positive integer".into()),
        };
        let end2end = matches!(map.get("end2end").map(|s| pyliteral::parse(s)), Some(Ok(Py::Bool(true))))
            || matches!(map.get("args").map(|s| pyliteral::parse(s)), Some(Ok(Py::Dict(items)))
                if items.iter().any(|(k, v)| *k == Py::Str("nms".into()) && *v == Py::Bool(true)));
        Ok(YoloMeta { task, names, imgsz, stride, end2end })
    }
}

/// How an image was fitted into the model's input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    /// Resized image size (width, height) inside the input.
    pub new_w: u32,
    pub new_h: u32,
    pub top: u32,
    pub bottom: u32,
    pub left: u32,
    pub right: u32,
    /// Input size over image size.
    pub gain: f64,
}

/// Python's `round`: halves to even.
fn py_round(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        2.0 * (x / 2.0).round()
    } else {
        r
    }
}

impl Letterbox {
    /// Ultralytics `LetterBox(new_shape=(in_h, in_w), auto=False, scaleup=True, center=True)`.
    pub fn fit(img_w: u32, img_h: u32, in_w: u32, in_h: u32) -> Letterbox {
        let r = (f64::from(in_h) / f64::from(img_h)).min(f64::from(in_w) / f64::from(img_w));
        let new_w = py_round(f64::from(img_w) * r) as u32;
        let new_h = py_round(f64::from(img_h) * r) as u32;
        let dw = f64::from(in_w - new_w) / 2.0;
        let dh = f64::from(in_h - new_h) / 2.0;
        Letterbox {
            new_w,
            new_h,
            top: py_round(dh - 0.1) as u32,
            bottom: py_round(dh + 0.1) as u32,
            left: py_round(dw - 0.1) as u32,
            right: py_round(dw + 0.1) as u32,
            gain: r,
        }
    }

    /// Ultralytics `scale_boxes`: a box in input pixels to image pixels, clipped.
    pub fn to_image(&self, b: [f32; 4], img_w: u32, img_h: u32) -> [f32; 4] {
        // Their pad uses the gain, not the integer padding.
        let pad_x =
            py_round((f64::from(self.new_w + self.left + self.right) - f64::from(img_w) * self.gain) / 2.0 - 0.1);
        let pad_y =
            py_round((f64::from(self.new_h + self.top + self.bottom) - f64::from(img_h) * self.gain) / 2.0 - 0.1);
        let x = |v: f32| ((f64::from(v) - pad_x) / self.gain).clamp(0.0, f64::from(img_w)) as f32;
        let y = |v: f32| ((f64::from(v) - pad_y) / self.gain).clamp(0.0, f64::from(img_h)) as f32;
        [x(b[0]), y(b[1]), x(b[2]), y(b[3])]
    }
}

/// One detection in model-input pixels (before [`Letterbox::to_image`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Raw {
    pub class: usize,
    pub score: f32,
    pub xyxy: [f32; 4],
    /// The output column (raw) or row (`nms=True`) it came from: where its mask coefficients are.
    pub anchor: usize,
}

/// Ultralytics' limits: at most this many boxes into NMS, and out of it.
const MAX_NMS: usize = 30_000;
const MAX_DET: usize = 300;

/// Decode a raw `[1, rows, n]` output (row-major, one row per channel) whose first `4 + nc` rows are boxes and
/// class scores (segmentation exports add 32 rows of mask coefficients).
pub fn decode_raw_rows(out: &[f32], nc: usize, rows: usize, n: usize, conf: f32, iou: f32) -> Result<Vec<Raw>, String> {
    if out.len() != rows * n || rows < 4 + nc {
        return Err(format!("output has {} values, [1, {rows}, {n}] needs {}", out.len(), rows * n));
    }
    // A model that emits NaN must not pass parts as "nothing found".
    if out.iter().any(|v| !v.is_finite()) {
        return Err("the model returned non-finite values".into());
    }
    let mut cands = Vec::new();
    for i in 0..n {
        let (mut best, mut class) = (f32::NEG_INFINITY, 0);
        for c in 0..nc {
            let s = out[(4 + c) * n + i];
            if s > best {
                best = s;
                class = c;
            }
        }
        // Ultralytics keeps scores strictly above the threshold.
        if best > conf && best.is_finite() {
            let (cx, cy, w, h) = (out[i], out[n + i], out[2 * n + i], out[3 * n + i]);
            cands.push(Raw {
                class,
                score: best,
                xyxy: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
                anchor: i,
            });
        }
    }
    cands.sort_by(|a, b| b.score.total_cmp(&a.score));
    cands.truncate(MAX_NMS);
    Ok(nms(cands, iou))
}

/// Decode a `[1, k, 6]` output (x1, y1, x2, y2, score, class; zero rows pad it).
pub fn decode_nms(out: &[f32], k: usize, nc: usize, conf: f32) -> Result<Vec<Raw>, String> {
    if out.len() != k * 6 {
        return Err(format!("output has {} values, [1, {k}, 6] needs {}", out.len(), k * 6));
    }
    if out.iter().any(|v| !v.is_finite()) {
        return Err("the model returned non-finite values".into());
    }
    let mut v = Vec::new();
    for (anchor, row) in out.chunks_exact(6).enumerate() {
        if row[4] > conf && row[4].is_finite() {
            let class = row[5].round();
            if class < 0.0 || class as usize >= nc {
                return Err(format!("output names class {class}, the model has {nc}"));
            }
            v.push(Raw { class: class as usize, score: row[4], xyxy: [row[0], row[1], row[2], row[3]], anchor });
        }
    }
    v.sort_by(|a, b| b.score.total_cmp(&a.score));
    v.truncate(MAX_DET);
    Ok(v)
}

/// Intersection over union of two `[x1, y1, x2, y2]` boxes.
pub fn iou_of(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// Greedy NMS per class over boxes sorted by score (torchvision's rule: a
/// box is dropped when its IoU with a kept box of its class exceeds `iou`).
fn nms(sorted: Vec<Raw>, iou: f32) -> Vec<Raw> {
    let mut keep: Vec<Raw> = Vec::new();
    for c in sorted {
        if keep.iter().all(|k| k.class != c.class || iou_of(&k.xyxy, &c.xyxy) <= iou) {
            keep.push(c);
            if keep.len() == MAX_DET {
                break;
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn metadata_as_ultralytics_writes_it() {
        let m = YoloMeta::from_metadata(&meta(&[
            ("task", "detect"),
            ("names", "{0: 'scratch', 1: 'spot'}"),
            ("imgsz", "[256, 320]"),
            ("stride", "32"),
            ("args", "{'batch': 1, 'nms': True}"),
        ]))
        .unwrap();
        assert_eq!(m.names, ["scratch", "spot"]);
        assert_eq!((m.imgsz, m.stride, m.end2end), ((256, 320), 32, true));
        let e = YoloMeta::from_metadata(&meta(&[("task", "detect"), ("names", "[1]"), ("imgsz", "[640, 640]")]));
        assert!(e.unwrap_err().contains("`names`"));
        assert!(YoloMeta::from_metadata(&meta(&[("names", "{0: 'a'}")])).unwrap_err().contains("`task`"));
        // No class at all: the classifier would split its output into chunks of 0.
        let e = YoloMeta::from_metadata(&meta(&[("task", "classify"), ("names", "{}"), ("imgsz", "[64, 64]")]));
        assert!(e.unwrap_err().contains("no class"));
    }

    #[test]
    fn a_stride_beyond_u32_is_refused_not_wrapped() {
        let with = |stride: &str| {
            YoloMeta::from_metadata(&meta(&[
                ("task", "detect"),
                ("names", "{0: 'a'}"),
                ("imgsz", "[64, 64]"),
                ("stride", stride),
            ]))
        };
        assert_eq!(with("4294967295").unwrap().stride, u32::MAX);
        for bad in ["4294967296", "4294967328", "0", "-32", "32.0"] {
            assert!(with(bad).unwrap_err().contains("`stride` must be a positive integer"), "{bad}");
        }
    }

    #[test]
    fn letterbox_matches_ultralytics_arithmetic() {
        // 1920x1080 into 640x640: gain 1/3, 640x360, 140 px above and below.
        let l = Letterbox::fit(1920, 1080, 640, 640);
        assert_eq!((l.new_w, l.new_h, l.top, l.bottom, l.left, l.right), (640, 360, 140, 140, 0, 0));
        // Odd padding: 100x61 into 64x64 -> 64x39, dh = 12.5 -> top 12, bottom 13.
        let o = Letterbox::fit(100, 61, 64, 64);
        assert_eq!((o.new_h, o.top, o.bottom), (39, 12, 13));
        let b = l.to_image([320.0, 140.0, 640.0, 500.0], 1920, 1080);
        assert_eq!(b, [960.0, 0.0, 1920.0, 1080.0]);
    }

    #[test]
    fn raw_output_decodes_filters_and_suppresses_per_class() {
        // n = 4 anchors, 2 classes: [cx, cy, w, h, s0, s1] as rows.
        let n = 4;
        #[rustfmt::skip]
        let out = vec![
            50.0, 52.0, 10.0, 50.0,   // cx
            50.0, 50.0, 10.0, 50.0,   // cy
            20.0, 20.0, 4.0, 20.0,    // w
            20.0, 20.0, 4.0, 20.0,    // h
            0.9, 0.8, 0.1, 0.05,      // class 0
            0.1, 0.2, 0.25, 0.7,      // class 1
        ];
        let d = decode_raw_rows(&out, 2, 6, n, 0.25, 0.7).unwrap();
        // Anchor 1 overlaps anchor 0 (same class) and goes; anchor 3 is class 1, kept;
        // anchor 2 (0.25) is not above the threshold.
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].class, d[0].score), (0, 0.9));
        assert_eq!(d[0].xyxy, [40.0, 40.0, 60.0, 60.0]);
        assert_eq!((d[1].class, d[1].score), (1, 0.7));
        assert!(decode_raw_rows(&out, 3, 7, n, 0.25, 0.7).is_err(), "shape mismatch is an error");
        let mut nan = out.clone();
        nan[17] = f32::NAN;
        assert!(
            decode_raw_rows(&nan, 2, 6, n, 0.25, 0.7).unwrap_err().contains("non-finite"),
            "NaN is never 'nothing found'"
        );
    }

    #[test]
    fn nms_output_drops_padding_rows_and_bad_classes() {
        let out = [1.0, 2.0, 3.0, 4.0, 0.8, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let d = decode_nms(&out, 2, 2, 0.25).unwrap();
        assert_eq!(d, vec![Raw { class: 1, score: 0.8, xyxy: [1.0, 2.0, 3.0, 4.0], anchor: 0 }]);
        assert!(decode_nms(&[1.0, 2.0, 3.0, 4.0, 0.8, 7.0], 1, 2, 0.25).is_err());
    }
}
