#!/usr/bin/env python3
"""Train an Ultralytics YOLOv8n-cls surface classifier (from scratch, CPU) on
the classifier's synthetic images (tools/make_dataset.py, classes good /
scratch / spot / crack / chip), measure it on a held-out test split and export
it with Ultralytics' own ONNX exporter.

    python tools/train_yolo_classifier.py                 # data + training + export + metrics + samples
    python tools/train_yolo_classifier.py --data-only     # only tools/data/yolo-cls
    python tools/train_yolo_classifier.py --samples-only  # only the samples + reference predictions
    python tools/train_yolo_classifier.py --data MY_IMAGEFOLDER --out models/my-yolo-cls.onnx [--epochs 30]
        # your own images: an ImageFolder (good/ + one folder per defect; split here into train/val,
        # stratified, --val-frac) or one already split (train/ val/ [test/]); held-out figures on test/
        # when there is one, else on val (said so in the metrics); no samples written

Data: tools/data/yolo-cls/{train,val,test}/<class>/NNNNN.png (ImageFolder
layout, 256x256 BGR PNGs straight from make_dataset.make_one, ~50 % good),
seeds train 21000, val 22000, held-out test 23000 (disjoint from the
classifier's 1000/2000/3000/4000 and the detector's 11000/12000/13000).
Ultralytics orders the classes by folder name: 0 chip, 1 crack, 2 good,
3 scratch, 4 spot (the ONNX metadata ``names`` carries it).

Writes (a test fixture, in tests/models/: the synthetic run did not learn, see tools/README.md)
    tests/models/surface-yolo-cls.onnx    input images [1,3,128,128], output0 [1,5] softmax probabilities
    tests/models/surface-yolo-cls.metrics.json  held-out test metrics (top-1, per-class precision/recall, NG recall,
                                          false-reject rate; OK = good, NG = any other argmax), ONNX info
    tests/models/surface-yolo-cls-samples/  8 test images (2 good + the first of each defect + 2 more) and one
                                          non-square (320x256) variant
    tests/models/surface-yolo-cls.reference.jsonl
                                          Ultralytics' predictions on them (tools/yolo_reference_seg_cls.py)

imgsz 128 (the images are 256x256; Ultralytics resizes with PIL bilinear,
antialiased, i.e. a [1,3,3,1]/8 kernel for 256 -> 128; 128 keeps training
within the CPU budget and matches the existing classifier's input size).
Augmentation for defects that may be 1 px wide: whole frame always
(scale=0 -> RandomResizedCrop area (1, 1): the full image), flips in both axes,
brightness/contrast jitter 0.4, no hue/saturation, no RandAugment, no random
erasing (both can remove the defect and so falsify the label).

Same no-download measures as tools/train_detector.py (yolov8n-cls.yaml, no
weights, pretrained=False, amp=False, plots=False, YOLO_OFFLINE=1, check_font
no-op, network guard recorded in the metrics).
"""
from __future__ import annotations

import os
import sys

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)
import yolo_common  # noqa: E402  (stdlib only)

NETWORK_ATTEMPTS = yolo_common.install_network_guard("tools/train_yolo_classifier.py")  # before ultralytics

import argparse  # noqa: E402
import csv  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import make_dataset as mds  # noqa: E402  (the classifier's generator, used as is)

NAME = "surface-yolo-cls"
SPLIT_SEEDS = {"train": 21000, "val": 22000, "test": 23000}
OK_CLASSES = ("good",)


# ---------------------------------------------------------------- data
def _write_range(args):
    seed, start, stop, split_dir = args
    cv2.setNumThreads(1)
    counts = {c: 0 for c in mds.CLASSES}
    for i in range(start, stop):
        img, cls = mds.make_one(seed, i)
        cv2.imwrite(os.path.join(split_dir, cls, f"{i:05d}.png"), img)
        counts[cls] += 1
    return counts


