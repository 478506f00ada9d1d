#!/usr/bin/env python3
"""Train linesight's surface-defect DETECTOR (Ultralytics YOLOv8n, from scratch,
CPU) on the synthetic YOLO data set of tools/make_detection_dataset.py, measure
it on the held-out test split, and export it with Ultralytics' own exporter.

    python tools/make_detection_dataset.py          # tools/data/detection (made here too if missing)
    python tools/train_detector.py                  # writes models/surface-detector*
    python tools/train_detector.py --batch-export-only   # re-export + check only the batch model from the kept
                                                         # tools/data/runs/surface-detector/weights/best.pt
    python tools/train_detector.py --data my/data.yaml --out models/my-detector.onnx [--epochs 50]
                                                    # your own YOLO data set (images/ labels/ data.yaml, e.g. from
                                                    # `linesight capture export --format yolo`): the same training and
                                                    # exports; held-out figures on its `test:` split (or on `val:`,
                                                    # said so in the metrics, when it has none); no samples written

Writes
    models/surface-detector.onnx          raw head, output0 [1, 4+nc, N] (cx,cy,w,h + class scores)
    models/surface-detector-nms.onnx      nms=True export, output0 [1, 300, 6] (x1,y1,x2,y2,score,class)
    models/surface-detector-batch.onnx    (--batch-export, on by default) the same best.pt exported with
                                          dynamic=True: images [batch,3,height,width] -> output0
                                          [batch, 4+nc, anchors], for batched multi-camera inference; checked
                                          with onnxruntime against the fixed raw model image by image (N=1,2,4)
                                          -> "batch_export" in the metrics
    models/surface-detector.metrics.json  held-out test metrics, ONNX shapes + metadata_props, versions
    models/surface-detector-samples/      8 test-split images + ground-truth labels, and one letterboxed
                                          (non-square) variant
    models/surface-detector[-nms].reference.jsonl
                                          Ultralytics' predictions on those samples (tools/yolo_reference.py,
                                          conf 0.25, iou 0.7), for the Rust parity test

Nothing is downloaded: the model is built from yolov8n.yaml (no weights),
pretrained=False, amp=False (the AMP check would fetch yolov8n.pt; on CPU it
is skipped anyway), plots=False (plotting fetches the Arial.ttf font),
YOLO_OFFLINE=1, and every non-loopback socket connect / DNS lookup made in
this process is refused and recorded in the metrics ("network_attempts").
"""
from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported

import socket  # noqa: E402
import traceback  # noqa: E402

NETWORK_ATTEMPTS: list[dict] = []
_LOCAL = ("127.", "::1", "localhost", "0.0.0.0")


def _where():
    fr = [f for f in traceback.extract_stack()[:-2] if "ultralytics" in f.filename or "tools/" in f.filename]
    return [f"{f.filename.split('site-packages/')[-1]}:{f.lineno} {f.name}" for f in fr[-6:]]


_orig_connect = socket.socket.connect
_orig_getaddrinfo = socket.getaddrinfo


def _guard_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not str(address[0]).startswith(_LOCAL):
        NETWORK_ATTEMPTS.append({"connect": f"{address[0]}:{address[1]}", "from": _where()})
        raise OSError("network access refused by tools/train_detector.py")
    return _orig_connect(self, address)


def _guard_getaddrinfo(host, *a, **k):
    if host is not None and not str(host).startswith(_LOCAL):
        NETWORK_ATTEMPTS.append({"resolve": str(host), "from": _where()})
        raise socket.gaierror(socket.EAI_NONAME, "network access refused by tools/train_detector.py")
    return _orig_getaddrinfo(host, *a, **k)


socket.socket.connect = _guard_connect
socket.getaddrinfo = _guard_getaddrinfo

import argparse  # noqa: E402
import ast  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)
import make_detection_dataset as mdd  # noqa: E402


