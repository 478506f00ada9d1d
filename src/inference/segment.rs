//! Masks of an Ultralytics YOLO segmentation export, at the frame's own size,
//! the way Ultralytics' predictor makes them with `retina_masks=True`
//! (`ops.process_mask_native`): mask logits from the prototypes, upsampled
//! (PyTorch bilinear, `align_corners=False`), the letterbox padding cut off,
//! resized to the frame, `> 0`, cropped to the box. The steps and their
//! rounding are written out in `tools/yolo_reference_seg_cls.py`, which also
//! checks a numpy copy of them against Ultralytics.

/// `F.interpolate(x, (out_h, out_w), mode="bilinear", align_corners=False)` of one
/// `in_h x in_w` plane, as PyTorch's CPU kernel computes it (float32 throughout),
/// evaluated only where asked: a mask needs the pixels inside its box, not the whole frame.
struct Bilinear<'a> {
    x: &'a [f32],
    in_w: usize,
    ys: Vec<(usize, usize, f32, f32)>,
    xs: Vec<(usize, usize, f32, f32)>,
}

impl<'a> Bilinear<'a> {
    fn new(x: &'a [f32], in_h: usize, in_w: usize, out_h: usize, out_w: usize) -> Self {
        fn idx(n_in: usize, n_out: usize) -> Vec<(usize, usize, f32, f32)> {
            let scale = n_in as f32 / n_out as f32;
            (0..n_out)
                .map(|o| {
                    let src = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
                    let i0 = (src.floor() as usize).min(n_in - 1);
                    let l1 = (src - i0 as f32).clamp(0.0, 1.0);
                    let i1 = if i0 < n_in - 1 { i0 + 1 } else { i0 };
                    (i0, i1, 1.0 - l1, l1)
                })
                .collect()
        }
        Bilinear { x, in_w, ys: idx(in_h, out_h), xs: idx(in_w, out_w) }
    }

    fn at(&self, r: usize, c: usize) -> f32 {
        let ((y0, y1, ly0, ly1), (x0, x1, lx0, lx1)) = (self.ys[r], self.xs[c]);
        let (r0, r1) = (&self.x[y0 * self.in_w..], &self.x[y1 * self.in_w..]);
        let a = r0[x0] * lx0 + r0[x1] * lx1;
        let b = r1[x0] * lx0 + r1[x1] * lx1;
        a * ly0 + b * ly1
    }
}

/// The whole `out_h x out_w` resampled plane (see [`Bilinear`]).
pub fn torch_bilinear(x: &[f32], in_h: usize, in_w: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    let s = Bilinear::new(x, in_h, in_w, out_h, out_w);
    (0..out_h).flat_map(|r| (0..out_w).map(move |c| (r, c))).map(|(r, c)| s.at(r, c)).collect()
}

/// Python's `round` (half to even) for the mask arithmetic.
fn py_round(x: f64) -> i64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        (2.0 * (x / 2.0).round()) as i64
    } else {
        r as i64
    }
}

/// One detection's mask at the frame's size (`h x w`, row-major): `logits` are its
/// `mh x mw` prototype mix, `bbox` its box in frame pixels.
pub fn mask_native(logits: &[f32], mh: usize, mw: usize, bbox: [f32; 4], h: usize, w: usize) -> Vec<bool> {
    // The letterbox padding as the prototypes see it (4 input pixels per prototype cell).
    let g = (4.0 * mh as f64 / h as f64).min(4.0 * mw as f64 / w as f64);
    let pad = (4 * mh as i64 - py_round(h as f64 * g).max(1)) | (4 * mw as i64 - py_round(w as f64 * g).max(1));
    let f = (4 / crate::util::gcd(4, (pad | (pad / 2)).unsigned_abs())) as usize;
    let (mut m, mut m_h, mut m_w) = (logits.to_vec(), mh, mw);
    if f > 1 {
        m = torch_bilinear(&m, mh, mw, mh * f, mw * f);
        (m_h, m_w) = (mh * f, mw * f);
    }
    let mut crop = Vec::new();
    let resample = if (m_h, m_w) != (h, w) {
        let g2 = (m_h as f64 / h as f64).min(m_w as f64 / w as f64);
        let ch = py_round(h as f64 * g2).max(1) as usize;
        let cw = py_round(w as f64 * g2).max(1) as usize;
        let top = py_round((m_h - ch) as f64 / 2.0 - 0.1).max(0) as usize;
        let left = py_round((m_w - cw) as f64 / 2.0 - 0.1).max(0) as usize;
        for r in top..top + ch {
            crop.extend_from_slice(&m[r * m_w + left..r * m_w + left + cw]);
        }
        Some(Bilinear::new(&crop, ch, cw, h, w))
    } else {
        None
    };
    let value = |r: usize, c: usize| resample.as_ref().map_or_else(|| m[r * w + c], |s| s.at(r, c));
    // Outside the box the mask is empty: only the box's pixels are resampled.
    let [x1, y1, x2, y2] = bbox;
    let first = |v: f32| (v.max(0.0).ceil() as usize).saturating_sub(1);
    let mut mask = vec![false; h * w];
    for r in first(y1)..h.min(y2.max(0.0).ceil() as usize + 1) {
        let rf = r as f32;
        if rf < y1 || rf >= y2 {
            continue;
        }
        for c in first(x1)..w.min(x2.max(0.0).ceil() as usize + 1) {
            let cf = c as f32;
            mask[r * w + c] = cf >= x1 && cf < x2 && value(r, c) > 0.0;
        }
    }
    mask
}

/// Run lengths of a mask, alternating 0-runs and 1-runs, starting with a 0-run.
pub fn rle(mask: &[bool]) -> Vec<u64> {
    let mut runs = Vec::new();
    let (mut cur, mut n) = (false, 0u64);
    for &b in mask {
        if b == cur {
            n += 1;
        } else {
            runs.push(n);
            cur = b;
            n = 1;
        }
    }
    runs.push(n);
    runs
}

/// The mask a run-length list describes.
pub fn unrle(runs: &[u64]) -> Vec<bool> {
    let mut out = Vec::new();
    for (i, &n) in runs.iter().enumerate() {
        out.extend(std::iter::repeat(i % 2 == 1).take(n as usize));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_matches_pytorch_on_a_known_case() {
        // torch: F.interpolate(torch.tensor([[[[0., 1.], [2., 3.]]]]), (4, 4), mode="bilinear")
        let out = torch_bilinear(&[0.0, 1.0, 2.0, 3.0], 2, 2, 4, 4);
        let want = [0.0, 0.25, 0.75, 1.0, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2.0, 2.25, 2.75, 3.0];
        for (a, b) in out.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn masks_are_cropped_to_the_box_by_pixel_index() {
        // All logits positive: the mask is the box, rows/columns by integer index.
        let m = mask_native(&[1.0; 16], 4, 4, [1.5, 0.0, 3.0, 2.0], 16, 16);
        let set: Vec<(usize, usize)> = (0..256).filter(|i| m[*i]).map(|i| (i / 16, i % 16)).collect();
        assert_eq!(set, vec![(0, 2), (1, 2)]);
        let r = rle(&m);
        assert_eq!(r.iter().sum::<u64>(), 256);
        assert_eq!(unrle(&r), m);
        assert_eq!(rle(&[true, true, false]), vec![0, 2, 1]);
    }
}
