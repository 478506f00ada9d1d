#!/usr/bin/env python3
"""Synthetic surface-defect DETECTION data set (YOLO format) for linesight.

Same camera, parts, backgrounds, lighting and defect drawing as
tools/make_dataset.py (the classifier's generator, whose helpers are imported
from it unchanged: that file and the classifier's data are not modified), but
every image holds 0..3 separate defect *instances*, each with a bounding box
computed from the mask that was actually drawn:

    0 scratch  one thin, slightly curved line, dark or bright, 1-3 px wide
    1 spot     one irregular dark blurred stain, radius 3-9 px
    2 chip     one bite out of the part's edge, showing the background

(make_dataset's ``crack`` is left out: it is a jagged dark line like a
scratch, and the classifier already shows the two are hard to tell apart.)

Boxes: for scratch/spot the pixels whose drawn intensity is >= BOX_LEVEL of the
defect's full contrast, after the mask is clipped to the part (what is really
drawn); for chip the pixels whose part coverage dropped by >= 0.5 (the missing
material). The box is the tight pixel-edge box [xmin, ymin, xmax+1, ymax+1]
around them, written as ``class cx cy w h`` normalised by the image size.
An instance whose box overlaps an earlier one by IoU > MAX_IOU, or that keeps
fewer than MIN_PIXELS pixels, is redrawn (up to a few times, then dropped
before anything is drawn), so every label matches a visible defect and every
drawn defect has a label.

Image ``i`` of the split with seed ``s`` depends only on
``numpy.random.default_rng([s, i])``. Default splits (disjoint seeds, also
disjoint from the classifier's 1000/2000/3000/4000):
train 11000, val 12000, held-out test 13000.

    python tools/make_detection_dataset.py --out tools/data/detection \
        --n-train 1500 --n-val 200 --n-test 300

writes ``OUT/images/{train,val,test}/NNNNN.png``, ``OUT/labels/{...}/NNNNN.txt``
(empty file = no defect) and ``OUT/data.yaml`` (absolute ``path``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_dataset import (  # noqa: E402  (the classifier's generator, used as is)
    SIZE, _XX, _YY, _background, _draw_polyline, _linear_gradient, _part_sdf,
    _point_on_part, _smooth_noise,
)

CLASSES = ["scratch", "spot", "chip"]
N_DEFECT_P = [0.2, 0.3, 0.3, 0.2]  # P(0, 1, 2, 3 defects in an image)
BOX_LEVEL = 0.25   # scratch/spot: mask level (fraction of full contrast) inside the box
MIN_PIXELS = 4     # an instance must keep at least this many such pixels
MAX_IOU = 0.25     # max IoU of a new instance's box with any earlier box
TRIES = 6
SPLIT_SEEDS = {"train": 11000, "val": 12000, "test": 13000}


# ---------------------------------------------------------------- instances
def _one_scratch(rng, sdf, size):
    """One scratch line (make_dataset._scratch's distributions, one line)."""
    x0, y0 = _point_on_part(rng, sdf, 10)
    length = rng.uniform(0.35, 1.0) * size
    ang = rng.uniform(0, np.pi)
    bend = rng.uniform(-0.25, 0.25)
    pts = []
    for t in np.linspace(-0.5, 0.5, 8):
        a = ang + bend * t * 2
        pts.append((x0 + np.cos(a) * t * length, y0 + np.sin(a) * t * length))
    line = np.zeros((SIZE, SIZE), np.float32)
    th = int(rng.choice([1, 1, 2, 2, 3]))
    _draw_polyline(line, pts, th)
    m = line * rng.uniform(0.8, 1.0)
    sign = -1.0 if rng.random() < 0.6 else 1.0
    lo = 60 if th == 1 else 40
    return m, sign * rng.uniform(lo, 95)


def _one_spot(rng, sdf, size):
    """One stain (make_dataset._spot's distributions, one spot)."""
    cx, cy = _point_on_part(rng, sdf, 12)
    r = rng.uniform(3.0, 9.0)
    blob = np.zeros((SIZE, SIZE), np.float32)
    for _ in range(int(rng.integers(1, 4))):  # irregular stain = few ellipses
        ox, oy = rng.normal(0, r * 0.4, 2)
        ax = max(2.0, r * rng.uniform(0.6, 1.2))
        ay = max(2.0, ax * rng.uniform(0.5, 1.0))
        cv2.ellipse(blob, (int(round((cx + ox) * 16)), int(round((cy + oy) * 16))),
                    (int(ax * 16), int(ay * 16)), rng.uniform(0, 180), 0, 360,
                    1.0, -1, cv2.LINE_AA, shift=4)
    blob = cv2.GaussianBlur(blob, (0, 0), rng.uniform(0.6, 2.0))
    return blob / max(blob.max(), 1e-6), -rng.uniform(40, 100)


def _bite(rng, sdf0, cx, cy, scale):
    """make_dataset's chip bite: signed distance of an irregular ellipse centred
    near a random point of the outline (negative inside the bite)."""
    ys, xs = np.nonzero(np.abs(sdf0) < 1.0)
    j = rng.integers(len(xs))
    br = rng.uniform(10, 22) * scale
    off = rng.uniform(-0.3, 0.2) * br
    gx, gy = xs[j] - cx, ys[j] - cy
    gn = np.hypot(gx, gy) + 1e-6
    bx, by = xs[j] + gx / gn * off, ys[j] + gy / gn * off
    ea = rng.uniform(0.6, 1.0)
    ba = rng.uniform(0, np.pi)
    c, s = np.cos(ba), np.sin(ba)
    u = c * (_XX - bx) + s * (_YY - by)
    v = -s * (_XX - bx) + c * (_YY - by)
    bite = (np.sqrt(u * u + (v / ea) ** 2) - br) * ea
    bite += _smooth_noise(rng, 1.5, 0.8)
    return bite


def _box(mask_bool):
    ys, xs = np.nonzero(mask_bool)
    if len(xs) < MIN_PIXELS:
        return None
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def _iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / ua if ua > 0 else 0.0


def _free(box, boxes):
    return all(_iou(box, b) <= MAX_IOU for b in boxes)


# ---------------------------------------------------------------- renderer
def render_det(rng: np.random.Generator, kinds: list[str], masks: list | None = None):
    """One 256x256 BGR uint8 image with one defect instance per entry of
    ``kinds`` (class names). Returns (image, [(class_id, (x0, y0, x1, y1)), ...])
    with pixel-edge boxes; instances that could not be placed are dropped.

    If ``masks`` is a list, the boolean 256x256 mask each box was computed from
    is appended to it, in the order of the returned instances (used by
    make_segmentation_dataset.py; it changes nothing else: no extra random
    draws, same image, same boxes)."""
    metal = rng.uniform(110, 205)
    bg, tint = _background(rng, metal)

    # ---- part geometry (as make_dataset.render)
    shape = "disc" if rng.random() < 0.5 else "rrect"
    scale = rng.uniform(0.85, 1.12)
    cx = SIZE / 2 + rng.uniform(-20, 20)
    cy = SIZE / 2 + rng.uniform(-20, 20)
    ang = rng.uniform(0, np.pi)
    if shape == "disc":
        size, aspect, corner = 72 * scale, 1.0, 0.0
    else:
        size = 76 * scale
        aspect = rng.uniform(0.65, 0.95)
        corner = rng.uniform(8, 22) * scale
    sdf0 = _part_sdf(shape, cx, cy, size, ang, aspect, corner)
    alpha0 = np.clip(sdf0 + 0.5, 0.0, 1.0)

    objs = []  # (class_id, box)
    # ---- chips first: they change the outline the other defects must stay on
    sdf = sdf0
    n_chip = sum(k == "chip" for k in kinds)
    for _ in range(n_chip):
        for _t in range(TRIES):
            bite = _bite(rng, sdf0, cx, cy, scale)
            removed = alpha0 - np.clip(np.minimum(sdf0, bite) + 0.5, 0.0, 1.0)
            box = _box(removed >= 0.5)
            if box is not None and _free(box, [b for _, b in objs]):
                sdf = np.minimum(sdf, bite)
                objs.append((CLASSES.index("chip"), box))
                if masks is not None:
                    masks.append(removed >= 0.5)
                break
    alpha = np.clip(sdf + 0.5, 0.0, 1.0)

    # ---- part surface (as make_dataset.render)
    part = np.full((SIZE, SIZE), metal, np.float32)
    part += _linear_gradient(rng, rng.uniform(5, 30))
    dx, dy = _XX - cx, _YY - cy
    if shape == "disc":
        rr = np.sqrt(dx * dx + dy * dy)
        part += np.sin(rr * rng.uniform(0.8, 1.6) + rng.uniform(0, 6)) * rng.uniform(0.5, 3)
        part += np.exp(-((rr - size * rng.uniform(0.82, 0.9)) ** 2) / 6.0) * rng.uniform(-12, 12)
    else:
        c, s = np.cos(ang), np.sin(ang)
        u = c * dx + s * dy
        part += np.sin(u * rng.uniform(0.9, 1.8)) * rng.uniform(0.5, 3)
    part += _smooth_noise(rng, rng.uniform(0.5, 2.0), rng.uniform(1, 4))
    hx, hy = cx + rng.uniform(-0.5, 0.5) * size, cy + rng.uniform(-0.5, 0.5) * size
    hs = rng.uniform(12, 35) * scale
    part += np.exp(-((_XX - hx) ** 2 + (_YY - hy) ** 2) / (2 * hs * hs)) * rng.uniform(10, 55)
    part -= np.exp(-np.clip(sdf, 0, None) / rng.uniform(1.5, 4.0)) * rng.uniform(0, 25)

    # ---- surface defects, one instance at a time, on what is left of the part
    on_part = np.clip(sdf - 1.0, 0, 1)
    for k in kinds:
        if k == "chip":
            continue
        fn = _one_scratch if k == "scratch" else _one_spot
        for _t in range(TRIES):
            mask, contrast = fn(rng, sdf, size)
            mask *= on_part
            box = _box(mask >= BOX_LEVEL)
            if box is not None and _free(box, [b for _, b in objs]):
                part += mask * contrast
                objs.append((CLASSES.index(k), box))
                if masks is not None:
                    masks.append(mask >= BOX_LEVEL)
                break
    if n_chip:
        # fractured edge is a bit darker just inside the bite (as make_dataset)
        part -= np.exp(-np.clip(sdf, 0, None) / 1.5) * rng.uniform(0, 15) * (sdf < 6)

    # ---- shadow, composition, lighting, camera (as make_dataset.render)
    sh_dx, sh_dy = rng.uniform(-6, 6, 2)
    shadow = cv2.warpAffine(alpha, np.float32([[1, 0, sh_dx], [0, 1, sh_dy]]), (SIZE, SIZE))
    shadow = cv2.GaussianBlur(shadow, (0, 0), rng.uniform(2, 6))
    bg = bg * (1.0 - shadow * rng.uniform(0.0, 0.35))

    grey = part * alpha + bg * (1.0 - alpha)
    img = np.repeat(grey[:, :, None], 3, axis=2)
    img += (tint[None, None, :] * (1.0 - alpha[:, :, None]))
    img += rng.uniform(-4, 4, size=3).astype(np.float32)[None, None, :] * alpha[:, :, None]

    img = (img - 128.0) * rng.uniform(0.75, 1.2) + 128.0 + rng.uniform(-25, 25)
    img += _linear_gradient(rng, rng.uniform(0, 30))[:, :, None]
    rv = ((_XX - SIZE / 2) ** 2 + (_YY - SIZE / 2) ** 2) / (SIZE / 2) ** 2
    img *= (1.0 - rv * rng.uniform(0.0, 0.2))[:, :, None]

    blur = rng.uniform(0.0, 0.9)
    if blur > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    img += rng.standard_normal(img.shape).astype(np.float32) * rng.uniform(1.0, 6.0)
    out = np.clip(np.round(img), 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        q = int(rng.integers(70, 96))
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, q])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out, objs


