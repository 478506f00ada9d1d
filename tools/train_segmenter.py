#!/usr/bin/env python3
"""Train linesight's surface-defect SEGMENTER (Ultralytics YOLOv8n-seg, from
scratch, CPU) on the synthetic YOLO-seg data set of
tools/make_segmentation_dataset.py (the detector's images, polygon labels),
measure it on the held-out test split and export it with Ultralytics' own
ONNX exporter.

    python tools/make_segmentation_dataset.py       # tools/data/segmentation (made here too if missing)
    python tools/train_segmenter.py                 # writes models/surface-segmenter*
    python tools/train_segmenter.py --samples-only  # only the samples + reference predictions
    python tools/train_segmenter.py --data my/data.yaml --out models/my-segmenter.onnx [--epochs 50]
                                                    # your own YOLO-seg data set (polygon labels): held-out figures
                                                    # on its `test:` split (or `val:`, said so); no samples written

Writes
    models/surface-segmenter.onnx          output0 [1, 4+nc+32, 1344] (cx,cy,w,h, class scores, mask coefficients),
                                           output1 [1, 32, 64, 64] (mask prototypes)
    models/surface-segmenter.metrics.json  held-out test metrics (box and mask), ONNX shapes + metadata_props
    models/surface-segmenter-samples/      8 test-split images + their polygon labels, and one letterboxed
                                           (non-square, 384x288) variant
    models/surface-segmenter.reference.jsonl
                                           Ultralytics' predictions on those samples (tools/yolo_reference_seg_cls.py,
                                           conf 0.25, iou 0.7, retina_masks=True), for the Rust parity test

Same no-download measures as tools/train_detector.py: the model is built from
yolov8n-seg.yaml (no weights), pretrained=False, amp=False, plots=False,
YOLO_OFFLINE=1, check_font patched to a no-op, and every non-loopback socket
connect / DNS lookup made in this process is refused and recorded in the
metrics ("network_attempts").
"""
from __future__ import annotations

import os
import sys

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)
import yolo_common  # noqa: E402  (stdlib only)

NETWORK_ATTEMPTS = yolo_common.install_network_guard("tools/train_segmenter.py")  # before ultralytics

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import make_segmentation_dataset as msd  # noqa: E402

NAME = "surface-segmenter"


def _metric(mt, j):
    return {"precision": float(mt.p[j]), "recall": float(mt.r[j]),
            "mAP50": float(mt.ap50[j]), "mAP50-95": float(mt.ap[j])}


def seg_metrics(m, names):
    """Ultralytics SegmentMetrics -> plain dict (box and mask, overall + per class)."""
    nt = getattr(m, "nt_per_class", None)
    out = {}
    for key, mt in (("box", m.box), ("mask", m.seg)):
        per = {}
        for j, ci in enumerate(mt.ap_class_index if len(getattr(mt, "ap_class_index", [])) else m.ap_class_index):
            ci = int(ci)
            per[names[ci]] = {**_metric(mt, j), **({"instances": int(nt[ci])} if nt is not None else {})}
        out[key] = {"mAP50": float(mt.map50), "mAP50-95": float(mt.map),
                    "precision": float(mt.mp), "recall": float(mt.mr), "per_class": per}
    out["speed_ms_per_image"] = {k: round(float(v), 2) for k, v in m.speed.items()}
    return out


def read_curve(path):
    """Per-epoch validation box/mask mAP from Ultralytics' results.csv."""
    rows = []
    with open(path) as fh:
        for r in csv.DictReader(fh):
            r = {k.strip(): v for k, v in r.items()}
            rows.append({"epoch": int(float(r["epoch"])), "time_s": round(float(r.get("time", "nan")), 1),
                         "val_box_mAP50": round(float(r["metrics/mAP50(B)"]), 4),
                         "val_box_mAP50-95": round(float(r["metrics/mAP50-95(B)"]), 4),
                         "val_mask_mAP50": round(float(r["metrics/mAP50(M)"]), 4),
                         "val_mask_mAP50-95": round(float(r["metrics/mAP50-95(M)"]), 4)})
    return rows


