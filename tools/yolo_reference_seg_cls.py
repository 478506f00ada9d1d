#!/usr/bin/env python3
"""Reference predictions from Ultralytics' own predictor for a YOLO
SEGMENTATION or CLASSIFICATION ONNX export, for parity tests of linesight's
Rust implementation (tools/yolo_reference.py does the same for detection).

    python tools/yolo_reference_seg_cls.py models/surface-segmenter.onnx IMAGE... [--conf 0.25] [--iou 0.7]
    python tools/yolo_reference_seg_cls.py tests/models/surface-yolo-cls.onnx IMAGE...
    python tools/yolo_reference_seg_cls.py MODEL.onnx IMAGE... --verify [--reference REF.jsonl]

The task comes from the model's metadata ``task`` (or --task). It runs
``YOLO(MODEL).predict(image, device="cpu", conf=, iou=, imgsz=, retina_masks=True)``
(ONNX through Ultralytics' AutoBackend + onnxruntime) and prints one JSON line
per image:

  segment   {"image": PATH, "detections": [{"class": NAME, "class_id": I, "score": S,
                                             "box": [x1, y1, x2, y2], "mask_area": A, "mask_rle": [...]}]}
  classify  {"image": PATH, "probs": [p0, ..., p(nc-1)], "top1": NAME, "names": [name0, ...]}

Boxes in ORIGINAL image pixels (float, clipped to the image), detections in
Ultralytics' order (descending score). ``mask_rle``: the binary mask at the
ORIGINAL image size (H x W), flattened row-major, as run lengths alternating
0-runs and 1-runs, starting with a run of 0s (length 0 if pixel (0,0) is set);
the runs sum to H*W. ``mask_area`` = number of set pixels. ``probs`` are in
class-id order (names[i] is class i); for an Ultralytics classification export
output0 is already softmax-ed, and ``top1`` is the argmax (first on ties).

--imgsz defaults to the model's metadata ``imgsz``.

--verify runs the numpy + onnxruntime re-implementation below (the spec the
Rust side follows; no Ultralytics in it) on the same images and compares it
with Ultralytics (a fresh run, or --reference): the preprocessed input tensor
(against the predictor's own preprocess()), detections, scores, boxes and
masks / probabilities. Exits 1 on a mismatch.

=============================================================================
SEGMENT: what Ultralytics 8.4.190 does (SegmentationPredictor, retina_masks=True)
=============================================================================
ONNX (dynamic=False, batch 1): input ``images`` float32 [1,3,S,S] (S = 256);
``output0`` float32 [1, 4+nc+32, N] (N = (S/8)^2+(S/16)^2+(S/32)^2 = 1344):
rows 0..3 = cx, cy, w, h in input pixels, rows 4..4+nc-1 = class scores
(sigmoid already applied), rows 4+nc.. = 32 mask coefficients (raw, no
activation); ``output1`` float32 [1, 32, S/4, S/4] = mask prototypes P
(32 x 64 x 64).

1. Preprocess: exactly the detector's letterbox (tools/yolo_reference.py,
   tools/README.md): r = min(S/h, S/w), new size (nw, nh) = (round(w r),
   round(h r)) (Python round, at least 1), cv2.resize INTER_LINEAR unless the
   size is unchanged, pad to S x S with (114,114,114), top = round(dh - 0.1),
   left = round(dw - 0.1) where dh = (S - nh)/2, dw = (S - nw)/2; BGR->RGB,
   /255, NCHW float32.
2. Candidates and NMS: exactly as for the detector: a column is a candidate if
   its best class score is > conf (strict); box (cx,cy,w,h) -> (x1,y1,x2,y2)
   = (cx - w/2, cy - h/2, cx + w/2, cy + h/2); one label per box (best class,
   first on ties); class-aware NMS (boxes offset by class*7680), torchvision
   semantics (suppress IoU > iou), max_det 300; the 32 coefficients travel
   with their box.
3. Boxes to the original image (scale_boxes): gain_x = nw/w, gain_y = nh/h,
   x = (x - left)/gain_x, y = (y - top)/gain_y, then clip x to [0, w], y to [0, h].
   THESE clipped original-image boxes are used to crop the masks (step 5).
4. Mask logits at full resolution (ops.process_mask_native):
   a. M = coeffs (n x 32) @ P.reshape(32, 64*64) -> n x 64 x 64, float32 logits.
   b. Letterbox padding as seen at the input size: g = min(4*64/h, 4*64/w);
      pad = (4*64 - max(round(h*g),1)) | (4*64 - max(round(w*g),1))  (bitwise OR
      of the two integer paddings, in input pixels); f = 4 // gcd(4, pad | pad//2).
      If f > 1, first upsample M by f with bilinear interpolation
      (PyTorch F.interpolate scale_factor=f, align_corners=False) to
      (64f x 64f). For a 256x256 image pad = 0 -> f = 1; for the 384x288 sample
      pad = 64 -> f = 1; f = 2 or 4 only when the input padding is not a multiple
      of 4 px.
   c. scale_masks to (h, w): with m = 64f the mask size, g2 = min(m/h, m/w),
      ch = max(round(h*g2),1), cw = max(round(w*g2),1),
      top = round((m - ch)/2 - 0.1), left = round((m - cw)/2 - 0.1) (Python
      round = half to even); crop M[:, top:top+ch, left:left+cw]; then resize
      that crop to exactly (h, w) with PyTorch bilinear, align_corners=False
      (src = (dst + 0.5) * (in/out) - 0.5 in float32, clamped below at 0;
      i0 = floor(src), i1 = min(i0 + 1, in - 1), l1 = src - i0, l0 = 1 - l1;
      value = (v[y0,x0]*lx0 + v[y0,x1]*lx1)*ly0 + (v[y1,x0]*lx0 + v[y1,x1]*lx1)*ly1).
      Skipped when the crop-free size already equals (h, w).
   d. Threshold: mask = logit > 0 (strictly; i.e. sigmoid > 0.5), NOT on the
      64x64 grid but on the upsampled logits.
5. Crop to the box (ops.crop_mask): pixel (row c, column r) is kept only if
   x1 <= r < x2 and y1 <= c < y2, with r, c the INTEGER pixel indices compared
   to the float box of step 3 (not pixel centres).
6. A detection whose cropped mask is all zero is DROPPED (not reported).
The box reported is the box of step 3.

With retina_masks=False (Ultralytics' default, NOT used here) the mask would
be made at the 256x256 input size (bilinear 64 -> 256, crop to the
input-space box, > 0) and is not at the original size; that is why this tool
uses retina_masks=True: ``result.masks.data`` is then directly the H x W mask
above. For a 256x256 frame the two give the same mask.

=============================================================================
CLASSIFY: what Ultralytics 8.4.190 does (ClassificationPredictor, ONNX model)
=============================================================================
ONNX: input ``images`` float32 [1,3,S,S] (S = metadata imgsz, 128 here);
``output0`` float32 [1, nc]: softmax probabilities (the export applies the
softmax). Class order = metadata ``names`` (ImageFolder order: sorted
folder names).

Preprocess = classify_transforms(S) = torchvision Resize(S, BILINEAR) +
CenterCrop(S) on a PIL image, then /255 and Normalize(mean 0, std 1):
1. Read BGR uint8 (cv2.imread). The predictor hands the BGR array to PIL
   as-is (Image.fromarray, channel order does not matter for the resize).
2. Resize the SHORT side to S, keeping the aspect: short = min(h, w),
   long = max(h, w), new_short = S, new_long = int(S * long / short)
   (truncation); if (new_h, new_w) == (h, w) nothing happens. Otherwise
   PIL Image.resize BILINEAR, which ANTIALIASES (a triangle filter whose
   support grows with the reduction factor), in Pillow's fixed-point form:
   per axis, scale = in/out, filterscale = max(scale, 1), support =
   1.0*filterscale; for output index i: center = (i + 0.5)*scale,
   xmin = max(int(center - support + 0.5), 0) (C truncation),
   xmax = min(int(center + support + 0.5), in); weights
   w_k = tri((xmin + k - center + 0.5)/filterscale), tri(t) = max(0, 1 - |t|),
   k = 0..xmax-xmin-1, normalised by their sum (doubles), then converted to
   integers W_k = int(w_k * 2^22 + 0.5) (w_k >= 0 here).
   Horizontal pass first (only if the width changes), then vertical (only if
   the height changes), each on uint8 data: acc = 2^21 + sum_k in[xmin+k]*W_k
   (32-bit int), out = clamp(acc >> 22, 0, 255) -> uint8 between the passes.
   For 256 -> 128 (scale 2, support 2) this is the kernel [1,3,3,1]/8 over
   source pixels 2i-1..2i+2 for 1 <= i <= 126 (W = 524288, 1572864, 1572864,
   524288), and [3,3,1]/7 at i = 0 (pixels 0..2), [1,3,3]/7 at i = 127
   (pixels 253..255) (W = 1797559, 1797559, 599186 / mirrored).
3. Center crop S x S: top = int(round((H' - S)/2)), left = int(round((W' - S)/2))
   (Python round, half to even) of the resized H' x W' image.
4. BGR -> RGB, float32 / 255 (Normalize(0, 1) is the identity), NCHW.
5. probs = output0[0] (no further softmax); top1 = argmax.
"""
from __future__ import annotations