def make_one(seed: int, i: int, masks: list | None = None):
    """Image i of the split with this seed -> (bgr uint8, [(class_id, box)]).
    ``masks``: see render_det (optional, for the segmentation labels)."""
    rng = np.random.default_rng([seed, i])
    n = int(rng.choice(len(N_DEFECT_P), p=N_DEFECT_P))
    kinds = [CLASSES[int(rng.integers(len(CLASSES)))] for _ in range(n)]
    return render_det(rng, kinds, masks)


def yolo_lines(objs, w=SIZE, h=SIZE):
    return [f"{c} {(b[0] + b[2]) / 2 / w:.6f} {(b[1] + b[3]) / 2 / h:.6f} "
            f"{(b[2] - b[0]) / w:.6f} {(b[3] - b[1]) / h:.6f}" for c, b in objs]


def _write_range(args):
    seed, start, stop, img_dir, lab_dir = args
    cv2.setNumThreads(1)
    counts = np.zeros(len(CLASSES), np.int64)
    n_empty = 0
    for i in range(start, stop):
        img, objs = make_one(seed, i)
        cv2.imwrite(os.path.join(img_dir, f"{i:05d}.png"), img)
        with open(os.path.join(lab_dir, f"{i:05d}.txt"), "w") as f:
            for line in yolo_lines(objs):
                f.write(line + "\n")
        for c, _ in objs:
            counts[c] += 1
        n_empty += not objs
    return counts, n_empty