def pick_samples(data_dir, n=8):
    """First test image with no defect + the first n-1 with defects (index order),
    as train_detector.pick_samples (so the same test images as the detector's samples)."""
    lab_dir = os.path.join(data_dir, "labels", "test")
    empty, full = [], []
    for f in sorted(os.listdir(lab_dir)):
        (full if open(os.path.join(lab_dir, f)).read().split() else empty).append(f[:-4])
    chosen = sorted(empty[:1] + full[:n - 1])
    cls = {int(line.split()[0]) for s in chosen for line in open(os.path.join(lab_dir, s + ".txt"))}
    assert cls == set(range(len(msd.CLASSES))), ("samples miss a class", cls)
    return chosen


def write_samples(data_dir, out_dir):
    """8 test images + polygon labels, and one non-square letterbox case: the first
    sample with defects placed at (x=80, y=20) in a 384x288 frame with the edge pixels
    replicated (as the detector's letterbox_00000_384x288.png; polygons shifted)."""
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    chosen = pick_samples(data_dir)
    files = []
    for s in chosen:
        shutil.copy(os.path.join(data_dir, "images", "test", s + ".png"), os.path.join(out_dir, f"test_{s}.png"))
        shutil.copy(os.path.join(data_dir, "labels", "test", s + ".txt"), os.path.join(out_dir, f"test_{s}.txt"))
        files.append(f"test_{s}.png")
    src = next(s for s in chosen if open(os.path.join(data_dir, "labels", "test", s + ".txt")).read().strip())
    img = cv2.imread(os.path.join(data_dir, "images", "test", src + ".png"))
    W, H, ox, oy = 384, 288, 80, 20
    big = cv2.copyMakeBorder(img, oy, H - 256 - oy, ox, W - 256 - ox, cv2.BORDER_REPLICATE)
    name = f"letterbox_{src}_384x288"
    cv2.imwrite(os.path.join(out_dir, name + ".png"), big)
    with open(os.path.join(out_dir, name + ".txt"), "w") as f:
        for line in open(os.path.join(data_dir, "labels", "test", src + ".txt")):
            v = line.split()
            xy = np.array([float(x) for x in v[1:]]).reshape(-1, 2) * 256 + [ox, oy]
            poly = np.rint(xy).astype(np.int64)
            f.write(msd.seg_line(int(v[0]), poly, W, H) + "\n")
    files.append(name + ".png")
    return files, src