import os
import sys

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS)
import yolo_common  # noqa: E402  (stdlib only)

yolo_common.install_network_guard("tools/yolo_reference_seg_cls.py")  # this tool never needs the network

import argparse  # noqa: E402
import ast  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402


# ----------------------------------------------------------------- metadata
def model_meta(path):
    import onnx
    m = onnx.load(path, load_external_data=False)
    meta = {p.key: p.value for p in m.metadata_props}
    out = {"task": meta.get("task")}
    if "imgsz" in meta:
        v = ast.literal_eval(meta["imgsz"])
        out["imgsz"] = list(v) if isinstance(v, (list, tuple)) else int(v)
    if "names" in meta:
        out["names"] = {int(k): v for k, v in ast.literal_eval(meta["names"]).items()}
    return out


# ----------------------------------------------------------------- Ultralytics run
def run_ultralytics(a, task, imgsz, out):
    import torch
    torch.set_num_threads(2)
    from ultralytics import YOLO

    model = YOLO(a.model, task=task)
    tensors = {}
    for path in a.images:
        kw = dict(conf=a.conf, iou=a.iou, imgsz=imgsz, max_det=a.max_det, device="cpu", verbose=False, save=False)
        if task == "segment":
            kw["retina_masks"] = True
        r = model.predict(path, **kw)[0]
        names = r.names
        if task == "segment":
            dets = []
            b = r.boxes
            md = r.masks.data.cpu().numpy() if r.masks is not None else []
            assert len(md) == len(b), (len(md), len(b))
            for k, (xyxy, s, c) in enumerate(zip(b.xyxy.tolist(), b.conf.tolist(), b.cls.tolist())):
                c = int(c)
                m = md[k] > 0
                assert m.shape == r.orig_shape, (m.shape, r.orig_shape)
                dets.append({"class": names[c], "class_id": c, "score": float(s), "box": [float(v) for v in xyxy],
                             "mask_area": int(m.sum()), "mask_rle": yolo_common.rle_encode(m)})
            rec = {"image": path, "detections": dets}
        else:
            p = r.probs.data.cpu().numpy().astype(float)
            rec = {"image": path, "probs": [float(v) for v in p], "top1": names[int(r.probs.top1)],
                   "names": [names[i] for i in range(len(names))]}
        if out is not None:
            out.write(json.dumps(rec) + "\n")
            out.flush()
        if a.verify:  # the predictor's own preprocessing of this image, for the tensor check
            import cv2
            tensors[path] = model.predictor.preprocess([cv2.imread(path, cv2.IMREAD_COLOR)]).cpu().numpy()
    return tensors