def make_data(out, sizes, workers=2):
    """ImageFolder set from make_dataset; reused if stats.json says it was made with the same
    seeds, sizes and make_dataset.py."""
    gen_hash = hashlib.sha256(open(os.path.join(TOOLS, "make_dataset.py"), "rb").read()).hexdigest()[:16]
    key = {"seeds": SPLIT_SEEDS, "sizes": sizes, "make_dataset_sha256_16": gen_hash}
    sp = os.path.join(out, "stats.json")
    if os.path.exists(sp):
        st = json.load(open(sp))
        if st.get("key") == key:
            print("data set up to date:", out, flush=True)
            return st
    if os.path.isdir(out):
        shutil.rmtree(out)
    t0 = time.time()
    st = {"key": key}
    import multiprocessing as mp
    for split, n in sizes.items():
        d = os.path.join(out, split)
        for c in mds.CLASSES:
            os.makedirs(os.path.join(d, c), exist_ok=True)
        jobs = [(SPLIT_SEEDS[split], a, min(a + 100, n), d) for a in range(0, n, 100)]
        if workers > 1:
            with mp.get_context("fork").Pool(workers) as pool:
                res = pool.map(_write_range, jobs)
        else:
            res = [_write_range(j) for j in jobs]
        st[split] = {"seed": SPLIT_SEEDS[split], "images": n,
                     "per_class": {c: int(sum(r[c] for r in res)) for c in mds.CLASSES}}
        print(split, json.dumps(st[split]), flush=True)
    st["generation_time_s"] = round(time.time() - t0, 1)
    with open(sp, "w") as fh:
        fh.write(json.dumps(st, indent=2) + "\n")
    return st


def test_files(data_dir, split="test"):
    """(path, class name) of every image of a split (held-out test by default), sorted by file name."""
    out = []
    root = os.path.join(data_dir, split)
    for c in sorted(os.listdir(root)):
        d = os.path.join(root, c)
        if os.path.isdir(d):
            out += [(os.path.join(d, f), c) for f in os.listdir(d) if f.lower().endswith(yolo_common.IMAGE_EXT)]
    return sorted(out, key=lambda t: os.path.basename(t[0]))


def count_folder(split_dir):
    """Images per class folder of one split."""
    return {c: sum(f.lower().endswith(yolo_common.IMAGE_EXT) for f in os.listdir(os.path.join(split_dir, c)))
            for c in sorted(os.listdir(split_dir)) if os.path.isdir(os.path.join(split_dir, c))}


# ---------------------------------------------------------------- metrics
def cls_report(y_true, y_pred, names):
    """Argmax metrics: top-1, per-class precision/recall, confusion matrix, OK/NG (OK = good)."""
    nc = len(names)
    cm = np.zeros((nc, nc), np.int64)
    for t, p in zip(y_true, y_pred):
        cm[t, p] += 1
    per = {}
    for k in range(nc):
        tp, fp, fn = cm[k, k], cm[:, k].sum() - cm[k, k], cm[k, :].sum() - cm[k, k]
        per[names[k]] = {"support": int(cm[k].sum()),
                         "precision": float(tp / (tp + fp)) if tp + fp else None,
                         "recall": float(tp / (tp + fn)) if tp + fn else None}
    ok_ids = [k for k in range(nc) if names[k] in OK_CLASSES]
    t_ng = ~np.isin(y_true, ok_ids)
    p_ng = ~np.isin(y_pred, ok_ids)
    n_ng, n_ok = int(t_ng.sum()), int((~t_ng).sum())
    missed = int((t_ng & ~p_ng).sum())
    fr = int((~t_ng & p_ng).sum())
    by_defect = {}
    for k in range(nc):
        if k not in ok_ids:
            m = np.asarray(y_true) == k
            by_defect[names[k]] = float(p_ng[m].mean()) if m.any() else None
    return {
        "images": len(y_true), "top1_accuracy": float((np.asarray(y_true) == np.asarray(y_pred)).mean()),
        "per_class": per,
        "confusion_matrix": {"rows_true_cols_pred": [names[k] for k in range(nc)], "counts": cm.tolist()},
        "ok_ng": {"ok_classes": list(OK_CLASSES), "verdict": "NG iff argmax class is not 'good'",
                  "ng_images": n_ng, "ok_images": n_ok,
                  "ng_recall": (n_ng - missed) / n_ng if n_ng else None, "ng_missed": missed,
                  "false_reject_rate": fr / n_ok if n_ok else None, "false_rejects": fr,
                  "ng_precision": float((t_ng & p_ng).sum() / p_ng.sum()) if p_ng.sum() else None,
                  "ng_recall_by_defect": by_defect},
    }