def onnx_info(path):
    """Input/output names + shapes, opset and metadata_props of an ONNX file."""
    import onnx
    m = onnx.load(path)

    def shape(v):
        return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]

    def dtype(v):
        return onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower()

    meta = {p.key: p.value for p in m.metadata_props}
    parsed = {}
    for k in ("stride", "imgsz", "names", "batch", "args", "end2end", "channels"):
        if k in meta:
            try:
                parsed[k] = ast.literal_eval(meta[k])
            except (ValueError, SyntaxError):
                parsed[k] = meta[k]
    if "names" in parsed:
        parsed["names"] = {str(k): v for k, v in parsed["names"].items()}
    ops = sorted({n.op_type for n in m.graph.node})
    return {
        "path": os.path.relpath(path, ROOT),
        "bytes": os.path.getsize(path),
        "sha256": hashlib.sha256(open(path, "rb").read()).hexdigest(),
        "opset": int(next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))),
        "ir_version": int(m.ir_version),
        "inputs": [{"name": v.name, "shape": shape(v), "dtype": dtype(v)} for v in m.graph.input],
        "outputs": [{"name": v.name, "shape": shape(v), "dtype": dtype(v)} for v in m.graph.output],
        "op_types": ops,
        "metadata_props": meta,
        "metadata_parsed": parsed,
    }


def det_metrics(m, names):
    """Ultralytics DetMetrics -> plain dict (overall + per class)."""
    b = m.box
    per = {}
    nt = getattr(m, "nt_per_class", None)
    for j, ci in enumerate(b.ap_class_index):
        ci = int(ci)
        per[names[ci]] = {
            "precision": float(b.p[j]), "recall": float(b.r[j]),
            "mAP50": float(b.ap50[j]), "mAP50-95": float(b.ap[j]),
            **({"instances": int(nt[ci])} if nt is not None else {}),
        }
    return {
        "mAP50": float(b.map50), "mAP50-95": float(b.map),
        "precision": float(b.mp), "recall": float(b.mr),
        "per_class": per,
        "speed_ms_per_image": {k: round(float(v), 2) for k, v in m.speed.items()},
    }


def pick_samples(test_dir, n=8):
    """First image with no defect + the first n-1 with defects (index order);
    checks every class is present."""
    labs = sorted(os.listdir(os.path.join(test_dir, "labels", "test")))
    empty, full = [], []
    for f in labs:
        lines = open(os.path.join(test_dir, "labels", "test", f)).read().split()
        (full if lines else empty).append(f[:-4])
    chosen = sorted(empty[:1] + full[:n - 1])
    cls = set()
    for s in chosen:
        for line in open(os.path.join(test_dir, "labels", "test", s + ".txt")):
            cls.add(int(line.split()[0]))
    assert cls == set(range(len(mdd.CLASSES))), ("samples miss a class", cls)
    return chosen


def write_samples(data_dir, out_dir):
    """8 test images + labels, and one non-square letterbox case built from the
    first of them with defects (edge pixels replicated out to 384x288, so no
    defect is duplicated; labels shifted)."""
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    chosen = pick_samples(data_dir)
    files = []
    for s in chosen:
        shutil.copy(os.path.join(data_dir, "images", "test", s + ".png"), os.path.join(out_dir, f"test_{s}.png"))
        shutil.copy(os.path.join(data_dir, "labels", "test", s + ".txt"), os.path.join(out_dir, f"test_{s}.txt"))
        files.append(f"test_{s}.png")
    # letterbox case: the first sample with defects, placed at (x=80, y=20) in a 384x288 frame
    src = next(s for s in chosen if open(os.path.join(data_dir, "labels", "test", s + ".txt")).read().strip())
    img = cv2.imread(os.path.join(data_dir, "images", "test", src + ".png"))
    W, H, ox, oy = 384, 288, 80, 20
    big = cv2.copyMakeBorder(img, oy, H - 256 - oy, ox, W - 256 - ox, cv2.BORDER_REPLICATE)
    name = f"letterbox_{src}_384x288"
    cv2.imwrite(os.path.join(out_dir, name + ".png"), big)
    with open(os.path.join(out_dir, name + ".txt"), "w") as f:
        for line in open(os.path.join(data_dir, "labels", "test", src + ".txt")):
            c, cx, cy, w, h = line.split()
            cx, cy, w, h = float(cx) * 256 + ox, float(cy) * 256 + oy, float(w) * 256, float(h) * 256
            f.write(f"{c} {cx / W:.6f} {cy / H:.6f} {w / W:.6f} {h / H:.6f}\n")
    files.append(name + ".png")
    return files, src