# ----------------------------------------------------------------- numpy re-implementation
def pil_bilinear_coeffs(in_size, out_size):
    """Pillow's precompute_coeffs + normalize_coeffs_8bpc for the BILINEAR filter."""
    import numpy as np
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    bounds, weights = [], []
    for i in range(out_size):
        center = (i + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        w = [max(0.0, 1.0 - abs((xmin + k - center + 0.5) / filterscale)) for k in range(xmax - xmin)]
        s = sum(w)
        w = [v / s if s != 0.0 else v for v in w]
        w = [int(-0.5 + v * (1 << 22)) if v < 0 else int(0.5 + v * (1 << 22)) for v in w]
        bounds.append((xmin, xmax - xmin))
        weights.append(np.array(w, np.int64))
    return bounds, weights


def pil_resample_axis(img, out_size, axis):
    """One Pillow 8-bit resampling pass along axis (1 = horizontal, 0 = vertical)."""
    import numpy as np
    src = np.moveaxis(img, axis, 0).astype(np.int64)  # (in, other, C)
    bounds, weights = pil_bilinear_coeffs(src.shape[0], out_size)
    out = np.empty((out_size,) + src.shape[1:], np.uint8)
    for i, ((x0, n), w) in enumerate(zip(bounds, weights)):
        acc = (1 << 21) + np.tensordot(w, src[x0:x0 + n], axes=(0, 0))
        out[i] = np.clip(acc >> 22, 0, 255)
    return np.moveaxis(out, 0, axis)


def classify_preprocess(bgr, size):
    """classify_transforms(size) on a BGR uint8 image, written out (see the docstring)."""
    import numpy as np
    h, w = bgr.shape[:2]
    short, long = min(h, w), max(h, w)
    ns, nl = size, int(size * long / short)
    nw, nh = (ns, nl) if w <= h else (nl, ns)
    img = bgr
    if (nh, nw) != (h, w):
        if nw != w:
            img = pil_resample_axis(img, nw, 1)
        if nh != h:
            img = pil_resample_axis(img, nh, 0)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    img = img[top:top + size, left:left + size]
    x = img[:, :, ::-1].astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(x.transpose(2, 0, 1))[None]


def torch_bilinear(x, out_h, out_w):
    """PyTorch F.interpolate(mode='bilinear', align_corners=False) of x (n, h, w) float32, with
    size given (scale = in/out in float32), as the CPU kernel computes it."""
    import numpy as np

    def idx(n_in, n_out):
        scale = np.float32(n_in) / np.float32(n_out)
        src = scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
        src = np.maximum(src, np.float32(0.0))
        i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        l1 = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
        i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
        return i0, i1, (np.float32(1.0) - l1).astype(np.float32), l1

    y0, y1, ly0, ly1 = idx(x.shape[1], out_h)
    x0, x1, lx0, lx1 = idx(x.shape[2], out_w)
    r0 = x[:, y0][:, :, x0] * lx0 + x[:, y0][:, :, x1] * lx1
    r1 = x[:, y1][:, :, x0] * lx0 + x[:, y1][:, :, x1] * lx1
    return (r0 * ly0[:, None] + r1 * ly1[:, None]).astype(np.float32)


def segment_predict(sess, names, size, bgr, conf, iou, max_det=300):
    """The SEGMENT spec of the docstring, numpy + onnxruntime. Returns (input tensor, detections,
    masks (n, h, w) bool, margins: how close the nearest decision came to flipping: |best class
    score - conf| over all anchors, |IoU - iou| over the NMS comparisons of kept boxes with
    lower-scored boxes of their class, |logit| over the pixels inside the reported boxes)."""
    import numpy as np
    import yolo_parity_numpy as ypn
    h, w = bgr.shape[:2]
    img, (gx, gy), (px, py) = ypn.letterbox(bgr, size)
    x = ypn.to_tensor(img)
    out0, protos = sess.run(None, {sess.get_inputs()[0].name: x})
    nc = len(names)
    p = out0[0].T
    sc = p[:, 4:4 + nc]
    score, cls = sc.max(1), sc.argmax(1)
    margins = {"score": float(np.abs(score - conf).min())}  # closest candidate decision
    keep = score > conf
    p, score, cls = p[keep], score[keep], cls[keep]
    xyxy = np.stack([p[:, 0] - p[:, 2] / 2, p[:, 1] - p[:, 3] / 2, p[:, 0] + p[:, 2] / 2, p[:, 1] + p[:, 3] / 2], 1)
    k = ypn.nms(xyxy + cls[:, None] * 7680, score, iou)[:max_det]
    ious = [ypn.iou_one(xyxy[i], xyxy[(cls == cls[i]) & (score < score[i])]) for i in k]  # kept vs lower, same class
    ious = np.concatenate(ious) if ious else np.zeros(0)
    margins["nms_iou"] = float(np.abs(ious - iou).min()) if ious.size else None
    xyxy, score, cls, coef = xyxy[k], score[k], cls[k], p[k, 4 + nc:]
    b = xyxy.astype(np.float32).copy()
    b[:, [0, 2]] = np.clip((b[:, [0, 2]] - px) / np.float32(gx), 0, w)
    b[:, [1, 3]] = np.clip((b[:, [1, 3]] - py) / np.float32(gy), 0, h)
    c, mh, mw = protos.shape[1:]
    logits = (coef.astype(np.float32) @ protos[0].reshape(c, -1)).reshape(-1, mh, mw)
    g = min(4 * mh / h, 4 * mw / w)
    pad = (4 * mh - max(round(h * g), 1)) | (4 * mw - max(round(w * g), 1))
    f = 4 // math.gcd(4, pad | pad // 2)
    if f > 1:
        logits = torch_bilinear(logits, mh * f, mw * f)
    m_h, m_w = logits.shape[1:]
    if (m_h, m_w) != (h, w):
        g2 = min(m_h / h, m_w / w)
        ch, cw = max(round(h * g2), 1), max(round(w * g2), 1)
        top, left = round((m_h - ch) / 2 - 0.1), round((m_w - cw) / 2 - 0.1)
        logits = torch_bilinear(np.ascontiguousarray(logits[:, top:top + ch, left:left + cw]), h, w)
    masks = logits > 0
    cols, rows = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)
    in_box = np.zeros(masks.shape, bool)
    for j in range(len(masks)):
        in_box[j] = ((cols >= b[j, 0]) & (cols < b[j, 2]))[None, :] & ((rows >= b[j, 1]) & (rows < b[j, 3]))[:, None]
        masks[j] &= in_box[j]
    nz = masks.reshape(len(masks), -1).any(1) if len(masks) else np.zeros(0, bool)
    margins["mask_logit"] = float(np.abs(logits[nz][in_box[nz]]).min()) if nz.any() else None
    dets = [{"class": names[int(cc)], "class_id": int(cc), "score": float(s), "box": [float(v) for v in bb]}
            for bb, s, cc in zip(b[nz], score[nz], cls[nz])]
    return x, dets, masks[nz], margins