def read_curve(path):
    rows = []
    with open(path) as fh:
        for r in csv.DictReader(fh):
            r = {k.strip(): v for k, v in r.items()}
            rows.append({"epoch": int(float(r["epoch"])), "time_s": round(float(r.get("time", "nan")), 1),
                         "train_loss": round(float(r.get("train/loss", "nan")), 4),
                         "val_loss": round(float(r.get("val/loss", "nan")), 4),
                         "val_top1": round(float(r["metrics/accuracy_top1"]), 4)})
    return rows


def measure_onnx(onnx_path, data_dir, names, imgsz, split="test"):
    """The exported ONNX on every held-out test image, preprocessed by the written-out spec
    (yolo_reference_seg_cls.classify_preprocess, numpy + onnxruntime)."""
    import onnxruntime as ort
    import yolo_reference_seg_cls as ref
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    inv = {v: k for k, v in names.items()}
    files = test_files(data_dir, split)
    probs = np.stack([sess.run(None, {sess.get_inputs()[0].name: ref.classify_preprocess(cv2.imread(p, cv2.IMREAD_COLOR), imgsz)})[0][0]
                      for p, _ in files])
    y_true = np.array([inv[c] for _, c in files])
    return files, probs, y_true


def ultralytics_agreement(onnx_path, files, probs, imgsz):
    """Ultralytics' own predictor on the same ONNX and images: top-1 agreement and max |prob diff|."""
    from ultralytics import YOLO
    m = YOLO(onnx_path, task="classify")
    agree, worst = 0, 0.0
    for (p, _), q in zip(files, probs):
        r = m.predict(p, imgsz=imgsz, device="cpu", verbose=False, save=False)[0]
        u = r.probs.data.cpu().numpy()
        agree += int(np.argmax(u)) == int(np.argmax(q))
        worst = max(worst, float(np.abs(u - q).max()))
    return {"images": len(files), "top1_agree": agree, "max_abs_prob_diff": worst}


# ---------------------------------------------------------------- samples
def write_samples(data_dir, out_dir):
    """2 good + the first test image of each defect class + the next 2 defects (index order) = 8,
    and one non-square case: the first defect sample padded (edge pixels replicated) to 320x256
    at x=32, so the short-side resize and the centre crop are exercised."""
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    files = test_files(data_dir)
    chosen = [f for f in files if f[1] == "good"][:2]
    for c in mds.CLASSES[1:]:
        chosen.append(next(f for f in files if f[1] == c))
    rest = [f for f in files if f[1] != "good" and f not in chosen]
    chosen += rest[:8 - len(chosen)]
    chosen.sort(key=lambda t: os.path.basename(t[0]))
    names = []
    for p, c in chosen:
        n = f"test_{os.path.basename(p)[:-4]}_{c}.png"
        shutil.copy(p, os.path.join(out_dir, n))
        names.append(n)
    src, c = next(f for f in chosen if f[1] != "good")
    img = cv2.imread(src)
    big = cv2.copyMakeBorder(img, 0, 0, 32, 32, cv2.BORDER_REPLICATE)
    n = f"nonsquare_{os.path.basename(src)[:-4]}_{c}_320x256.png"
    cv2.imwrite(os.path.join(out_dir, n), big)
    names.append(n)
    return names, f"test {os.path.basename(src)} ({c}) padded to 320x256 at x=32, edge pixels replicated"


