#!/usr/bin/env python3
"""Synthetic surface-defect data set for linesight.

Every image is a 256x256 BGR (uint8) picture of one machined part (a grey
metal disc or rounded rectangle) on a textured background, as a fixed
industrial camera would see it.  Classes:

    good     no defect
    scratch  thin dark or bright line(s) on the part
    spot     dark blob(s) / stains on the part
    crack    jagged dark polyline on the part
    chip     a bite missing from the part's edge, showing background

NG = any class other than ``good``.

Generation is fully deterministic: image ``i`` of a set made with seed ``s``
is drawn from ``numpy.random.default_rng([s, i])`` only, so any image can be
regenerated on its own and sets made from different seeds are disjoint draws.

Usage as a program (writes PNGs plus labels.csv):

    python tools/make_dataset.py --seed 1 --n 200 --out /tmp/ds

Usage as a module (what train_classifier.py does):

    from make_dataset import render, make_set, CLASSES
"""
from __future__ import annotations

import argparse
import csv
import os

import cv2
import numpy as np

CLASSES = ["good", "scratch", "spot", "crack", "chip"]
SIZE = 256

_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)


# ---------------------------------------------------------------- helpers
def _smooth_noise(rng, sigma, amp):
    """Gaussian-blurred white noise, normalised to unit std, times amp."""
    n = rng.standard_normal((SIZE, SIZE)).astype(np.float32)
    if sigma > 0:
        n = cv2.GaussianBlur(n, (0, 0), sigma)
    s = n.std()
    return n * (amp / s if s > 0 else 0.0)


def _linear_gradient(rng, amp):
    ang = rng.uniform(0, 2 * np.pi)
    g = (np.cos(ang) * (_XX - SIZE / 2) + np.sin(ang) * (_YY - SIZE / 2)) / (SIZE / 2)
    return g * amp


def _background(rng, metal):
    # the fixture/belt is kept visibly darker or brighter than the part
    while True:
        base = rng.uniform(35, 170)
        if abs(base - metal) >= 35:
            break
    bg = np.full((SIZE, SIZE), base, np.float32)
    # grain at a few scales (conveyor belt / fixture plate texture)
    bg += _smooth_noise(rng, rng.uniform(0.0, 1.2), rng.uniform(2, 10))
    bg += _smooth_noise(rng, rng.uniform(3, 12), rng.uniform(2, 14))
    # optional directional texture (brushed plate / belt weave)
    if rng.random() < 0.5:
        k = int(rng.integers(7, 25))
        n = rng.standard_normal((SIZE, SIZE)).astype(np.float32)
        kern = np.zeros((k, k), np.float32)
        kern[k // 2, :] = 1.0 / k
        rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), rng.uniform(0, 180), 1.0)
        kern = cv2.warpAffine(kern, rot, (k, k))
        kern /= max(kern.sum(), 1e-6)
        n = cv2.filter2D(n, -1, kern)
        bg += n / (n.std() + 1e-6) * rng.uniform(2, 8)
    tint = rng.uniform(-8, 8, size=3).astype(np.float32)
    return bg, tint


def _part_sdf(shape, cx, cy, size, ang, aspect, corner):
    """Signed distance (positive inside) of the part outline, in pixels."""
    dx, dy = _XX - cx, _YY - cy
    if shape == "disc":
        return size - np.sqrt(dx * dx + dy * dy)
    c, s = np.cos(ang), np.sin(ang)
    u = c * dx + s * dy
    v = -s * dx + c * dy
    hx, hy = size, size * aspect
    qx = np.abs(u) - (hx - corner)
    qy = np.abs(v) - (hy - corner)
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    inside = np.minimum(np.maximum(qx, qy), 0)
    return -(outside + inside - corner)


def _point_on_part(rng, sdf, margin):
    """Random pixel whose distance inside the outline is >= margin."""
    ys, xs = np.nonzero(sdf >= margin)
    if len(xs) == 0:
        ys, xs = np.nonzero(sdf >= 0)
    j = rng.integers(len(xs))
    return float(xs[j]), float(ys[j])


def _draw_polyline(canvas, pts, thickness):
    p = np.round(np.asarray(pts) * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [p], False, 1.0, int(thickness), cv2.LINE_AA, shift=4)


# ---------------------------------------------------------------- defects
def _scratch(rng, sdf, size):
    m = np.zeros((SIZE, SIZE), np.float32)
    n_lines = int(rng.choice([1, 1, 1, 2, 2, 3]))
    for _ in range(n_lines):
        x0, y0 = _point_on_part(rng, sdf, 10)
        length = rng.uniform(0.35, 1.0) * size
        ang = rng.uniform(0, np.pi)
        bend = rng.uniform(-0.25, 0.25)
        k = 8
        pts = []
        for t in np.linspace(-0.5, 0.5, k):
            a = ang + bend * t * 2
            pts.append((x0 + np.cos(a) * t * length, y0 + np.sin(a) * t * length))
        line = np.zeros_like(m)
        th = int(rng.choice([1, 1, 2, 2, 3]))
        _draw_polyline(line, pts, th)
        m = np.maximum(m, line * rng.uniform(0.8, 1.0))
    sign = -1.0 if rng.random() < 0.6 else 1.0
    lo = 60 if th == 1 else 40  # hairlines need more contrast to survive 2x downscale
    return m, sign * rng.uniform(lo, 95)