def verify(a, task, meta, imgsz, refs, tensors):
    import cv2
    import numpy as np
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    names = meta["names"]
    size = imgsz[0] if isinstance(imgsz, (list, tuple)) else imgsz
    bad, rep = 0, {"model": a.model, "task": task, "images": len(a.images), "max_abs_input_diff": 0.0}
    if task == "segment":
        rep.update({"detections": 0, "max_abs_score_diff": 0.0, "max_abs_box_diff_px": 0.0,
                    "mask_pixels_differing": 0, "mask_pixels_total": 0, "margins": {}})
    else:
        rep.update({"max_abs_prob_diff": 0.0, "top1_agree": 0})
    for path, ref in zip(a.images, refs):
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        ok = True
        if task == "segment":
            x, dets, masks, margins = segment_predict(sess, names, size, bgr, a.conf, a.iou, a.max_det)
            for mk, mv in margins.items():
                cur = rep["margins"].get(mk)
                if mv is not None and (cur is None or mv < cur["value"]):
                    rep["margins"][mk] = {"value": mv, "image": path}
            rd = ref["detections"]
            ok = len(dets) == len(rd)
            for j, (m, r) in enumerate(zip(dets, rd) if ok else []):
                ds = abs(m["score"] - r["score"])
                db = max(abs(u - v) for u, v in zip(m["box"], r["box"]))
                rm = yolo_common.rle_decode(r["mask_rle"], *bgr.shape[:2])
                nd = int((rm != masks[j]).sum())
                rep["max_abs_score_diff"] = max(rep["max_abs_score_diff"], ds)
                rep["max_abs_box_diff_px"] = max(rep["max_abs_box_diff_px"], db)
                rep["mask_pixels_differing"] += nd
                rep["mask_pixels_total"] += int(rm.sum())
                ok &= m["class_id"] == r["class_id"] and ds <= 1e-4 and db <= 0.05 and nd == 0
                ok &= r["mask_area"] == int(rm.sum())
                rep["detections"] += 1
            if not ok:
                print(f"MISMATCH {path}: mine {json.dumps(dets)}\n  reference "
                      f"{json.dumps([{k: v for k, v in r.items() if k != 'mask_rle'} for r in rd])}", file=sys.stderr)
        else:
            x = classify_preprocess(bgr, size)
            p = sess.run(None, {sess.get_inputs()[0].name: x})[0][0]
            dp = float(np.abs(p - np.asarray(ref["probs"])).max())
            top1 = names[int(np.argmax(p))]
            rep["max_abs_prob_diff"] = max(rep["max_abs_prob_diff"], dp)
            rep["top1_agree"] += top1 == ref["top1"]
            ok = dp <= 1e-5 and top1 == ref["top1"]
            if not ok:
                print(f"MISMATCH {path}: mine {p.tolist()} {top1}\n  reference {ref['probs']} {ref['top1']}",
                      file=sys.stderr)
        if path in tensors:
            t = tensors[path]
            di = float(np.abs(t - x).max()) if t.shape == x.shape else float("inf")
            rep["max_abs_input_diff"] = max(rep["max_abs_input_diff"], di)
            ok &= di == 0.0
        bad += not ok
    rep["mismatched_images"] = bad
    rep["conf"], rep["iou"] = a.conf, a.iou
    print(json.dumps(rep))
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="Ultralytics-exported ONNX (segment or classify)")
    ap.add_argument("images", nargs="+")
    ap.add_argument("--task", choices=["segment", "classify"], default=None, help="default: metadata 'task'")
    ap.add_argument("--conf", type=float, default=0.25, help="Ultralytics' predict default: 0.25 (segment only)")
    ap.add_argument("--iou", type=float, default=0.7, help="Ultralytics' default: 0.7 (segment only)")
    ap.add_argument("--imgsz", type=int, nargs="+", default=None, help="default: the model's metadata imgsz")
    ap.add_argument("--max-det", type=int, default=300)
    ap.add_argument("--verify", action="store_true", help="check the numpy re-implementation against Ultralytics")
    ap.add_argument("--reference", help="with --verify: saved output of this tool instead of a fresh run")
    a = ap.parse_args()

    meta = model_meta(a.model) if a.model.endswith(".onnx") else {}
    task = a.task or meta.get("task")
    if task not in ("segment", "classify"):
        sys.exit(f"task {task!r}: this tool handles segment and classify models (detect: tools/yolo_reference.py)")
    imgsz = a.imgsz if a.imgsz else meta.get("imgsz", 640)
    if isinstance(imgsz, list) and len(imgsz) == 1:
        imgsz = imgsz[0]

    # Ultralytics logs go to stdout through a handler made at import time: point it at
    # stderr so stdout is only the JSON lines
    out, sys.stdout = sys.stdout, sys.stderr
    if not a.verify:
        run_ultralytics(a, task, imgsz, out)
        return
    if a.reference:
        saved = {r["image"]: r for r in map(json.loads, open(a.reference).read().splitlines())}
        missing = [p for p in a.images if p not in saved]
        assert not missing, f"not in {a.reference}: {missing}"
        refs = [saved[p] for p in a.images]
        tensors = run_ultralytics(a, task, imgsz, None)
    else:
        import io
        buf = io.StringIO()
        tensors = run_ultralytics(a, task, imgsz, buf)
        refs = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert len(refs) == len(a.images), (len(refs), len(a.images))
    assert all(r["image"] == p for r, p in zip(refs, a.images)), "reference images differ from the arguments"
    sys.stdout = out
    bad = verify(a, task, meta, imgsz, refs, tensors)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
