#!/usr/bin/env python3
"""Check the plain onnxruntime + numpy pipeline (what linesight does, no anomalib)
against anomalib's own reference predictions for the anomaly model.

    python tools/anomaly_parity.py                       # models/surface-anomaly.* (defaults)
    python tools/anomaly_parity.py --model M.onnx --reference R.jsonl [--tol 1e-4]

For each line of the reference (written by tools/train_anomaly.py with anomalib's
OpenVINOInferencer on the exported ONNX, f32), the image is read and fed exactly as
the sidecar (M.onnx.json) says:

    bgr = cv2.imread(path)                                   # uint8 BGR
    if size != (W, H): bgr = cv2.resize(bgr, (W, H), interpolation=cv2.INTER_LINEAR)
    x = bgr[:, :, ::-1] (RGB) as float32 / 255, HWC -> NCHW, batch 1
    outputs = pred_score [1], pred_label [1] bool, anomaly_map [1,1,H,W], pred_mask [1,1,H,W] bool

and compared field by field (pred_score, pred_label, anomaly_map max/mean/argmax,
pred_mask area). It also checks the documented output semantics on every image:
pred_label == (pred_score > threshold), pred_mask == (anomaly_map > pixel_threshold),
both in [0, 1]. Prints the worst differences; exit status 1 if a score differs by
more than --tol or a label differs (other than for a score within --tol of the
threshold).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def preprocess(path, width, height):
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(path)
    if bgr.shape[:2] != (height, width):
        bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_LINEAR)
    x = bgr[:, :, ::-1].astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def summarise(o):
    amap = o["anomaly_map"].astype(np.float64)
    return {"pred_score": float(o["pred_score"].reshape(-1)[0]),
            "pred_label": bool(o["pred_label"].reshape(-1)[0]),
            "anomaly_map_max": float(amap.max()), "anomaly_map_mean": float(amap.mean()),
            "anomaly_map_argmax_yx": [int(v) for v in np.unravel_index(int(amap.reshape(-1).argmax()), amap.shape[-2:])],
            "anomaly_map_shape": [int(amap.shape[-2]), int(amap.shape[-1])],
            "pred_mask_area": int(o["pred_mask"].astype(bool).sum())}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "surface-anomaly.onnx"))
    ap.add_argument("--reference", default=None, help="default: <model without .onnx>.reference.jsonl")
    ap.add_argument("--sidecar", default=None, help="default: <model>.json")
    ap.add_argument("--tol", type=float, default=1e-4, help="max abs difference of scores / map values")
    ap.add_argument("--against", default="reference",
                    help="'reference' (top-level fields, OpenVINOInferencer) or a nested key of the "
                         "reference lines: 'torch_inferencer' or 'onnxruntime'")
    a = ap.parse_args()
    import onnxruntime as ort

    ref_path = a.reference or a.model[:-len(".onnx")] + ".reference.jsonl"
    side = json.load(open(a.sidecar or a.model + ".json"))
    W, H = side["input"]["width"], side["input"]["height"]
    thr, pthr = float(side["threshold"]), float(side.get("pixel_threshold", 0.5))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    out_names = [o.name for o in sess.get_outputs()]
    print(f"model {os.path.relpath(a.model, ROOT)}: input {in_name} {sess.get_inputs()[0].shape}, "
          f"outputs {out_names}; reference {os.path.relpath(ref_path, ROOT)} ({a.against})")

    worst = {"pred_score": (0.0, None), "anomaly_map_max": (0.0, None), "anomaly_map_mean": (0.0, None),
             "pred_mask_area": (0, None)}
    failures, n = [], 0
    for line in open(ref_path):
        ref = json.loads(line)
        img = ref["image"]
        path = img if os.path.isabs(img) else os.path.join(ROOT, img)
        r = ref if a.against == "reference" else ref[a.against]
        o = dict(zip(out_names, sess.run(None, {in_name: preprocess(path, W, H)})))
        got = summarise(o)
        n += 1
        # the graph's own semantics, checked on the full tensors
        if got["pred_label"] != (got["pred_score"] > thr):
            failures.append(f"{img}: pred_label {got['pred_label']} but pred_score {got['pred_score']} vs {thr}")
        if not np.array_equal(o["pred_mask"].astype(bool), o["anomaly_map"] > pthr):
            failures.append(f"{img}: pred_mask != anomaly_map > {pthr}")
        for k in ("pred_score", "anomaly_map"):
            v = np.asarray(o[k])
            if v.min() < 0 or v.max() > 1:
                failures.append(f"{img}: {k} outside [0,1]: {v.min()}..{v.max()}")
        if got["anomaly_map_shape"] != r["anomaly_map_shape"]:
            failures.append(f"{img}: anomaly_map shape {got['anomaly_map_shape']} vs {r['anomaly_map_shape']}")
        for k in ("pred_score", "anomaly_map_max", "anomaly_map_mean"):
            d = abs(got[k] - r[k])
            if d > worst[k][0]:
                worst[k] = (d, img)
            if d > a.tol:
                failures.append(f"{img}: {k} {got[k]:.7f} vs reference {r[k]:.7f} (diff {d:.2e})")
        d = abs(got["pred_mask_area"] - r["pred_mask_area"])
        if d > worst["pred_mask_area"][0]:
            worst["pred_mask_area"] = (d, img)
        if got["pred_label"] != r["pred_label"] and abs(r["pred_score"] - thr) > a.tol:
            failures.append(f"{img}: pred_label {got['pred_label']} vs reference {r['pred_label']}")
        flag = "" if got["pred_label"] == r["pred_label"] else "  LABEL DIFFERS"
        print(f"  {os.path.basename(img):28s} score {got['pred_score']:.6f} (ref {r['pred_score']:.6f}) "
              f"label {int(got['pred_label'])} map max {got['anomaly_map_max']:.5f} (ref {r['anomaly_map_max']:.5f}) "
              f"argmax {got['anomaly_map_argmax_yx']} (ref {r.get('anomaly_map_argmax_yx')}) "
              f"mask {got['pred_mask_area']} (ref {r['pred_mask_area']}){flag}")
    print(f"{n} images; worst differences:")
    for k, (d, img) in worst.items():
        print(f"  {k:17s} {d:.3g}" + (f"  ({os.path.basename(img)})" if img else ""))
    if failures:
        print("FAIL:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print(f"OK (tolerance {a.tol:g}; mask areas may differ by pixels whose map value is within float noise of "
          f"{pthr})")


if __name__ == "__main__":
    main()