def read_curve(path):
    """Per-epoch validation mAP from Ultralytics' results.csv."""
    import csv
    rows = []
    with open(path) as fh:
        for r in csv.DictReader(fh):
            r = {k.strip(): v for k, v in r.items()}
            rows.append({"epoch": int(float(r["epoch"])), "time_s": round(float(r.get("time", "nan")), 1),
                         "val_mAP50": round(float(r["metrics/mAP50(B)"]), 4),
                         "val_mAP50-95": round(float(r["metrics/mAP50-95(B)"]), 4)})
    return rows


def make_samples(data_dir, models_dir, name, out_raw, out_nms):
    """Write the samples folder and run tools/yolo_reference.py (Ultralytics'
    predictor, default conf/iou) on it with each exported model."""
    sdir = os.path.join(models_dir, name + "-samples")
    files, lb_src = write_samples(data_dir, sdir)
    refs = {}
    for k, p in (("raw", out_raw), ("nms", out_nms)):
        if p:
            ref = p[:-len(".onnx")] + ".reference.jsonl"  # models/<name>[-nms].reference.jsonl
            cmd = [sys.executable, os.path.join(TOOLS, "yolo_reference.py"), os.path.relpath(p, ROOT)]
            cmd += [os.path.relpath(os.path.join(sdir, x), ROOT) for x in files]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
            with open(ref, "w") as fh:
                fh.write(out)
            refs[k] = os.path.relpath(ref, ROOT)
    return {"dir": os.path.relpath(sdir, ROOT), "images": files,
            "letterbox_case": f"test {lb_src} at x=80,y=20 in 384x288, edge pixels replicated",
            "reference_predictions": refs,
            "reference_command": "python tools/yolo_reference.py MODEL.onnx IMAGES... (conf 0.25, iou 0.7)"}


def export_batch(best, out_batch, imgsz, opset):
    """The batched variant: Ultralytics' exporter with dynamic=True. Its only
    dynamic-shape option is that boolean, which names dims 0/2/3 of `images`
    (batch, height, width) and 0/2 of `output0` (batch, anchors) dynamic; a
    batch-only dynamic export is not among its options (the graph is not edited
    here). Traced at batch 1, fp32, no NMS (nms=True with dynamic=True needs a
    maximum batch and is not what the raw decoder reads)."""
    from ultralytics import YOLO
    kw = dict(format="onnx", imgsz=imgsz, opset=opset, simplify=False, dynamic=True, batch=1, device="cpu")
    f = YOLO(best).export(**kw)
    shutil.copy(f, out_batch)
    return "YOLO(best.pt).export(" + ", ".join(f"{k}={v!r}" for k, v in kw.items()) + ")"


