#!/usr/bin/env python3
"""Synthetic images of a part family the committed models never saw: drilled steel plates.

`make_dataset.py` draws grey machined discs and rounded rectangles under soft, neutral light
with scratches, spots, cracks and chips. This generator is deliberately different in every
respect a model could lean on, so that it measures what a model trained on one family does on
another (issue 13, "the unseen family"):

* part: a rectangular steel plate (aspect 1.25-1.7) with 2-6 drilled through-holes in a grid,
  a brushed grain along its length and mill-scale blotches; any orientation;
* background: a green rubber mat with a grid, a wooden board or a speckled painted table;
* lighting: one raking light 12-35 degrees above the table from a random side (so relief shows
  as a bright and a dark flank, and the plate casts a long shadow), falling off across the frame,
  with a colour temperature from warm (tungsten, orange) to cool (daylight, blue);
* defects (NG): `burr` (ragged raised lip on part of one hole's edge), `rust` (orange-brown
  blotches with a rough surface), `dent` (a smooth depression, visible only by its shading),
  `gouge` (a groove a few pixels wide with bright fresh metal at its bottom).

The relief (plate thickness, hole chamfers, dents, gouges, burrs) is one height map; shading is
Lambert plus a Blinn-Phong glint of that height map under the raking light, so a defect looks
the way its geometry makes it look, not like a painted mark.

Image `i` of the set with seed `s` depends only on `numpy.random.default_rng([s, i])`
(about half good, the rest spread evenly over the four defects).

    python tools/make_plate_dataset.py --seed 1 --n 300 --out /tmp/plates   # ImageFolder: good/ burr/ rust/ dent/ gouge/
    python tools/make_plate_dataset.py --seed 1 --n 20 --grid docs/images/plates.png   # a contact sheet to look at
"""
from __future__ import annotations

import argparse
import os

import cv2
import numpy as np

CLASSES = ["good", "burr", "rust", "dent", "gouge"]
SIZE = 256
_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)


def _noise(rng, sigma, amp, shape=(SIZE, SIZE)):
    """Gaussian-blurred white noise at unit std, times amp."""
    n = rng.standard_normal(shape).astype(np.float32)
    if sigma > 0:
        n = cv2.GaussianBlur(n, (0, 0), sigma)
    return n * (amp / (n.std() + 1e-9))


# ---------------------------------------------------------------- background (albedo, BGR 0..1)
def _background(rng):
    kind = rng.choice(["mat", "wood", "painted"])
    if kind == "mat":
        # green anti-static rubber mat with a printed grid
        base = np.float32([0.20, 0.30, 0.12]) * rng.uniform(0.7, 1.2)
        tex = 1.0 + _noise(rng, 0.8, 0.05) + _noise(rng, 6, 0.05)
        step = rng.uniform(18, 34)
        off = rng.uniform(0, step, 2)
        a = rng.uniform(-0.2, 0.2)
        u = np.cos(a) * _XX + np.sin(a) * _YY + off[0]
        v = -np.sin(a) * _XX + np.cos(a) * _YY + off[1]
        line = np.maximum(np.abs((u % step) - step / 2), np.abs((v % step) - step / 2)) > step / 2 - 0.9
        bg = base[None, None, :] * tex[:, :, None]
        bg[line] = bg[line] * 0.4 + np.float32([0.42, 0.48, 0.40]) * 0.6
    elif kind == "wood":
        # dark stained board: grain along one axis, knots of darker rings
        a = rng.uniform(0, np.pi)
        u = np.cos(a) * _XX + np.sin(a) * _YY
        v = -np.sin(a) * _XX + np.cos(a) * _YY
        warp = _noise(rng, 12, 6)
        grain = 0.5 + 0.5 * np.sin((v + warp) * rng.uniform(0.35, 0.8))
        tex = 0.8 + 0.2 * grain + _noise(rng, 1.0, 0.04) + 0.0 * u
        base = np.float32([0.10, 0.18, 0.30]) * rng.uniform(0.7, 1.2)
        bg = base[None, None, :] * tex[:, :, None]
    else:
        # blue-grey painted steel table with speckle and wear
        base = np.float32([0.33, 0.27, 0.22]) * rng.uniform(0.7, 1.15)
        tex = 1.0 + _noise(rng, 0.0, 0.06) + _noise(rng, 10, 0.08)
        bg = base[None, None, :] * tex[:, :, None]
    return np.clip(bg, 0, 1).astype(np.float32)


