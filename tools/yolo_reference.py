#!/usr/bin/env python3
"""Reference detections from Ultralytics' own predictor, for parity tests of
linesight's Rust YOLO post-processing.

    python tools/yolo_reference.py models/surface-detector.onnx IMAGE... [--conf 0.25] [--iou 0.7] [--imgsz N]

Runs ``YOLO(MODEL).predict(image, conf=, iou=, imgsz=, device="cpu")`` (ONNX
through Ultralytics' AutoBackend with onnxruntime) and prints one JSON line
per image:

    {"image": PATH, "detections": [{"class": NAME, "class_id": I, "score": S,
                                    "box": [x1, y1, x2, y2]}, ...]}

boxes in ORIGINAL image pixels (float, clipped to the image), detections in
Ultralytics' order (descending score).

What Ultralytics does here (8.4.x; see tools/README.md for the details):
  * defaults: conf 0.25 (predict), iou 0.7, max_det 300, class-aware NMS
    (agnostic_nms False), one label per box (the best class; multi_label off);
    a box is kept if its best class score is > conf (strictly);
  * preprocessing for a fixed-size (dynamic=False) ONNX: LetterBox with
    auto=False, i.e. always padded to the full imgsz x imgsz square:
    r = min(S/h, S/w) (scaling up allowed), new size (round(w*r), round(h*r)),
    cv2.resize INTER_LINEAR (skipped when the size is unchanged), padding
    (S-new)/2 split as top=round(d-0.1), bottom=round(d+0.1) (same for left/right),
    constant colour (114,114,114); then BGR->RGB, /255, NCHW float32;
  * back to the original image: subtract the pad, divide by the per-axis gain
    (new_w/w, new_h/h), clip to the image.
  * For an nms=True export, NMS (and conf 0.25 / iou 0.7 of the export) is in
    the graph; the predictor then only keeps rows with score > conf and --iou
    has no effect.

--imgsz defaults to the model's metadata ``imgsz``.
"""
from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")

import argparse  # noqa: E402
import ast  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

_orig_connect = socket.socket.connect


def _guard_connect(self, address):  # this tool never needs the network
    if self.family in (socket.AF_INET, socket.AF_INET6) and not str(address[0]).startswith(("127.", "::1")):
        print(f"yolo_reference: refused network connect to {address}", file=sys.stderr)
        raise OSError("network access refused by tools/yolo_reference.py")
    return _orig_connect(self, address)


socket.socket.connect = _guard_connect


def model_imgsz(path):
    import onnx
    m = onnx.load(path, load_external_data=False)
    meta = {p.key: p.value for p in m.metadata_props}
    if "imgsz" not in meta:
        return None
    v = ast.literal_eval(meta["imgsz"])
    return list(v) if isinstance(v, (list, tuple)) else int(v)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="Ultralytics-exported ONNX (or .pt)")
    ap.add_argument("images", nargs="+")
    ap.add_argument("--conf", type=float, default=0.25, help="Ultralytics' predict default: 0.25")
    ap.add_argument("--iou", type=float, default=0.7, help="Ultralytics' default: 0.7")
    ap.add_argument("--imgsz", type=int, nargs="+", default=None, help="default: the model's metadata imgsz")
    ap.add_argument("--max-det", type=int, default=300)
    a = ap.parse_args()

    # Ultralytics logs ("Loading ... for ONNX Runtime inference") go to stdout through a
    # handler made at import time: point it at stderr so stdout is only the JSON lines
    out, sys.stdout = sys.stdout, sys.stderr
    import torch
    torch.set_num_threads(2)
    from ultralytics import YOLO

    imgsz = a.imgsz if a.imgsz else (model_imgsz(a.model) if a.model.endswith(".onnx") else 640)
    if isinstance(imgsz, list) and len(imgsz) == 1:
        imgsz = imgsz[0]
    model = YOLO(a.model, task="detect")
    for path in a.images:
        r = model.predict(path, conf=a.conf, iou=a.iou, imgsz=imgsz, max_det=a.max_det, device="cpu",
                          verbose=False, save=False)[0]
        names = r.names
        dets = []
        b = r.boxes
        for xyxy, s, c in zip(b.xyxy.tolist(), b.conf.tolist(), b.cls.tolist()):
            c = int(c)
            dets.append({"class": names[c], "class_id": c, "score": float(s), "box": [float(v) for v in xyxy]})
        out.write(json.dumps({"image": path, "detections": dets}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
