#!/usr/bin/env python3
"""Make the sample fixtures in samples/ from a seed not used for train/val/test,
and screen them against the exported model.

    python tools/make_samples.py [--seed 4000] [--model models/surface-classifier.onnx]

Writes:
    samples/line.avi          60 frames, 256x256, MJPG in AVI, 10 fps, one part per frame
    samples/line.labels.csv   frame,class,ng
    samples/line.scores.csv   frame,class,ng,p_ng (P(NG) from onnxruntime on the decoded frame)
    samples/parts/NNN_<class>.png   20 still images
    samples/screening.json    how many candidates the screening dropped

SCREENING: the Rust tests assert that every frame gets its labelled verdict, so
these files are a deterministic fixture, not a measurement.  Each slot gets a
fresh candidate image until the model (run exactly as deployed: decode ->
cv2.resize INTER_LINEAR 128 -> RGB -> /255 -> (x-0.5)/0.25 -> onnxruntime ->
softmax) gives the labelled verdict with P(NG) at least --margin away from the
threshold.  The honest error rates are in models/surface-classifier.metrics.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_dataset import CLASSES, render  # noqa: E402
from train_classifier import preprocess, softmax  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Model:
    def __init__(self, path):
        import onnx
        import onnxruntime as ort
        meta = {p.key: p.value for p in onnx.load(path).metadata_props}
        self.meta = json.loads(meta["linesight"])
        self.T = float(self.meta["ng_threshold"])
        self.sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

    def p_ng(self, bgr):
        x = preprocess(bgr)[None]
        logits = self.sess.run(["scores"], {"images": x})[0]
        return float(1.0 - softmax(logits)[0, 0])


def candidate(seed, kind, slot, attempt, cls):
    rng = np.random.default_rng([seed, kind, slot, attempt])
    return render(rng, cls)


def schedule(seed, n, n_ng):
    """n class names, n_ng of them NG with the defect types spread evenly."""
    defects = CLASSES[1:]
    cls = [defects[i % len(defects)] for i in range(n_ng)] + ["good"] * (n - n_ng)
    rng = np.random.default_rng([seed, 99])
    return [cls[i] for i in rng.permutation(n)]


def ok(model, p, cls, margin):
    ng = cls != "good"
    return (p >= model.T) == ng and abs(p - model.T) >= margin


def write_video(path, frames):
    vw = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (256, 256), True)
    assert vw.isOpened(), "cannot open VideoWriter for " + path
    for f in frames:
        vw.write(f)
    vw.release()


def read_video(path):
    cap = cv2.VideoCapture(path)
    out = []
    while True:
        r, f = cap.read()
        if not r:
            break
        out.append(f)
    cap.release()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=4000)
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "surface-classifier.onnx"))
    ap.add_argument("--out", default=os.path.join(ROOT, "samples"))
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--ng-frames", type=int, default=20)
    ap.add_argument("--parts", type=int, default=20)
    ap.add_argument("--margin", type=float, default=0.15)
    a = ap.parse_args()

    model = Model(a.model)
    T = model.T
    os.makedirs(a.out, exist_ok=True)
    stats = {"seed": a.seed, "threshold": T, "margin": a.margin,
             "video": {"slots": a.frames, "rejected_candidates": {c: 0 for c in CLASSES}},
             "parts": {"slots": a.parts, "rejected_candidates": {c: 0 for c in CLASSES}}}

    # ---------------- video
    classes = schedule(a.seed, a.frames, a.ng_frames)
    attempts = [0] * a.frames
    frames = [candidate(a.seed, 1, i, 0, c) for i, c in enumerate(classes)]
    avi = os.path.join(a.out, "line.avi")
    for rnd in range(50):
        write_video(avi, frames)
        dec = read_video(avi)
        assert len(dec) == a.frames, f"decoded {len(dec)} frames, wrote {a.frames}"
        ps = [model.p_ng(f) for f in dec]
        bad = [i for i, (p, c) in enumerate(zip(ps, classes)) if not ok(model, p, c, a.margin)]
        print(f"video round {rnd}: {len(bad)} frame(s) off or too close to T", flush=True)
        if not bad:
            break
        for i in bad:
            stats["video"]["rejected_candidates"][classes[i]] += 1
            attempts[i] += 1
            frames[i] = candidate(a.seed, 1, i, attempts[i], classes[i])
    else:
        raise SystemExit("could not screen the video")
    with open(os.path.join(a.out, "line.labels.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["frame", "class", "ng"])
        for i, c in enumerate(classes):
            w.writerow([i, c, int(c != "good")])
    with open(os.path.join(a.out, "line.scores.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["frame", "class", "ng", "p_ng"])
        for i, (c, p) in enumerate(zip(classes, ps)):
            w.writerow([i, c, int(c != "good"), f"{p:.6f}"])
    stats["video"]["min_margin"] = float(min(abs(p - T) for p in ps))
    stats["video"]["ng_frames"] = int(sum(c != "good" for c in classes))
    stats["video"]["bytes"] = os.path.getsize(avi)

    # ---------------- still images
    pdir = os.path.join(a.out, "parts")
    os.makedirs(pdir, exist_ok=True)
    for old in os.listdir(pdir):
        if old.endswith(".png"):
            os.remove(os.path.join(pdir, old))
    pclasses = schedule(a.seed + 1, a.parts, a.parts // 2)
    pmargins = []
    for i, c in enumerate(pclasses):
        for att in range(100):
            img = candidate(a.seed, 2, i, att, c)
            path = os.path.join(pdir, f"{i:03d}_{c}.png")
            cv2.imwrite(path, img)
            p = model.p_ng(cv2.imread(path, cv2.IMREAD_COLOR))
            if ok(model, p, c, a.margin):
                pmargins.append(abs(p - T))
                break
            stats["parts"]["rejected_candidates"][c] += 1
        else:
            raise SystemExit("could not screen part %d" % i)
    stats["parts"]["min_margin"] = float(min(pmargins))
    with open(os.path.join(a.out, "screening.json"), "w") as f:
        f.write(json.dumps(stats, indent=2) + "\n")
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