# ---------------------------------------------------------------- plate geometry
def _plate_frame(cx, cy, ang):
    """Plate coordinates of every pixel: u along the length, v across."""
    c, s = np.cos(ang), np.sin(ang)
    dx, dy = _XX - cx, _YY - cy
    return c * dx + s * dy, -s * dx + c * dy


def _rect_sdf(u, v, hl, hw, corner):
    """Signed distance, positive inside, of a rectangle with rounded corners."""
    qx = np.abs(u) - (hl - corner)
    qy = np.abs(v) - (hw - corner)
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    inside = np.minimum(np.maximum(qx, qy), 0)
    return corner - outside - inside


def _holes(rng, hl, hw):
    """Hole centres (plate coordinates) and radii in a grid of 1x2 .. 2x3."""
    r = rng.uniform(6, 11.5)
    cols = int(rng.integers(2, 4))
    rows = int(rng.integers(1, 3))
    mu = hl - r - rng.uniform(6, 14)
    mv = hw - r - rng.uniform(6, 12)
    us = np.linspace(-mu, mu, cols)
    vs = [0.0] if rows == 1 else [-mv, mv]
    return [(float(u), float(v), r) for u in us for v in vs]


def _point_on_plate(rng, sdf, holes_d, margin, hole_margin):
    """A pixel at least `margin` inside the plate and `hole_margin` away from every hole, in frame."""
    ok = (sdf >= margin) & (holes_d >= hole_margin)
    ok[:12, :] = False
    ok[-12:, :] = False
    ok[:, :12] = False
    ok[:, -12:] = False
    ys, xs = np.nonzero(ok)
    if len(xs) == 0:
        ys, xs = np.nonzero(sdf >= 2)
    j = rng.integers(len(xs))
    return float(xs[j]), float(ys[j])


