#!/usr/bin/env python3
"""linesight's boxes on reduced-decoded frames against Ultralytics' own predictor on full frames.

The YOLO detector's held-out test set (make_detection_dataset seed 13000, the set
tools/reduced_decode_eval.py writes: each 256-pixel render scaled to 1024x1024 and written as JPEG
quality 95, as an MJPG camera delivers frames) is run through:

- Ultralytics' predictor (`tools/yolo_reference.py`: `YOLO(model).predict`, its own LetterBox and
  NMS) on the full 1024x1024 JPEGs, decoded whole by OpenCV: the reference;
- `linesight infer --json --decode full`: the same frames decoded whole (a control: linesight's
  post-processing against Ultralytics', expected equal);
- `linesight infer --json --decode 1/4`: what a camera with `decode: auto` feeds the 256x256 model
  (libjpeg's DCT scaling), boxes back in full-frame pixels as the daemon reports them.

Per image, boxes are matched to the reference's greedily by IoU within a class (IoU >= 0.5); the
figures are verdict agreement (NG = any box), boxes found again, extra boxes, the IoU of matched
boxes and their score difference. Markdown on stdout, per-image JSON in --out.

    python3 tools/reduced_decode_vs_ultralytics.py [--set .cache/reduced-eval/boxes-13000]

Needs Python with ultralytics (tools/requirements.txt; torch CPU) and `cargo build --release`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_detection_dataset import _iou as iou  # noqa: E402  (the dataset's own box IoU)


def match(ref, ours):
    """Greedy by IoU within a class: [(iou, score difference)], unmatched reference, extra ours."""
    pairs = []
    for i, r in enumerate(ref):
        for j, o in enumerate(ours):
            if r["class"] == o["class"]:
                v = iou(r["box"], o["box"])
                if v >= 0.5:
                    pairs.append((v, i, j))
    pairs.sort(reverse=True)
    used_r, used_o, matched = set(), set(), []
    for v, i, j in pairs:
        if i in used_r or j in used_o:
            continue
        used_r.add(i)
        used_o.add(j)
        matched.append((v, abs(ref[i]["score"] - ours[j]["score"])))
    return matched, len(ref) - len(used_r), len(ours) - len(used_o)


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} {cmd[1]} exited {p.returncode}:\n{p.stderr[-3000:]}")
    return p


def linesight(binary, model, images, decode):
    out = run([binary, "infer", "--json", "--model", model, "--decode", decode, *images])
    docs = {}
    for line in out.stdout.splitlines():
        d = json.loads(line)
        docs[d["image"]] = [{"class": x["class"], "score": x["score"], "box": x["box"]} for x in d["detections"]]
    return docs


def reference(model, images):
    out = run([sys.executable, os.path.join(HERE, "yolo_reference.py"), model, *images])
    return {d["image"]: d["detections"] for d in map(json.loads, out.stdout.splitlines())}


def compare(ref, ours):
    images = sorted(ref)
    ious, dscore, missed, extra, agree, boxes = [], [], 0, 0, 0, 0
    for im in images:
        m, miss, ext = match(ref[im], ours[im])
        ious += [v for v, _ in m]
        dscore += [d for _, d in m]
        missed, extra, boxes = missed + miss, extra + ext, boxes + len(ref[im])
        agree += bool(ref[im]) == bool(ours[im])
    ious.sort()
    return {
        "images": len(images), "verdicts_agree": agree, "reference_boxes": boxes, "found": boxes - missed,
        "extra": extra, "iou_median": round(ious[len(ious) // 2], 3) if ious else None,
        "iou_p01": round(ious[len(ious) // 100], 3) if ious else None,
        "iou_min": round(ious[0], 3) if ious else None,
        "score_diff_max": round(max(dscore), 4) if dscore else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", default=".cache/reduced-eval/boxes-13000")
    ap.add_argument("--model", default="models/surface-detector.onnx")
    ap.add_argument("--binary", default="target/release/linesight")
    ap.add_argument("--out", default=".cache/reduced-eval/vs-ultralytics.json")
    args = ap.parse_args()
    if not os.path.isdir(args.set):
        import reduced_decode_eval
        reduced_decode_eval.detection_set(args.set, 13000, 300)
    img_dir = os.path.join(args.set, "images")
    images = [os.path.join(img_dir, f) for f in sorted(os.listdir(img_dir)) if f.endswith(".jpg")]
    ref = reference(args.model, images)
    rows = {}
    for decode in ("full", "1/4"):
        ours = linesight(args.binary, args.model, images, decode)
        rows[decode] = compare(ref, ours)
        print(f"{decode}: {rows[decode]}", file=sys.stderr)
    with open(args.out, "w") as fh:
        json.dump(rows, fh, indent=1)
    print("| linesight decodes | images | verdicts agree | reference boxes found (IoU ≥ 0.5) | extra boxes | IoU median / 1st percentile / min | max score difference |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for decode, r in rows.items():
        print(f"| {decode} | {r['images']} | {r['verdicts_agree']} | {r['found']} of {r['reference_boxes']} | {r['extra']} "
              f"| {r['iou_median']} / {r['iou_p01']} / {r['iou_min']} | {r['score_diff_max']} |")


if __name__ == "__main__":
    main()