def _spot(rng, sdf, size):
    m = np.zeros((SIZE, SIZE), np.float32)
    n_spots = int(rng.choice([1, 1, 1, 2, 2, 3]))
    for _ in range(n_spots):
        cx, cy = _point_on_part(rng, sdf, 12)
        r = rng.uniform(3.0, 9.0)
        blob = np.zeros_like(m)
        for _ in range(int(rng.integers(1, 4))):  # irregular stain = few ellipses
            ox, oy = rng.normal(0, r * 0.4, 2)
            ax = max(2.0, r * rng.uniform(0.6, 1.2))
            ay = max(2.0, ax * rng.uniform(0.5, 1.0))
            cv2.ellipse(blob, (int(round((cx + ox) * 16)), int(round((cy + oy) * 16))),
                        (int(ax * 16), int(ay * 16)), rng.uniform(0, 180), 0, 360,
                        1.0, -1, cv2.LINE_AA, shift=4)
        blob = cv2.GaussianBlur(blob, (0, 0), rng.uniform(0.6, 2.0))
        m = np.maximum(m, blob / max(blob.max(), 1e-6))
    return m, -rng.uniform(40, 100)


def _crack(rng, sdf, size):
    m = np.zeros((SIZE, SIZE), np.float32)
    x, y = _point_on_part(rng, sdf, 14)
    ang = rng.uniform(0, 2 * np.pi)
    n_seg = int(rng.integers(5, 12))
    pts = [(x, y)]
    branches = []
    for _ in range(n_seg):
        ang += rng.uniform(-0.9, 0.9)
        step = rng.uniform(5, 11)
        x += np.cos(ang) * step
        y += np.sin(ang) * step
        pts.append((x, y))
        if rng.random() < 0.15:
            branches.append((x, y, ang + rng.choice([-1, 1]) * rng.uniform(0.5, 1.2)))
    _draw_polyline(m, pts, rng.choice([1, 2, 2]))
    for bx, by, ba in branches:
        bp = [(bx, by)]
        for _ in range(int(rng.integers(2, 4))):
            ba += rng.uniform(-0.7, 0.7)
            bx += np.cos(ba) * rng.uniform(4, 8)
            by += np.sin(ba) * rng.uniform(4, 8)
            bp.append((bx, by))
        _draw_polyline(m, bp, 1)
    return np.clip(m, 0, 1), -rng.uniform(50, 110)