# ---------------------------------------------------------------- render
def render(rng: np.random.Generator, cls: str) -> np.ndarray:
    """One 256x256 BGR uint8 image of a plate of class `cls`."""
    assert cls in CLASSES, cls
    bg = _background(rng)

    # ---- geometry: plate outline, holes
    hl = rng.uniform(62, 88)                # half length
    hw = hl / rng.uniform(1.25, 1.7)        # half width
    cx = SIZE / 2 + rng.uniform(-14, 14)
    cy = SIZE / 2 + rng.uniform(-14, 14)
    ang = rng.uniform(0, np.pi)
    corner = rng.uniform(1.5, 9)
    u, v = _plate_frame(cx, cy, ang)
    sdf = _rect_sdf(u, v, hl, hw, corner)
    holes = _holes(rng, hl, hw)
    # distance to the nearest hole's edge (positive outside the holes)
    hole_d = np.full((SIZE, SIZE), 1e3, np.float32)
    for (hu, hv, r) in holes:
        hole_d = np.minimum(hole_d, np.sqrt((u - hu) ** 2 + (v - hv) ** 2) - r)

    # ---- light: raking, from a random side, with a colour temperature
    az = rng.uniform(0, 2 * np.pi)
    el = np.deg2rad(rng.uniform(12, 35))
    L = np.float32([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)])
    H = L + np.float32([0, 0, 1])
    H /= np.linalg.norm(H)
    kelvin = rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 1.0)   # < 0 warm, > 0 cool
    wb = np.float32([1 + 0.22 * kelvin, 1 + 0.03 * kelvin, 1 - 0.22 * kelvin])

    # ---- height map (px): plate top at `thick`, holes through, chamfered hole edges
    thick = rng.uniform(3, 6)
    chamfer = rng.uniform(1.2, 2.5)
    top = np.clip(sdf, 0, None)
    solid = np.clip(sdf + 0.5, 0, 1) * np.clip(hole_d + 0.5, 0, 1)  # 1 on steel, 0 elsewhere
    # steel plate: its edge is a small bevel (1 px), the hole edge a chamfer ramp
    height = thick * np.clip(top, 0, 1) * np.clip(hole_d / chamfer, 0, 1)
    height += _noise(rng, 1.2, 0.05) * solid  # surface roughness

    # albedo of the steel (BGR 0..1): bluish grey, brushed grain along u, mill-scale blotches
    steel = np.float32([0.62, 0.60, 0.57]) * rng.uniform(0.85, 1.1)
    grain_1d = cv2.GaussianBlur(rng.standard_normal((1, 1024)).astype(np.float32), (0, 0), 0.8)[0]
    grain = grain_1d[np.clip((v + 512).astype(np.int32), 0, 1023)] / (grain_1d.std() + 1e-9)
    scale_blotch = _noise(rng, rng.uniform(8, 18), 1.0)
    alb_steel = (1.0 + 0.035 * grain + 0.06 * np.tanh(scale_blotch))[:, :, None] * steel[None, None, :]
    gloss = rng.uniform(0.25, 0.6)
    defect_gloss = np.zeros((SIZE, SIZE), np.float32)

    # ---- defects: they change height and/or albedo, inside the plate only
    inner = np.clip(sdf - 2, 0, 1) * np.clip(hole_d - 1, 0, 1)
    if cls == "dent":
        for _ in range(int(rng.integers(1, 3))):
            px, py = _point_on_plate(rng, sdf, hole_d, 16, 12)
            sig = rng.uniform(5, 12)
            ecc = rng.uniform(0.6, 1.0)
            a = rng.uniform(0, np.pi)
            du = np.cos(a) * (_XX - px) + np.sin(a) * (_YY - py)
            dv = -np.sin(a) * (_XX - px) + np.cos(a) * (_YY - py)
            depth = sig * rng.uniform(0.45, 0.8)
            height -= depth * np.exp(-(du ** 2 + (dv / ecc) ** 2) / (2 * sig * sig)) * inner
    elif cls == "gouge":
        px, py = _point_on_plate(rng, sdf, hole_d, 14, 8)
        length = rng.uniform(22, 60)
        a = rng.uniform(0, np.pi)
        bend = rng.uniform(-0.012, 0.012)
        t = np.linspace(-0.5, 0.5, 40) * length
        pts = np.stack([px + np.cos(a) * t - np.sin(a) * bend * t * t,
                        py + np.sin(a) * t + np.cos(a) * bend * t * t], 1)
        line = np.zeros((SIZE, SIZE), np.uint8)
        cv2.polylines(line, [np.round(pts * 16).astype(np.int32).reshape(-1, 1, 2)], False, 255, 1, cv2.LINE_8, shift=4)
        dist = cv2.distanceTransform(255 - line, cv2.DIST_L2, 5).astype(np.float32)
        w = rng.uniform(1.6, 3.2)
        # tapered at both ends, as a tool's tip leaves it
        along = np.clip(1 - ((np.cos(a) * (_XX - px) + np.sin(a) * (_YY - py)) / (length / 2)) ** 2, 0, 1) ** 0.3
        prof = np.clip(1 - (dist / w) ** 2, 0, 1) * along
        height -= w * rng.uniform(0.8, 1.4) * prof * inner
        # the displaced metal raises a small lip beside the groove
        height += 0.5 * np.clip(1 - ((dist - w - 1.0) / 1.2) ** 2, 0, 1) * along * inner
        bright = np.clip(prof * 1.5, 0, 1)[:, :, None]
        alb_steel = alb_steel * (1 - bright) + np.float32([0.80, 0.80, 0.80]) * bright
        defect_gloss = np.maximum(defect_gloss, prof * 0.6)
    elif cls == "burr":
        hu, hv, r = holes[int(rng.integers(len(holes)))]
        c, s = np.cos(ang), np.sin(ang)
        hx, hy = cx + c * hu - s * hv, cy + s * hu + c * hv
        phi = np.arctan2(_YY - hy, _XX - hx)
        rad = np.sqrt((_XX - hx) ** 2 + (_YY - hy) ** 2)
        start = rng.uniform(-np.pi, np.pi)
        span = rng.uniform(1.2, 3.8)           # radians of the edge with a burr
        rel = (phi - start) % (2 * np.pi)
        on_arc = np.clip(np.minimum(rel, span - rel) / 0.25, 0, 1) * (rel < span)
        # ragged extent: random per angle, smooth over a few degrees
        k = 180
        ragged_1d = np.abs(cv2.GaussianBlur(rng.standard_normal((1, k)).astype(np.float32), (0, 0), 1.5)[0])
        ragged_1d = ragged_1d / (ragged_1d.max() + 1e-9)
        idx = ((phi + np.pi) / (2 * np.pi) * k).astype(np.int32) % k
        reach = (rng.uniform(2.5, 5.5) * (0.35 + 0.65 * ragged_1d[idx])) * on_arc
        # material curls over the edge into the hole and stands up around it
        into = (rad >= r - reach * 0.7) & (rad < r + 0.5) & (on_arc > 0)
        solid = np.where(into, 1.0, solid).astype(np.float32)
        hole_d = np.where(into, 0.5, hole_d).astype(np.float32)
        ring = np.clip(1 - np.abs(rad - r) / np.maximum(reach, 1e-3), 0, 1) * on_arc
        height = np.where(into, thick, height)
        height += rng.uniform(1.8, 3.5) * ring * (1 + _noise(rng, 0.7, 0.35))
        bright = np.clip(ring * 1.4, 0, 1)[:, :, None]
        alb_steel = alb_steel * (1 - bright) + np.float32([0.78, 0.79, 0.80]) * bright
        defect_gloss = np.maximum(defect_gloss, ring * 0.8)
    elif cls == "rust":
        for _ in range(int(rng.integers(1, 3))):
            px, py = _point_on_plate(rng, sdf, hole_d, 10, 4)
            rr = rng.uniform(7, 20)
            d = np.sqrt((_XX - px) ** 2 + (_YY - py) ** 2) / rr
            blotch = np.clip((1.0 - d) * 2.2 + _noise(rng, 2.0, 0.9), 0, 1) * inner
            blotch = cv2.GaussianBlur(blotch, (0, 0), 0.8)
            rust = np.float32([0.10, 0.24, 0.50]) * rng.uniform(0.6, 1.15)
            speck = (1 + _noise(rng, 0.6, 0.25))[:, :, None]
            amount = (blotch * rng.uniform(0.7, 1.0))[:, :, None]
            alb_steel = alb_steel * (1 - amount) + rust[None, None, :] * speck * amount
            height += blotch * _noise(rng, 0.7, 0.5)  # rust is rough
            defect_gloss -= blotch  # and matte

    # ---- shading of the height map under the raking light
    gy, gx = np.gradient(height)
    n = np.stack([-gx, -gy, np.ones_like(gx)], 2)
    n /= np.linalg.norm(n, axis=2, keepdims=True)
    lam = np.clip(n @ L, 0, None)
    spec = np.clip(n @ H, 0, None) ** rng.uniform(20, 60)
    # light falls off away from its side of the frame
    falloff = 1.0 + rng.uniform(0.15, 0.4) * ((_XX - SIZE / 2) * L[0] + (_YY - SIZE / 2) * L[1]) / (SIZE / 2)

    # cast shadow on the table: a point of the table is dark if the plate is between it and the light
    reach = thick / np.tan(el)
    shift = np.float32([[1, 0, -L[0] / np.cos(el) * reach], [0, 1, -L[1] / np.cos(el) * reach]])
    occluder = cv2.warpAffine(solid, shift, (SIZE, SIZE), flags=cv2.INTER_LINEAR)
    shadow = cv2.GaussianBlur(np.maximum(occluder, 0), (0, 0), 1.2)
    # inside the through-holes the table is further down and mostly in the plate's shadow
    in_hole = np.clip(sdf + 0.5, 0, 1) * (1 - solid)
    shadow = np.maximum(shadow, in_hole * rng.uniform(0.5, 0.8))

    flat = float(np.sin(el))
    table_light = (0.35 + 1.1 * flat) * (1 - 0.7 * shadow)
    steel_light = 0.3 + 1.6 * lam + (gloss + defect_gloss.clip(-gloss, 1)) * 1.4 * spec
    img = (bg * table_light[:, :, None] * (1 - solid[:, :, None])
           + alb_steel * steel_light[:, :, None] * solid[:, :, None])
    img = img * falloff[:, :, None] * wb[None, None, :]

    # ---- exposure, vignetting, camera
    img = img * rng.uniform(200, 265)
    rv = ((_XX - SIZE / 2) ** 2 + (_YY - SIZE / 2) ** 2) / (SIZE / 2) ** 2
    img *= (1.0 - rv * rng.uniform(0.05, 0.25))[:, :, None]
    blur = rng.uniform(0.2, 0.8)
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), blur)
    img += rng.standard_normal(img.shape).astype(np.float32) * rng.uniform(1.5, 5.0)
    out = np.clip(np.round(img), 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(70, 96))])
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