def make_samples(data_dir, models_dir, name, onnx_path):
    sdir = os.path.join(models_dir, name + "-samples")
    files, lb_src = write_samples(data_dir, sdir)
    ref = onnx_path[:-len(".onnx")] + ".reference.jsonl"
    cmd = [sys.executable, os.path.join(TOOLS, "yolo_reference_seg_cls.py"), os.path.relpath(onnx_path, ROOT)]
    cmd += [os.path.relpath(os.path.join(sdir, x), ROOT) for x in files]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    with open(ref, "w") as fh:
        fh.write(out)
    refs = [json.loads(x) for x in out.splitlines()]
    return {"dir": os.path.relpath(sdir, ROOT), "images": files,
            "letterbox_case": f"test {lb_src} at x=80,y=20 in 384x288, edge pixels replicated",
            "reference_predictions": os.path.relpath(ref, ROOT),
            "reference_detections": sum(len(r["detections"]) for r in refs),
            "reference_command": "python tools/yolo_reference_seg_cls.py MODEL.onnx IMAGES... "
                                 "(conf 0.25, iou 0.7, retina_masks=True)"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(TOOLS, "data", "segmentation"),
                    help="a data.yaml or the folder holding it (default: the synthetic set, made if missing)")
    ap.add_argument("--out", help="the model file to write (PATH.onnx, its .metrics.json beside it); "
                                  "default models/surface-segmenter.onnx")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fraction", type=float, default=1.0, help="fraction of the train split used")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--models", default=os.path.join(ROOT, "models"))
    ap.add_argument("--runs", default=os.path.join(TOOLS, "data", "runs"))
    ap.add_argument("--name", default=NAME)
    ap.add_argument("--no-samples", action="store_true")
    ap.add_argument("--samples-only", action="store_true",
                    help="only remake the samples folder + reference predictions from the committed model")
    a = ap.parse_args()
    if a.out:
        a.models, a.name = yolo_common.out_to_models_name(a.out)
    synthetic = os.path.abspath(a.data) == os.path.join(TOOLS, "data", "segmentation") or \
        os.path.exists(os.path.join(a.data, "stats.json"))
    a.data, data_yaml = yolo_common.resolve_yaml(a.data)
    if not synthetic:
        if data_yaml is None:
            sys.exit(f"{a.data}: no data.yaml; give --data the data.yaml of a YOLO-seg data set (images/ labels/ data.yaml)")
        a.no_samples = True  # the samples are the committed model's parity fixtures, made from the synthetic set
    out_onnx = os.path.join(a.models, a.name + ".onnx")
    mpath = os.path.join(a.models, a.name + ".metrics.json")

    if a.samples_only:
        samples = make_samples(a.data, a.models, a.name, out_onnx)
        if os.path.exists(mpath):
            metrics = json.load(open(mpath))
            metrics["samples"] = samples
            with open(mpath, "w") as fh:
                fh.write(json.dumps(metrics, indent=2) + "\n")
        print(json.dumps(samples, indent=2))
        return

    import torch
    torch.set_num_threads(2)
    import ultralytics
    from ultralytics import YOLO
    yolo_common.patch_ultralytics_offline()

    if data_yaml is None:
        print("no data set at", a.data, "- making it with make_segmentation_dataset.py defaults", flush=True)
        subprocess.run([sys.executable, os.path.join(TOOLS, "make_segmentation_dataset.py"), "--out", a.data],
                       check=True)
        data_yaml = os.path.join(a.data, "data.yaml")
    stats = json.load(open(os.path.join(a.data, "stats.json"))) if synthetic else yolo_common.yaml_stats(data_yaml)
    # held-out figures come from the test split; a user's data set without one is measured on val (said so)
    test_split = "test" if "test" in stats else "val"

    train_args = dict(
        data=data_yaml, epochs=a.epochs, imgsz=a.imgsz, batch=a.batch, device="cpu", workers=2,
        pretrained=False, amp=False, plots=False, seed=a.seed, deterministic=True,
        project=a.runs, name=a.name, exist_ok=True, cache="ram", fraction=a.fraction,
        patience=1000, verbose=True, warmup_epochs=1.0,
        # as train_detector.py: flips in both axes, mild scale, no hue/saturation, brightness jitter
        fliplr=0.5, flipud=0.5, scale=0.25, translate=0.1, degrees=0.0,
        hsv_h=0.0, hsv_s=0.0, hsv_v=0.4, mosaic=1.0, close_mosaic=max(1, a.epochs // 5),
        # segmentation defaults, written out: instance masks merged into one training mask
        # (overlap_mask), targets at 1/4 of the input (64x64 for 256)
        overlap_mask=True, mask_ratio=4,
    )
    model = YOLO("yolov8n-seg.yaml")  # architecture only, random init (nc becomes 3 in train)
    t0 = time.time()
    model.train(**train_args)
    t_train = time.time() - t0
    best = str(model.trainer.best)
    print(f"trained in {t_train:.0f}s; best = {best}", flush=True)

    names = {int(k): v for k, v in model.names.items()}
    val_args = dict(data=data_yaml, imgsz=a.imgsz, batch=a.batch, device="cpu", plots=False,
                    workers=0, project=a.runs, exist_ok=True, verbose=False)
    t1 = time.time()
    best_model = YOLO(best)
    n_params = sum(p.numel() for p in best_model.model.parameters())
    curve = read_curve(os.path.join(str(model.trainer.save_dir), "results.csv"))
    test_pt = seg_metrics(best_model.val(split=test_split, name=a.name + "-test-pt", **val_args), names)
    val_pt = seg_metrics(best_model.val(split="val", name=a.name + "-val-pt", **val_args), names)

    # ---- export (Ultralytics' exporter, as train_detector.py: no simplify, fixed shape, batch 1)
    os.makedirs(a.models, exist_ok=True)
    f = YOLO(best).export(format="onnx", imgsz=a.imgsz, opset=a.opset, simplify=False, dynamic=False,
                          batch=1, device="cpu")
    shutil.copy(f, out_onnx)
    info = yolo_common.onnx_info(out_onnx, ROOT)
    print("onnx", info["path"], "inputs", info["inputs"], "outputs", info["outputs"], flush=True)
    for mk, mv in info["metadata_props"].items():
        print(f"   {mk} = {mv}")
    nc = len(names)
    want = {"output0": [1, 4 + nc + 32, (a.imgsz // 8) ** 2 + (a.imgsz // 16) ** 2 + (a.imgsz // 32) ** 2],
            "output1": [1, 32, a.imgsz // 4, a.imgsz // 4]}
    got = {o["name"]: o["shape"] for o in info["outputs"]}
    shape_check = {"expected": want, "ok": got == want}
    print("output shapes", got, "expected", want, flush=True)

    # ---- the exported ONNX measured the same way (AutoBackend + onnxruntime)
    try:
        mo = YOLO(out_onnx, task="segment").val(split=test_split, name=a.name + "-test-onnx", **{**val_args, "batch": 1})
        test_onnx = seg_metrics(mo, names)
    except Exception as e:
        test_onnx = {"error": f"{type(e).__name__}: {e}"}
    t_eval = time.time() - t1

    samples = None if a.no_samples else make_samples(a.data, a.models, a.name, out_onnx)

    import onnx
    import onnxruntime
    import torchvision
    metrics = {
        "model": "Ultralytics YOLOv8n-seg (yolov8n-seg.yaml), trained from scratch, no pretrained weights",
        "classes": names,
        "test": {"split": (yolo_common.split_note(stats, test_split) if not synthetic else
                           "held-out test (make_segmentation_dataset = make_detection_dataset seed %d), never used "
                           "for training or choices" % stats["test"]["seed"]),
                 "images": stats[test_split]["images"], "empty_images": stats[test_split]["empty_images"],
                 "instances": stats[test_split]["instances"],
                 "measured_with": "Ultralytics val (conf=0.001, iou=0.7) on best.pt", **test_pt},
        "test_onnx": {"measured_with": "Ultralytics val on the exported ONNX (AutoBackend, onnxruntime, batch 1)",
                      **test_onnx},
        "val": {"split": "validation (%s), used by Ultralytics to pick best.pt" % yolo_common.seed_or_source(stats, "val"),
                "images": stats["val"]["images"], **val_pt},
        "train": {"images": int(round(stats["train"]["images"] * a.fraction)), "seed": stats["train"]["seed"],
                  "instances_full_split": stats["train"]["instances"]},
        "split_seeds": {s: stats[s]["seed"] for s in ("train", "val", "test") if s in stats},
        "labels": "polygons traced around the drawn defect masks (make_segmentation_dataset.py); "
                  "boxes derived from them equal the detector's boxes",
        "data_generation_time_s": stats.get("generation_time_s"),
        "training_time_s": round(t_train, 1),
        "evaluation_export_time_s": round(t_eval, 1),
        "training_note": "wall time of model.train() incl. per-epoch validation, CPU, 2 threads "
                         "(shared with concurrent cargo builds)",
        "epochs": a.epochs, "imgsz": a.imgsz, "batch": a.batch, "seed": a.seed,
        "train_args": {k: v for k, v in train_args.items() if k not in ("data", "project")},
        "param_count": int(n_params),
        "val_curve": curve,
        "onnx": info,
        "output_shapes": {**got, "check": shape_check},
        "samples": samples,
        "network_attempts": NETWORK_ATTEMPTS,
        "versions": {"ultralytics": ultralytics.__version__, "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "opencv": cv2.__version__,
                     "numpy": np.__version__, "python": sys.version.split()[0]},
    }
    with open(mpath, "w") as fh:
        fh.write(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps({"test": test_pt, "test_onnx": test_onnx, "training_time_s": metrics["training_time_s"],
                      "network_attempts": NETWORK_ATTEMPTS}, indent=2))
    print("wrote", mpath)


if __name__ == "__main__":
    main()
