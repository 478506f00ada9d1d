#!/usr/bin/env python3
"""Synthetic surface-defect SEGMENTATION data set (YOLO-seg format) for linesight.

The images are exactly those of tools/make_detection_dataset.py (same renderer,
imported from it, same seeds: train 11000, val 12000, held-out test 13000, so
every PNG is byte-identical to the detection set's), and the instances are the
same ones (same classes, same order). Only the labels differ: each instance is
written as a polygon traced around the mask its detection box was computed
from (render_det's optional ``masks`` list, which changes nothing else):

    scratch / spot  pixels whose drawn intensity (after clipping to the part) is
                    >= BOX_LEVEL (0.25) of the defect's full contrast
    chip            pixels whose part coverage dropped by >= 0.5

Polygon = the outline of the mask's pixel squares (pixel (x, y) covers
[x, x+1] x [y, y+1]), traced with cv2.findContours (RETR_EXTERNAL,
CHAIN_APPROX_SIMPLE) on the mask upscaled 2x with nearest neighbour; an
upscaled contour point u maps back to the pixel edge (u + 1) // 2. So the
polygon's bounding box is exactly the detector's pixel-edge box
[xmin, ymin, xmax+1, ymax+1], and the polygon's area equals the mask's pixel
count (when the mask has no holes; holes are not represented). A mask of
several pieces (rare: ~0.2 % of instances) gets one polygon, the pieces joined
by zero-width bridges between their closest vertices (the way Ultralytics'
own converters merge multi-part COCO segments). Lines are

    class x1 y1 x2 y2 ...     (normalised by the image size; exact: k/256 to 8 decimals)

and an empty .txt = no defect.

    python tools/make_segmentation_dataset.py [--out tools/data/segmentation]
        [--check-detection tools/data/detection]

writes OUT/images/{train,val,test}/NNNNN.png, OUT/labels/{...}/NNNNN.txt,
OUT/data.yaml and OUT/stats.json. With --check-detection (default: the
detection set's folder, if it exists) every image is compared byte for byte
with the detection set's PNG and every polygon's box with its detection label.
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
import make_detection_dataset as mdd  # noqa: E402  (the detector's renderer, used as is)

CLASSES = mdd.CLASSES
SIZE = mdd.SIZE


def mask_polygon(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Boolean HxW mask -> (K x 2 int polygon in pixel-edge coordinates, number of pieces)."""
    up = np.kron(mask.astype(np.uint8), np.ones((2, 2), np.uint8))
    up = cv2.copyMakeBorder(up, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        u = c.reshape(-1, 2).astype(np.int64) - 1  # upscaled pixel index (minus the 1 px border)
        p = (u + 1) // 2  # -> pixel edge: left/top side of a pixel at even u, right/bottom at odd u
        keep = np.ones(len(p), bool)
        keep[1:] = np.any(p[1:] != p[:-1], axis=1)  # drop repeated vertices
        p = p[keep]
        if len(p) > 1 and np.all(p[0] == p[-1]):
            p = p[:-1]
        polys.append(p)
    polys.sort(key=lambda p: -abs(_area(p)))
    merged = polys[0]
    for p in polys[1:]:
        merged = _bridge(merged, p)
    return merged, len(polys)


def _area(p):
    x, y = p[:, 0].astype(np.float64), p[:, 1].astype(np.float64)
    return 0.5 * (np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _bridge(a, b):
    """Join polygon b into a by a zero-width bridge between their closest vertices:
    a[..i], b[j..], b[..j], a[i..] (both traced in the same direction)."""
    d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(np.argmin(d), d.shape)
    b_rot = np.concatenate([b[j:], b[:j + 1]])
    return np.concatenate([a[:i + 1], b_rot, a[i:]])


def seg_line(c: int, poly: np.ndarray, w=SIZE, h=SIZE) -> str:
    def f(v, s):
        t = f"{v / s:.8f}".rstrip("0").rstrip(".")
        return t if t else "0"
    return f"{c} " + " ".join(f"{f(x, w)} {f(y, h)}" for x, y in poly)


def _write_range(args):
    seed, start, stop, img_dir, lab_dir, det_dir, split = args
    cv2.setNumThreads(1)
    st = {"counts": np.zeros(len(CLASSES), np.int64), "empty": 0, "pieces>1": 0, "vertices": [],
          "area_mismatch": 0, "box_mismatch": 0, "image_mismatch": 0, "det_label_mismatch": 0, "checked": 0}
    for i in range(start, stop):
        masks = []
        img, objs = mdd.make_one(seed, i, masks)
        assert len(masks) == len(objs)
        ok, buf = cv2.imencode(".png", img)
        png = buf.tobytes()
        with open(os.path.join(img_dir, f"{i:05d}.png"), "wb") as fh:
            fh.write(png)
        lines = []
        for (c, box), m in zip(objs, masks):
            poly, pieces = mask_polygon(m)
            st["pieces>1"] += pieces > 1
            st["vertices"].append(len(poly))
            if round(abs(_area(poly))) != int(m.sum()):
                st["area_mismatch"] += 1
            pbox = (int(poly[:, 0].min()), int(poly[:, 1].min()), int(poly[:, 0].max()), int(poly[:, 1].max()))
            if pbox != tuple(box):
                st["box_mismatch"] += 1
            lines.append(seg_line(c, poly))
            st["counts"][c] += 1
        st["empty"] += not objs
        with open(os.path.join(lab_dir, f"{i:05d}.txt"), "w") as fh:
            for line in lines:
                fh.write(line + "\n")
        if det_dir:
            di = os.path.join(det_dir, "images", split, f"{i:05d}.png")
            dl = os.path.join(det_dir, "labels", split, f"{i:05d}.txt")
            if os.path.exists(di):
                st["checked"] += 1
                st["image_mismatch"] += open(di, "rb").read() != png
                want = "".join(s + "\n" for s in mdd.yolo_lines(objs))
                st["det_label_mismatch"] += open(dl).read() != want
    return st


def write_split(out, split, seed, n, workers=2, det_dir=None):
    img_dir = os.path.join(out, "images", split)
    lab_dir = os.path.join(out, "labels", split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(lab_dir, exist_ok=True)
    chunk = 100
    jobs = [(seed, a, min(a + chunk, n), img_dir, lab_dir, det_dir, split) for a in range(0, n, chunk)]
    if workers > 1:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(workers) as pool:
            res = pool.map(_write_range, jobs)
    else:
        res = [_write_range(j) for j in jobs]
    counts = sum(r["counts"] for r in res)
    verts = np.concatenate([np.asarray(r["vertices"], np.int64) for r in res]) if n else np.zeros(0)
    s = {"seed": seed, "images": n, "empty_images": int(sum(r["empty"] for r in res)),
         "instances": {c: int(counts[k]) for k, c in enumerate(CLASSES)},
         "multi_piece_instances": int(sum(r["pieces>1"] for r in res)),
         "polygon_vertices": {"median": int(np.median(verts)) if len(verts) else 0,
                              "max": int(verts.max()) if len(verts) else 0},
         "polygon_area_ne_pixel_count": int(sum(r["area_mismatch"] for r in res)),
         "polygon_box_ne_detection_box": int(sum(r["box_mismatch"] for r in res))}
    if det_dir:
        s["detection_set_check"] = {
            "images_compared": int(sum(r["checked"] for r in res)),
            "png_bytes_differ": int(sum(r["image_mismatch"] for r in res)),
            "detection_labels_differ": int(sum(r["det_label_mismatch"] for r in res))}
    return s


def main():
    tools = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(tools, "data", "segmentation"))
    ap.add_argument("--check-detection", default=os.path.join(tools, "data", "detection"),
                    help="compare with this detection set (skipped if it does not exist; '' to skip)")
    ap.add_argument("--n-train", type=int, default=1500)
    ap.add_argument("--n-val", type=int, default=200)
    ap.add_argument("--n-test", type=int, default=300)
    ap.add_argument("--train-seed", type=int, default=mdd.SPLIT_SEEDS["train"])
    ap.add_argument("--val-seed", type=int, default=mdd.SPLIT_SEEDS["val"])
    ap.add_argument("--test-seed", type=int, default=mdd.SPLIT_SEEDS["test"])
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    seeds = {"train": a.train_seed, "val": a.val_seed, "test": a.test_seed}
    assert len(set(seeds.values())) == 3, "split seeds must be distinct"
    out = os.path.abspath(a.out)
    det = os.path.abspath(a.check_detection) if a.check_detection and os.path.isdir(a.check_detection) else None
    t0 = time.time()
    stats = {}
    for split, n in (("train", a.n_train), ("val", a.n_val), ("test", a.n_test)):
        stats[split] = write_split(out, split, seeds[split], n, a.workers, det)
        print(split, json.dumps(stats[split]), flush=True)
    with open(os.path.join(out, "data.yaml"), "w") as f:
        f.write(f"# made by tools/make_segmentation_dataset.py; seeds {json.dumps(seeds)}\n")
        f.write(f"path: {out}\ntrain: images/train\nval: images/val\ntest: images/test\n")
        f.write(f"nc: {len(CLASSES)}\nnames:\n")
        for k, c in enumerate(CLASSES):
            f.write(f"  {k}: {c}\n")
    stats["generation_time_s"] = round(time.time() - t0, 1)
    with open(os.path.join(out, "stats.json"), "w") as f:
        f.write(json.dumps(stats, indent=2) + "\n")
    bad = [s for s in ("train", "val", "test") if stats[s].get("detection_set_check", {}).get("png_bytes_differ")
           or stats[s].get("detection_set_check", {}).get("detection_labels_differ")]
    print(f"wrote {out}/data.yaml in {stats['generation_time_s']}s")
    if bad:
        sys.exit(f"images/labels differ from the detection set in {bad}")


if __name__ == "__main__":
    main()