# ---------------------------------------------------------------- renderer
def render(rng: np.random.Generator, cls: str) -> np.ndarray:
    """Render one 256x256 BGR uint8 image of class ``cls``."""
    assert cls in CLASSES, cls
    metal = rng.uniform(110, 205)
    bg, tint = _background(rng, metal)

    # ---- part geometry
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
    sdf = _part_sdf(shape, cx, cy, size, ang, aspect, corner)

    if cls == "chip":
        # bite centred near the outline at a random boundary point
        ys, xs = np.nonzero(np.abs(sdf) < 1.0)
        j = rng.integers(len(xs))
        br = rng.uniform(10, 22) * scale
        off = rng.uniform(-0.3, 0.2) * br  # positive: centre slightly outside
        gx, gy = xs[j] - cx, ys[j] - cy
        gn = np.hypot(gx, gy) + 1e-6
        bx, by = xs[j] + gx / gn * off, ys[j] + gy / gn * off
        # jagged bite: ellipse with random aspect
        ea = rng.uniform(0.6, 1.0)
        ba = rng.uniform(0, np.pi)
        c, s = np.cos(ba), np.sin(ba)
        u = c * (_XX - bx) + s * (_YY - by)
        v = -s * (_XX - bx) + c * (_YY - by)
        bite = (np.sqrt(u * u + (v / ea) ** 2) - br) * ea
        bite += _smooth_noise(rng, 1.5, 0.8)
        sdf = np.minimum(sdf, bite)

    alpha = np.clip(sdf + 0.5, 0.0, 1.0)

    # ---- part surface: metal grey, directional shading, machining marks, highlight
    part = np.full((SIZE, SIZE), metal, np.float32)
    part += _linear_gradient(rng, rng.uniform(5, 30))
    dx, dy = _XX - cx, _YY - cy
    if shape == "disc":
        rr = np.sqrt(dx * dx + dy * dy)
        part += np.sin(rr * rng.uniform(0.8, 1.6) + rng.uniform(0, 6)) * rng.uniform(0.5, 3)
        # chamfer ring near the rim
        part += np.exp(-((rr - size * rng.uniform(0.82, 0.9)) ** 2) / 6.0) * rng.uniform(-12, 12)
    else:
        c, s = np.cos(ang), np.sin(ang)
        u = c * dx + s * dy
        part += np.sin(u * rng.uniform(0.9, 1.8)) * rng.uniform(0.5, 3)
    part += _smooth_noise(rng, rng.uniform(0.5, 2.0), rng.uniform(1, 4))
    # specular highlight
    hx, hy = cx + rng.uniform(-0.5, 0.5) * size, cy + rng.uniform(-0.5, 0.5) * size
    hs = rng.uniform(12, 35) * scale
    part += np.exp(-((_XX - hx) ** 2 + (_YY - hy) ** 2) / (2 * hs * hs)) * rng.uniform(10, 55)
    # edge darkening (rim shadow)
    part -= np.exp(-np.clip(sdf, 0, None) / rng.uniform(1.5, 4.0)) * rng.uniform(0, 25)

    # ---- defect
    if cls in ("scratch", "spot", "crack"):
        fn = {"scratch": _scratch, "spot": _spot, "crack": _crack}[cls]
        mask, contrast = fn(rng, sdf, size)
        mask *= np.clip(sdf - 1.0, 0, 1)  # stay on the part
        part += mask * contrast
    elif cls == "chip":
        # fractured edge is a bit darker just inside the bite
        part -= np.exp(-np.clip(sdf, 0, None) / 1.5) * rng.uniform(0, 15) * (sdf < 6)

    # cast shadow of the part on the background
    sh_dx, sh_dy = rng.uniform(-6, 6, 2)
    shadow = cv2.warpAffine(alpha, np.float32([[1, 0, sh_dx], [0, 1, sh_dy]]), (SIZE, SIZE))
    shadow = cv2.GaussianBlur(shadow, (0, 0), rng.uniform(2, 6))
    bg = bg * (1.0 - shadow * rng.uniform(0.0, 0.35))

    grey = part * alpha + bg * (1.0 - alpha)
    img = np.repeat(grey[:, :, None], 3, axis=2)
    img += (tint[None, None, :] * (1.0 - alpha[:, :, None]))
    img += rng.uniform(-4, 4, size=3).astype(np.float32)[None, None, :] * alpha[:, :, None]

    # ---- lighting variation: contrast, brightness, illumination gradient, vignetting
    img = (img - 128.0) * rng.uniform(0.75, 1.2) + 128.0 + rng.uniform(-25, 25)
    img += _linear_gradient(rng, rng.uniform(0, 30))[:, :, None]
    rv = ((_XX - SIZE / 2) ** 2 + (_YY - SIZE / 2) ** 2) / (SIZE / 2) ** 2
    img *= (1.0 - rv * rng.uniform(0.0, 0.2))[:, :, None]

    # ---- camera: slight defocus, sensor noise, optional JPEG compression
    blur = rng.uniform(0.0, 0.9)
    if blur > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    img += rng.standard_normal(img.shape).astype(np.float32) * rng.uniform(1.0, 6.0)
    out = np.clip(np.round(img), 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        q = int(rng.integers(70, 96))
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, q])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out


def class_for(rng: np.random.Generator, good_frac: float = 0.5) -> str:
    if rng.random() < good_frac:
        return "good"
    return CLASSES[1 + int(rng.integers(4))]


def make_one(seed: int, i: int, good_frac: float = 0.5):
    """Image i of the set with this seed -> (bgr uint8 256x256x3, class name)."""
    rng = np.random.default_rng([seed, i])
    cls = class_for(rng, good_frac)
    return render(rng, cls), cls


def make_range(seed: int, start: int, stop: int, good_frac: float = 0.5, size: int | None = None):
    """Images start..stop-1 of the set with this seed. If size is given, each is
    cv2.resize'd (INTER_LINEAR) to size x size right away (saves memory).
    Returns (uint8 array N,H,W,3 BGR, int64 class indices)."""
    s = size or SIZE
    n = stop - start
    X = np.empty((n, s, s, 3), np.uint8)
    y = np.empty(n, np.int64)
    for k, i in enumerate(range(start, stop)):
        img, cls = make_one(seed, i, good_frac)
        if size is not None and size != SIZE:
            img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
        X[k] = img
        y[k] = CLASSES.index(cls)
    return X, y


def _range_star(args):
    return make_range(*args)


def make_set(seed: int, n: int, good_frac: float = 0.5, size: int | None = None, workers: int = 1):
    """Images 0..n-1 of the set with this seed (see make_range); workers > 1 uses
    processes, with identical output."""
    if workers <= 1:
        return make_range(seed, 0, n, good_frac, size)
    import multiprocessing as mp
    chunk = 250
    jobs = [(seed, a, min(a + chunk, n), good_frac, size) for a in range(0, n, chunk)]
    cv2.setNumThreads(1)
    with mp.get_context("fork").Pool(workers) as pool:
        parts = pool.map(_range_star, jobs)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--good-frac", type=float, default=0.5)
    ap.add_argument("--out", required=True, help="output folder (PNGs + labels.csv)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "labels.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "class", "ng"])
        for i in range(a.n):
            img, cls = make_one(a.seed, i, a.good_frac)
            name = f"{i:05d}_{cls}.png"
            cv2.imwrite(os.path.join(a.out, name), img)
            w.writerow([name, cls, int(cls != "good")])
    print(f"wrote {a.n} images to {a.out}")


if __name__ == "__main__":
    main()