def verify_batch(out_fixed, out_batch, images, imgsz, sizes=(1, 2, 4), conf=0.25, iou=0.7):
    """Run the fixed [1,3,S,S] raw model on each letterboxed image alone and the
    batch model on batches of N of the same images (taken in order, wrapping
    around so every image is in a batch for every N), and compare output0 row by
    row: max |diff| overall, for the box rows (cx,cy,w,h, input pixels) and the
    class-score rows, plus whether the decoded detections (conf 0.25, iou 0.7,
    tools/yolo_parity_numpy.py) agree in count, class and box (within 0.01 px)."""
    import onnxruntime as ort
    from yolo_parity_numpy import decode_raw, letterbox, to_tensor

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    prov = ["CPUExecutionProvider"]
    s_fix = ort.InferenceSession(out_fixed, so, providers=prov)
    s_bat = ort.InferenceSession(out_batch, so, providers=prov)
    xs = [to_tensor(letterbox(cv2.imread(p, cv2.IMREAD_COLOR), imgsz)[0]) for p in images]
    ref = [s_fix.run(None, {s_fix.get_inputs()[0].name: x})[0] for x in xs]  # each [1, 4+nc, A]
    m = len(xs)
    res = {"images": [os.path.relpath(p, ROOT) for p in images],
           "preprocess": f"letterbox to {imgsz}x{imgsz} (pad 114, centred), BGR->RGB, /255, NCHW float32 "
                         "(tools/yolo_parity_numpy.py)",
           "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider, intra_op_num_threads 2",
           "per_batch_size": {}}
    worst = 0.0
    all_match = True
    for n in sorted(set(sizes) | {m}):
        d_all = d_box = d_cls = 0.0
        shapes, runs, match = set(), 0, True
        for k in range(-(-m // n)):
            idx = [(k * n + j) % m for j in range(n)]
            out = s_bat.run(None, {s_bat.get_inputs()[0].name: np.concatenate([xs[i] for i in idx])})[0]
            shapes.add(str(list(out.shape)))
            runs += 1
            for j, i in enumerate(idx):
                d = np.abs(out[j:j + 1].astype(np.float64) - ref[i].astype(np.float64))
                d_all, d_box, d_cls = max(d_all, d.max()), max(d_box, d[:, :4].max()), max(d_cls, d[:, 4:].max())
                a, b = decode_raw(out[j:j + 1], conf, iou), decode_raw(ref[i], conf, iou)
                if len(a[0]) != len(b[0]) or not np.array_equal(a[2], b[2]) or (
                        len(a[0]) and np.abs(a[0] - b[0]).max() > 1e-2):
                    match = False
        res["per_batch_size"][str(n)] = {
            "runs": runs, "output_shapes": sorted(shapes), "max_abs_diff": float(d_all),
            "max_abs_diff_box_rows_px": float(d_box), "max_abs_diff_score_rows": float(d_cls),
            "decoded_detections_match": match}
        worst = max(worst, d_all)
        all_match &= match
        print(f"batch model N={n}: {runs} run(s), output {sorted(shapes)}, max |diff| vs fixed model "
              f"{d_all:.3g} (boxes {d_box:.3g} px, scores {d_cls:.3g}), detections match: {match}", flush=True)
    res["max_abs_diff"] = float(worst)
    res["decoded_detections_match"] = bool(all_match)
    return res


def batch_export_record(out_batch, call, verification, test_onnx=None):
    info = onnx_info(out_batch)
    mp = info["metadata_parsed"]
    return {
        "path": info["path"],
        "export_call": call,
        "note": "Ultralytics' exporter offers only dynamic=True for dynamic shapes: batch, height and width of "
                "`images` and batch and anchors of `output0` are all dynamic (no batch-only option). linesight "
                "feeds the letterboxed imgsz x imgsz input, where anchors = 1344 as in the fixed model. Same "
                "best.pt as the two fixed exports.",
        "inputs": info["inputs"], "outputs": info["outputs"],
        "metadata": {"batch": mp.get("batch"), "dynamic": (mp.get("args") or {}).get("dynamic"),
                     "imgsz": mp.get("imgsz")},
        "verification": verification,
        **({"test_onnx": test_onnx} if test_onnx is not None else {}),
        "onnx": info,
    }


def verification_images(samples, data_dir):
    if samples:
        return [os.path.join(ROOT, samples["dir"], x) for x in samples["images"]]
    for split in ("test", "val"):
        d = os.path.join(data_dir, "images", split)
        if os.path.isdir(d):
            return [os.path.join(d, x) for x in sorted(os.listdir(d))[:8]]
    import yolo_common
    return yolo_common.yaml_images(os.path.join(data_dir, "data.yaml"), "val")[:8]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(TOOLS, "data", "detection"),
                    help="a data.yaml or the folder holding it (default: the synthetic set, made if missing)")
    ap.add_argument("--out", help="the model file to write (PATH.onnx; its -nms, -batch and .metrics.json beside it); "
                                  "default models/surface-detector.onnx")
    ap.add_argument("--epochs", type=int, default=20)  # the committed detector: 20 epochs
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fraction", type=float, default=1.0, help="fraction of the train split used")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--models", default=os.path.join(ROOT, "models"))
    ap.add_argument("--runs", default=os.path.join(TOOLS, "data", "runs"))
    ap.add_argument("--name", default="surface-detector")
    ap.add_argument("--no-samples", action="store_true")
    ap.add_argument("--samples-only", action="store_true",
                    help="only remake the samples folder + reference predictions from the committed models")
    ap.add_argument("--batch-export", action=argparse.BooleanOptionalAction, default=True,
                    help="also export best.pt with dynamic=True as models/<name>-batch.onnx and check it "
                         "against the fixed raw model (default: on)")
    ap.add_argument("--batch-export-only", action="store_true",
                    help="only (re)export + check models/<name>-batch.onnx from --weights and update "
                         "'batch_export' in the metrics (the fixed exports are not touched)")
    ap.add_argument("--weights", help="best.pt for --batch-export-only (default: RUNS/NAME/weights/best.pt)")
    a = ap.parse_args()
    import yolo_common
    if a.out:
        a.models, a.name = yolo_common.out_to_models_name(a.out)
    synthetic = os.path.abspath(a.data) == os.path.join(TOOLS, "data", "detection") or \
        os.path.exists(os.path.join(a.data, "stats.json"))
    a.data, data_yaml = yolo_common.resolve_yaml(a.data)
    if not synthetic:
        if data_yaml is None:
            sys.exit(f"{a.data}: no data.yaml; give --data the data.yaml of a YOLO data set (images/ labels/ data.yaml)")
        a.no_samples = True  # the samples are the committed model's parity fixtures, made from the synthetic set

    if a.samples_only:
        out_raw = os.path.join(a.models, a.name + ".onnx")
        out_nms = os.path.join(a.models, a.name + "-nms.onnx")
        samples = make_samples(a.data, a.models, a.name, out_raw, out_nms if os.path.exists(out_nms) else None)
        mpath = os.path.join(a.models, a.name + ".metrics.json")
        if os.path.exists(mpath):
            metrics = json.load(open(mpath))
            metrics["samples"] = samples
            with open(mpath, "w") as fh:
                fh.write(json.dumps(metrics, indent=2) + "\n")
        print(json.dumps(samples, indent=2))
        return

    if a.batch_export_only:
        import ultralytics.data.utils as ul_data_utils
        ul_data_utils.check_font = lambda *a, **k: None  # see below
        best = a.weights or os.path.join(a.runs, a.name, "weights", "best.pt")
        out_raw = os.path.join(a.models, a.name + ".onnx")
        out_batch = os.path.join(a.models, a.name + "-batch.onnx")
        call = export_batch(best, out_batch, a.imgsz, a.opset)
        mpath = os.path.join(a.models, a.name + ".metrics.json")
        metrics = json.load(open(mpath)) if os.path.exists(mpath) else {}
        samples = metrics.get("samples")
        ver = verify_batch(out_raw, out_batch, verification_images(samples, a.data), a.imgsz)
        rec = batch_export_record(out_batch, call, ver)
        rec["weights"] = os.path.relpath(best, ROOT)
        if metrics:
            metrics["batch_export"] = rec
            metrics.setdefault("network_attempts", []).extend(NETWORK_ATTEMPTS)
            with open(mpath, "w") as fh:
                fh.write(json.dumps(metrics, indent=2) + "\n")
        print(json.dumps({k: v for k, v in rec.items() if k != "onnx"}, indent=2))
        return

    import torch
    torch.set_num_threads(2)
    import ultralytics
    import ultralytics.data.utils as ul_data_utils
    from ultralytics import YOLO

    # check_det_dataset() calls check_font("Arial.ttf") even with plots=False; with no font
    # cached it sends a request to github.com for it. No plots are drawn here: skip it.
    ul_data_utils.check_font = lambda *a, **k: None

    if data_yaml is None:
        print("no data set at", a.data, "- making it with make_detection_dataset.py defaults", flush=True)
        subprocess.run([sys.executable, os.path.join(TOOLS, "make_detection_dataset.py"), "--out", a.data], check=True)
        data_yaml = os.path.join(a.data, "data.yaml")
    stats = json.load(open(os.path.join(a.data, "stats.json"))) if synthetic else yolo_common.yaml_stats(data_yaml)
    # held-out figures come from the test split; a user's data set without one is measured on val (said so)
    test_split = "test" if "test" in stats else "val"

    train_args = dict(
        data=data_yaml, epochs=a.epochs, imgsz=a.imgsz, batch=a.batch, device="cpu", workers=2,
        pretrained=False, amp=False, plots=False, seed=a.seed, deterministic=True,
        project=a.runs, name=a.name, exist_ok=True, cache="ram", fraction=a.fraction,
        patience=1000, verbose=True, warmup_epochs=1.0,
        # augmentation: grey parts under a fixed camera; flips in both axes, mild scale,
        # no hue/saturation (the images are near-grey), brightness jitter kept
        fliplr=0.5, flipud=0.5, scale=0.25, translate=0.1, degrees=0.0,
        hsv_h=0.0, hsv_s=0.0, hsv_v=0.4, mosaic=1.0, close_mosaic=max(1, a.epochs // 5),
    )
    model = YOLO("yolov8n.yaml")  # architecture only, random init (nc becomes 3 in train)
    t0 = time.time()
    model.train(**train_args)
    t_train = time.time() - t0
    best = str(model.trainer.best)
    print(f"trained in {t_train:.0f}s; best = {best}", flush=True)

    names = {int(k): v for k, v in model.names.items()}
    # ---- held-out test split (never used for training or for picking the checkpoint)
    val_args = dict(data=data_yaml, imgsz=a.imgsz, batch=a.batch, device="cpu", plots=False,
                    workers=0, project=a.runs, exist_ok=True, verbose=False)
    best_model = YOLO(best)
    n_params = sum(p.numel() for p in best_model.model.parameters())
    curve = read_curve(os.path.join(str(model.trainer.save_dir), "results.csv"))
    m_test = best_model.val(split=test_split, name=a.name + "-test-pt", **val_args)
    test_pt = det_metrics(m_test, names)
    m_val = best_model.val(split="val", name=a.name + "-val-pt", **val_args)
    val_pt = det_metrics(m_val, names)

    # ---- exports (Ultralytics' exporter; both write best.onnx, so copy each away)
    os.makedirs(a.models, exist_ok=True)
    out_raw = os.path.join(a.models, a.name + ".onnx")
    out_nms = os.path.join(a.models, a.name + "-nms.onnx")
    export_notes = {}
    f = YOLO(best).export(format="onnx", imgsz=a.imgsz, opset=a.opset, simplify=False, dynamic=False,
                          batch=1, device="cpu")
    shutil.copy(f, out_raw)
    try:
        f = YOLO(best).export(format="onnx", imgsz=a.imgsz, opset=a.opset, simplify=False, dynamic=False,
                              batch=1, device="cpu", nms=True)
        shutil.copy(f, out_nms)
        export_notes["nms"] = "supported: nms=True baked into the ONNX graph"
    except Exception as e:  # pragma: no cover - depends on the installed ultralytics
        export_notes["nms"] = f"nms=True export failed: {type(e).__name__}: {e}"
        out_nms = None
    out_batch = os.path.join(a.models, a.name + "-batch.onnx") if a.batch_export else None
    batch_call = None
    if out_batch:
        try:
            batch_call = export_batch(best, out_batch, a.imgsz, a.opset)
        except Exception as e:  # pragma: no cover - depends on the installed ultralytics
            export_notes["batch"] = f"dynamic=True export failed: {type(e).__name__}: {e}"
            out_batch = None
    infos = {"raw": onnx_info(out_raw)}
    if out_nms:
        infos["nms"] = onnx_info(out_nms)
    for k, v in infos.items():
        print(k, v["path"], "inputs", v["inputs"], "outputs", v["outputs"], flush=True)
        for mk, mv in v["metadata_props"].items():
            print(f"   {mk} = {mv}")

    # ---- the exported ONNX files measured the same way (Ultralytics' AutoBackend + onnxruntime)
    onnx_test = {}
    for k, p in (("raw", out_raw), ("nms", out_nms)):
        if p:
            try:
                mo = YOLO(p, task="detect").val(split=test_split, name=f"{a.name}-test-onnx-{k}", **{**val_args, "batch": 1})
                onnx_test[k] = det_metrics(mo, names)
            except Exception as e:
                onnx_test[k] = {"error": f"{type(e).__name__}: {e}"}

    # ---- samples + Ultralytics reference predictions on them
    samples = None if a.no_samples else make_samples(a.data, a.models, a.name, out_raw, out_nms)

    # ---- the batch export: checked against the fixed raw model, and measured by Ultralytics val at batch 16
    batch_export = None
    if out_batch:
        ver = verify_batch(out_raw, out_batch, verification_images(samples, a.data), a.imgsz)
        try:
            mo = YOLO(out_batch, task="detect").val(split=test_split, name=f"{a.name}-test-onnx-batch", **val_args)
            tb = {"measured_with": f"Ultralytics val on the batch ONNX (AutoBackend, onnxruntime, batch {a.batch})",
                  **det_metrics(mo, names)}
        except Exception as e:
            tb = {"error": f"{type(e).__name__}: {e}"}
        batch_export = batch_export_record(out_batch, batch_call, ver, tb)

    import onnx
    import onnxruntime
    import torchvision
    metrics = {
        "model": "Ultralytics YOLOv8n (yolov8n.yaml), trained from scratch, no pretrained weights",
        "classes": names,
        "test": {"split": yolo_common.split_note(stats, test_split), "images": stats[test_split]["images"],
                 "empty_images": stats[test_split]["empty_images"], "instances": stats[test_split]["instances"],
                 "measured_with": "Ultralytics val (conf=0.001, iou=0.7) on best.pt", **test_pt},
        "test_onnx": {"measured_with": "Ultralytics val on the exported ONNX (AutoBackend, onnxruntime, batch 1)",
                      **onnx_test},
        "val": {"split": "validation (%s), used by Ultralytics to pick best.pt" % yolo_common.seed_or_source(stats, "val"),
                "images": stats["val"]["images"], **val_pt},
        "train": {"images": int(round(stats["train"]["images"] * a.fraction)), "seed": stats["train"]["seed"],
                  "instances_full_split": stats["train"]["instances"]},
        "split_seeds": {s: stats[s]["seed"] for s in ("train", "val", "test") if s in stats},
        "data_generation_time_s": stats.get("generation_time_s"),
        "training_time_s": round(t_train, 1),
        "training_note": "wall time of model.train() incl. per-epoch validation, CPU, 2 threads",
        "epochs": a.epochs, "imgsz": a.imgsz, "batch": a.batch, "seed": a.seed,
        "train_args": {k: v for k, v in train_args.items() if k not in ("data", "project")},
        "param_count": int(n_params),
        "val_curve": curve,
        "onnx": infos,
        "export_notes": export_notes,
        **({"batch_export": batch_export} if batch_export else {}),
        "samples": samples,
        "network_attempts": NETWORK_ATTEMPTS,
        "versions": {"ultralytics": ultralytics.__version__, "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "opencv": cv2.__version__,
                     "numpy": np.__version__, "python": sys.version.split()[0]},
    }
    mpath = os.path.join(a.models, a.name + ".metrics.json")
    with open(mpath, "w") as fh:
        fh.write(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps({"test": test_pt, "training_time_s": metrics["training_time_s"],
                      "network_attempts": NETWORK_ATTEMPTS}, indent=2))
    print("wrote", mpath)


if __name__ == "__main__":
    main()
