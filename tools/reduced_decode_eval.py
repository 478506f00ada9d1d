#!/usr/bin/env python3
"""What reduced JPEG decoding (a camera's `decode`) does to each committed model's held-out figures.

Each model's own held-out test set (the seeds in its metrics.json, never used for training) is
regenerated, scaled 4x to 1024x1024 (INTER_LINEAR: a camera's resolution, the detail of the
synthetic 256-pixel renders) and written as JPEG at quality 95, as an MJPG camera delivers frames.
Then `linesight eval` scores each set twice with the release binary: decoded in full, and at the
reduction a camera's `decode: auto` takes for that model on a 1024x1024 frame (1/8 for the 128x128
classifiers, 1/4 for the 256x256 anomaly model and YOLO detector and segmenter). The table goes
to stdout (markdown) and the raw reports to --out.

    .cache/venv/bin/python3 tools/reduced_decode_eval.py [--out .cache/reduced-eval] [--n 400]

Needs the venv (OpenCV, NumPy) and `cargo build --release`; takes a few minutes on 2 cores.
"""

import argparse
import json
import os
import subprocess
import sys

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_dataset  # noqa: E402
import make_detection_dataset  # noqa: E402

SIDE = 1024
QUALITY = 95


def big_jpeg(path, img):
    up = cv2.resize(img, (SIDE, SIDE), interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(path, up, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])


def class_set(out, seed, n):
    """make_dataset's set `seed` as class folders of 1024x1024 JPEG."""
    if os.path.isdir(out):
        return out
    for i in range(n):
        img, cls = make_dataset.make_one(seed, i)
        d = os.path.join(out, cls)
        os.makedirs(d, exist_ok=True)
        big_jpeg(os.path.join(d, f"{i:05d}.jpg"), img)
    return out


def detection_set(out, seed, n):
    """make_detection_dataset's test split `seed` as images/ + labels/ (YOLO labels are relative)."""
    if os.path.isdir(out):
        return out
    tmp = out + ".png"
    # One process: a fork after OpenCV started its threads can deadlock.
    make_detection_dataset.write_split(tmp, "test", seed, n, workers=1)
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    os.makedirs(os.path.join(out, "labels"), exist_ok=True)
    for name in sorted(os.listdir(os.path.join(tmp, "images", "test"))):
        stem = os.path.splitext(name)[0]
        img = cv2.imread(os.path.join(tmp, "images", "test", name))
        big_jpeg(os.path.join(out, "images", stem + ".jpg"), img)
        with open(os.path.join(tmp, "labels", "test", stem + ".txt")) as src, \
                open(os.path.join(out, "labels", stem + ".txt"), "w") as dst:
            dst.write(src.read())
    return out


def evaluate(binary, model, data, decode):
    out = subprocess.run([binary, "eval", "--model", model, "--data", data, "--decode", decode, "--json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def figures(report):
    """The figures every model kind's report has, at the model's own operating point."""
    own = report["operating_point"]
    per_class = report.get("per_class_boxes_iou_0_5")
    return {
        "ng_recall": own.get("ng_recall"),
        "false_reject_rate": own.get("false_reject_rate"),
        "auroc": report.get("auroc_ng_score"),
        "box_f1": round(float(np.mean([c["f1"] for c in per_class.values()])), 4) if per_class else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=".cache/reduced-eval")
    ap.add_argument("--n", type=int, default=400, help="images per set")
    ap.add_argument("--binary", default="target/release/linesight")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    classes = class_set(os.path.join(args.out, "classes-3000"), 3000, args.n)
    yolo_cls = class_set(os.path.join(args.out, "classes-23000"), 23000, args.n)
    anomaly = class_set(os.path.join(args.out, "classes-33000"), 33000, args.n)
    boxes = detection_set(os.path.join(args.out, "boxes-13000"), 13000, min(args.n, 300))
    runs = [
        ("classifier", "models/surface-classifier.onnx", classes, "1/8"),
        ("YOLO classifier", "tests/models/surface-yolo-cls.onnx", yolo_cls, "1/8"),
        ("anomaly (PatchCore)", "models/surface-anomaly.onnx", anomaly, "1/4"),
        ("YOLO detector", "models/surface-detector.onnx", boxes, "1/4"),
        ("YOLO segmenter", "models/surface-segmenter.onnx", boxes, "1/4"),
    ]
    rows, raw = [], {}
    for name, model, data, reduced in runs:
        full = evaluate(args.binary, model, data, "full")
        red = evaluate(args.binary, model, data, reduced)
        raw[name] = {"full": full, reduced: red}
        f, r = figures(full), figures(red)
        cell = lambda k: "-" if f[k] is None else f"{f[k]} → {r[k]}"
        rows.append(f"| {name} | {os.path.basename(data)} ({full['images']['ok'] + full['images']['ng']}) | {reduced} "
                    f"| {cell('ng_recall')} | {cell('false_reject_rate')} | {cell('auroc')} | {cell('box_f1')} |")
        print(f"{name}: done", file=sys.stderr)
    with open(os.path.join(args.out, "reports.json"), "w") as fh:
        json.dump(raw, fh, indent=1)
    print("| model | held-out set (images) | reduced to | NG recall full → reduced | false-reject rate | AUROC | box F1 (IoU 0.5, mean of classes) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