def make_samples(data_dir, models_dir, name, onnx_path):
    sdir = os.path.join(models_dir, name + "-samples")
    files, ns = write_samples(data_dir, sdir)
    ref = onnx_path[:-len(".onnx")] + ".reference.jsonl"
    cmd = [sys.executable, os.path.join(TOOLS, "yolo_reference_seg_cls.py"), os.path.relpath(onnx_path, ROOT)]
    cmd += [os.path.relpath(os.path.join(sdir, x), ROOT) for x in files]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    with open(ref, "w") as fh:
        fh.write(out)
    return {"dir": os.path.relpath(sdir, ROOT), "images": files, "nonsquare_case": ns,
            "reference_predictions": os.path.relpath(ref, ROOT),
            "reference_command": "python tools/yolo_reference_seg_cls.py MODEL.onnx IMAGES..."}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(TOOLS, "data", "yolo-cls"),
                    help="an ImageFolder of your own (good/ + defect folders, or train/ val/ [test/] of them); "
                         "default: the synthetic set, made if missing")
    ap.add_argument("--out", help="the model file to write (PATH.onnx, its .metrics.json beside it); "
                                  "default tests/models/surface-yolo-cls.onnx (the synthetic run's test fixture)")
    ap.add_argument("--val-frac", type=float, default=0.2, help="--data not split yet: share of each class for val")
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-val", type=int, default=500)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--imgsz", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr0", type=float, default=0.001, help="AdamW learning rate (linear decay to 1 %%)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--workers", type=int, default=2, help="processes for the data generation")
    # The synthetic run's export is the classify adapter's test fixture, not a model to judge
    # parts with (it did not learn): it lives in tests/models/.
    ap.add_argument("--models", default=os.path.join(ROOT, "tests", "models"))
    ap.add_argument("--runs", default=os.path.join(TOOLS, "data", "runs"))
    ap.add_argument("--name", default=NAME)
    ap.add_argument("--data-only", action="store_true")
    ap.add_argument("--no-samples", action="store_true")
    ap.add_argument("--samples-only", action="store_true")
    a = ap.parse_args()
    if a.out:
        a.models, a.name = yolo_common.out_to_models_name(a.out)
    out_onnx = os.path.join(a.models, a.name + ".onnx")
    mpath = os.path.join(a.models, a.name + ".metrics.json")
    sizes = {"train": a.n_train, "val": a.n_val, "test": a.n_test}
    synthetic = os.path.abspath(a.data) == os.path.join(TOOLS, "data", "yolo-cls")
    if synthetic:
        stats = make_data(a.data, sizes, a.workers)
    else:
        if not os.path.isdir(a.data):
            sys.exit(f"{a.data}: no such folder; --data takes an ImageFolder (good/ + one folder per defect)")
        if not (os.path.isdir(os.path.join(a.data, "train")) and os.path.isdir(os.path.join(a.data, "val"))):
            # Ultralytics wants train/ and val/ of class folders: a split made of symlinks beside the runs
            split_dir = os.path.join(a.runs, a.name + "-data")
            counts = yolo_common.split_imagefolder(a.data, split_dir, a.val_frac, a.seed)
            print("split", a.data, "into", split_dir, json.dumps(counts), flush=True)
            a.data = split_dir
        stats = {}
        for split in ("train", "val", "test"):
            if os.path.isdir(os.path.join(a.data, split)):
                n = count_folder(os.path.join(a.data, split))
                stats[split] = {"seed": None, "images": sum(n.values()), "per_class": n}
        a.no_samples = True  # the samples are the committed model's parity fixtures, made from the synthetic set
    test_split = "test" if "test" in stats else "val"
    if a.data_only:
        return
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

    train_args = dict(
        data=a.data, epochs=a.epochs, imgsz=a.imgsz, batch=a.batch, device="cpu", workers=2,
        pretrained=False, amp=False, plots=False, seed=a.seed, deterministic=True,
        project=a.runs, name=a.name, exist_ok=True, cache="ram", patience=1000, verbose=True,
        # one optimizer step per batch (nbs = batch: no gradient accumulation), AdamW with an explicit
        # lr, biases warmed up from 0 like the weights (the default warmup_bias_lr 0.1 is an SGD value)
        optimizer="AdamW", lr0=a.lr0, nbs=a.batch, warmup_epochs=1.0, warmup_bias_lr=0.0,
        # the whole frame always (RandomResizedCrop area (1 - scale, 1) = (1, 1)), flips in both
        # axes, brightness/contrast jitter, no hue/saturation; no RandAugment, no random erasing
        scale=0.0, fliplr=0.5, flipud=0.5, hsv_h=0.0, hsv_s=0.0, hsv_v=0.4,
        auto_augment=None, erasing=0.0,
    )
    model = YOLO("yolov8n-cls.yaml")  # architecture only, random init (nc becomes 5 in train)
    t0 = time.time()
    model.train(**train_args)
    t_train = time.time() - t0
    best = str(model.trainer.best)
    print(f"trained in {t_train:.0f}s; best = {best}", flush=True)
    names = {int(k): v for k, v in model.names.items()}
    curve = read_curve(os.path.join(str(model.trainer.save_dir), "results.csv"))

    t1 = time.time()
    best_model = YOLO(best)
    n_params = sum(p.numel() for p in best_model.model.parameters())
    val_args = dict(data=a.data, imgsz=a.imgsz, batch=a.batch, device="cpu", plots=False, workers=0,
                    project=a.runs, exist_ok=True, verbose=False)
    mt = best_model.val(split=test_split, name=a.name + "-test-pt", **val_args)
    test_pt_top1 = float(mt.top1)

    os.makedirs(a.models, exist_ok=True)
    f = YOLO(best).export(format="onnx", imgsz=a.imgsz, opset=a.opset, simplify=False, dynamic=False,
                          batch=1, device="cpu")
    shutil.copy(f, out_onnx)
    info = yolo_common.onnx_info(out_onnx, ROOT)
    print("onnx", info["path"], "inputs", info["inputs"], "outputs", info["outputs"], flush=True)
    for mk, mv in info["metadata_props"].items():
        print(f"   {mk} = {mv}")

    files, probs, y_true = measure_onnx(out_onnx, a.data, names, a.imgsz, test_split)
    test = cls_report(y_true, probs.argmax(1), names)
    agreement = ultralytics_agreement(out_onnx, files, probs, a.imgsz)
    t_eval = time.time() - t1

    samples = None if a.no_samples else make_samples(a.data, a.models, a.name, out_onnx)

    import onnx
    import onnxruntime
    import PIL
    import torchvision
    metrics = {
        "model": "Ultralytics YOLOv8n-cls (yolov8n-cls.yaml), trained from scratch, no pretrained weights",
        "classes": names,
        "test": {"split": ("held-out test (make_dataset seed %d), never used for training or choices"
                           % SPLIT_SEEDS["test"]) if synthetic else
                          ("held-out test/ of %s, never used for training or choices" % a.data if test_split == "test"
                           else "no test/ in --data: measured on val, which also picked best.pt (optimistic)"),
                 "measured_with": "exported ONNX, onnxruntime, preprocessing of tools/yolo_reference_seg_cls.py "
                                  "(= Ultralytics' classify_transforms, bit-exact), argmax",
                 **test},
        "test_ultralytics_agreement": {"what": "Ultralytics' predictor on the same ONNX and images", **agreement},
        "test_pt_top1_ultralytics_val": test_pt_top1,
        "data": {s: stats[s] for s in ("train", "val", "test") if s in stats},
        "data_generation_time_s": stats.get("generation_time_s"),
        "training_time_s": round(t_train, 1),
        "evaluation_export_time_s": round(t_eval, 1),
        "training_note": "wall time of model.train() incl. per-epoch validation, CPU, 2 threads "
                         "(shared with concurrent cargo builds); val split picks best.pt",
        "epochs": a.epochs, "imgsz": a.imgsz, "batch": a.batch, "seed": a.seed,
        "train_args": {k: v for k, v in train_args.items() if k not in ("data", "project")},
        "param_count": int(n_params),
        "val_curve": curve,
        "onnx": info,
        "samples": samples,
        "network_attempts": NETWORK_ATTEMPTS,
        "versions": {"ultralytics": ultralytics.__version__, "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "opencv": cv2.__version__,
                     "pillow": PIL.__version__, "numpy": np.__version__, "python": sys.version.split()[0]},
    }
    with open(mpath, "w") as fh:
        fh.write(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps({"test": {k: test[k] for k in ("top1_accuracy", "ok_ng")}, "agreement": agreement,
                      "training_time_s": metrics["training_time_s"], "network_attempts": NETWORK_ATTEMPTS},
                     indent=2))
    print("wrote", mpath)


if __name__ == "__main__":
    main()