def write_imagefolder(seed: int, n: int, out: str, good_frac: float = 0.5) -> dict:
    """Images 0..n-1 as `out/<class>/<seed>_<i>.png`; returns the count per class."""
    counts = {c: 0 for c in CLASSES}
    for c in CLASSES:
        os.makedirs(os.path.join(out, c), exist_ok=True)
    for i in range(n):
        img, cls = make_one(seed, i, good_frac)
        cv2.imwrite(os.path.join(out, cls, f"{seed}_{i:05d}.png"), img)
        counts[cls] += 1
    return counts


def contact_sheet(seed: int, per_class: int, path: str, cell: int = 128):
    """A grid: one row per class, `per_class` images each (the first of each class in the set)."""
    rows = []
    found = {c: [] for c in CLASSES}
    i = 0
    while any(len(v) < per_class for v in found.values()) and i < 5000:
        rng = np.random.default_rng([seed, i])
        cls = class_for(rng)
        if len(found[cls]) < per_class:
            img = render(rng, cls)
            img = cv2.resize(img, (cell, cell), interpolation=cv2.INTER_AREA)
            cv2.putText(img, cls, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
            found[cls].append(img)
        i += 1
    for c in CLASSES:
        rows.append(np.concatenate(found[c], 1))
    cv2.imwrite(path, np.concatenate(rows, 0))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--good-frac", type=float, default=0.5)
    ap.add_argument("--out", help="output ImageFolder (good/ burr/ rust/ dent/ gouge/)")
    ap.add_argument("--grid", help="instead: write a PNG contact sheet (one row per class) to this path")
    ap.add_argument("--per-class", type=int, default=6, help="--grid: images per class")
    a = ap.parse_args()
    if a.grid:
        contact_sheet(a.seed, a.per_class, a.grid)
        print(f"wrote {a.grid}")
        return
    if not a.out:
        ap.error("--out DIR (or --grid PNG) is required")
    counts = write_imagefolder(a.seed, a.n, a.out, a.good_frac)
    print(f"wrote {a.n} images to {a.out}: {counts}")


if __name__ == "__main__":
    main()
