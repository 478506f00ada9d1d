#!/usr/bin/env python3
"""Plain numpy + onnxruntime re-implementation of what Ultralytics' predictor
does with an exported YOLO detection ONNX (letterbox, decode, NMS, scale back),
checked against tools/yolo_reference.py. It is the written-out contract the
Rust implementation follows; no Ultralytics import here.

    python tools/yolo_parity_numpy.py models/surface-detector.onnx IMAGE... [--conf 0.25] [--iou 0.7]
    python tools/yolo_parity_numpy.py MODEL.onnx IMAGE... --reference REF.jsonl   # compare with a saved run

Without --reference it runs tools/yolo_reference.py itself. Exits 1 on any
mismatch (count, class, |score diff| > 1e-4, |box diff| > 0.05 px).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import onnx
import onnxruntime as ort

TOOLS = os.path.dirname(os.path.abspath(__file__))


def letterbox(bgr, size, pad_value=114):
    """Ultralytics LetterBox(auto=False, scaleup=True, center=True) for a fixed
    size x size input. Returns (padded image, (gain_x, gain_y), (pad_x, pad_y))."""
    h, w = bgr.shape[:2]
    r = min(size / h, size / w)
    nw, nh = max(round(w * r), 1), max(round(h * r), 1)  # Python round: half to even
    img = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nw, nh) != (w, h) else bgr
    dw, dh = (size - nw) / 2, (size - nh) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(pad_value,) * 3)
    # scale_boxes() recomputes the gain per axis from the rounded size, and the pad as round(d - 0.1)
    return img, (nw / w, nh / h), (left, top)


def to_tensor(img):
    x = img[:, :, ::-1].astype(np.float32) / 255.0  # BGR -> RGB, 0..1
    return np.ascontiguousarray(x.transpose(2, 0, 1))[None]  # NCHW


def iou_one(b, bs):
    ix = np.clip(np.minimum(b[2], bs[:, 2]) - np.maximum(b[0], bs[:, 0]), 0, None)
    iy = np.clip(np.minimum(b[3], bs[:, 3]) - np.maximum(b[1], bs[:, 1]), 0, None)
    inter = ix * iy
    area = (b[2] - b[0]) * (b[3] - b[1]) + (bs[:, 2] - bs[:, 0]) * (bs[:, 3] - bs[:, 1]) - inter
    return inter / np.maximum(area, 1e-12)


def nms(boxes, scores, iou):
    """Greedy NMS as torchvision.ops.nms: highest score first, drop boxes whose IoU with a kept box is > iou."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        order = rest[iou_one(boxes[i], boxes[rest]) <= iou]
    return np.array(keep, int)


def decode_raw(out, conf, iou, max_det=300, max_wh=7680):
    """output0 [1, 4+nc, N]: rows cx, cy, w, h (input pixels), then nc class scores (already sigmoid)."""
    p = out[0].T  # N x (4+nc)
    cls_scores = p[:, 4:]
    score = cls_scores.max(1)
    cls = cls_scores.argmax(1)
    m = score > conf
    p, score, cls = p[m], score[m], cls[m]
    xyxy = np.stack([p[:, 0] - p[:, 2] / 2, p[:, 1] - p[:, 3] / 2, p[:, 0] + p[:, 2] / 2, p[:, 1] + p[:, 3] / 2], 1)
    keep = nms(xyxy + cls[:, None] * max_wh, score, iou)[:max_det]  # class-aware: offset boxes per class
    return xyxy[keep], score[keep], cls[keep]


def decode_nms(out, conf, max_det=300):
    """output0 [1, 300, 6]: x1, y1, x2, y2 (input pixels), score, class; zero rows are padding."""
    d = out[0]
    d = d[d[:, 4] > conf][:max_det]
    return d[:, :4], d[:, 4], d[:, 5].astype(int)


def predict(sess, names, size, nms_model, path, conf, iou):
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    img, (gx, gy), (px, py) = letterbox(bgr, size)
    out = sess.run(None, {sess.get_inputs()[0].name: to_tensor(img)})[0]
    boxes, scores, cls = decode_nms(out, conf) if nms_model else decode_raw(out, conf, iou)
    h, w = bgr.shape[:2]
    b = boxes.astype(np.float32).copy()
    b[:, [0, 2]] = np.clip((b[:, [0, 2]] - px) / gx, 0, w)
    b[:, [1, 3]] = np.clip((b[:, [1, 3]] - py) / gy, 0, h)
    return [{"class": names[int(c)], "class_id": int(c), "score": float(s), "box": [float(v) for v in bb]}
            for bb, s, c in zip(b, scores, cls)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("images", nargs="+")
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--iou", type=float, default=0.7)
    ap.add_argument("--reference", help="saved yolo_reference.py output (JSON lines) instead of running it")
    a = ap.parse_args()

    meta = {p.key: p.value for p in onnx.load(a.model, load_external_data=False).metadata_props}
    names = {int(k): v for k, v in ast.literal_eval(meta["names"]).items()}
    size = ast.literal_eval(meta["imgsz"])
    size = size[0] if isinstance(size, (list, tuple)) else size
    nms_model = "'nms': True" in meta.get("args", "")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])

    if a.reference:
        ref_lines = open(a.reference).read().splitlines()
    else:
        cmd = [sys.executable, os.path.join(TOOLS, "yolo_reference.py"), a.model, *a.images,
               "--conf", str(a.conf), "--iou", str(a.iou)]
        ref_lines = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()
    refs = [json.loads(x) for x in ref_lines]
    assert len(refs) == len(a.images), (len(refs), len(a.images))

    bad = 0
    worst_s = worst_b = 0.0
    n = 0
    for path, ref in zip(a.images, refs):
        mine = predict(sess, names, size, nms_model, path, a.conf, a.iou)
        rd = ref["detections"]
        ok = len(mine) == len(rd)
        if ok:
            for m, r in zip(mine, rd):
                ds = abs(m["score"] - r["score"])
                db = max(abs(x - y) for x, y in zip(m["box"], r["box"]))
                worst_s, worst_b = max(worst_s, ds), max(worst_b, db)
                ok &= m["class_id"] == r["class_id"] and ds <= 1e-4 and db <= 0.05
                n += 1
        if not ok:
            bad += 1
            print(f"MISMATCH {path}: mine {json.dumps(mine)}\n  reference {json.dumps(rd)}")
    print(json.dumps({"model": a.model, "images": len(a.images), "detections": n, "mismatched_images": bad,
                      "max_abs_score_diff": worst_s, "max_abs_box_diff_px": worst_b, "conf": a.conf, "iou": a.iou}))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