def write_split(out, split, seed, n, workers=2):
    img_dir = os.path.join(out, "images", split)
    lab_dir = os.path.join(out, "labels", split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(lab_dir, exist_ok=True)
    chunk = 100
    jobs = [(seed, a, min(a + chunk, n), img_dir, lab_dir) for a in range(0, n, chunk)]
    if workers > 1:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(workers) as pool:
            res = pool.map(_write_range, jobs)
    else:
        res = [_write_range(j) for j in jobs]
    counts = sum(r[0] for r in res)
    return {"seed": seed, "images": n, "empty_images": int(sum(r[1] for r in res)),
            "instances": {c: int(counts[k]) for k, c in enumerate(CLASSES)}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "detection"))
    ap.add_argument("--n-train", type=int, default=1500)
    ap.add_argument("--n-val", type=int, default=200)
    ap.add_argument("--n-test", type=int, default=300)
    ap.add_argument("--train-seed", type=int, default=SPLIT_SEEDS["train"])
    ap.add_argument("--val-seed", type=int, default=SPLIT_SEEDS["val"])
    ap.add_argument("--test-seed", type=int, default=SPLIT_SEEDS["test"])
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    seeds = {"train": a.train_seed, "val": a.val_seed, "test": a.test_seed}
    assert len(set(seeds.values())) == 3, "split seeds must be distinct"
    out = os.path.abspath(a.out)
    t0 = time.time()
    stats = {}
    for split, n in (("train", a.n_train), ("val", a.n_val), ("test", a.n_test)):
        stats[split] = write_split(out, split, seeds[split], n, a.workers)
        print(split, json.dumps(stats[split]), flush=True)
    with open(os.path.join(out, "data.yaml"), "w") as f:
        f.write(f"# made by tools/make_detection_dataset.py; seeds {json.dumps(seeds)}\n")
        f.write(f"path: {out}\ntrain: images/train\nval: images/val\ntest: images/test\n")
        f.write(f"nc: {len(CLASSES)}\nnames:\n")
        for k, c in enumerate(CLASSES):
            f.write(f"  {k}: {c}\n")
    stats["generation_time_s"] = round(time.time() - t0, 1)
    with open(os.path.join(out, "stats.json"), "w") as f:
        f.write(json.dumps(stats, indent=2) + "\n")
    print(f"wrote {out}/data.yaml in {stats['generation_time_s']}s")


if __name__ == "__main__":
    main()
