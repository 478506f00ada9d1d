#!/usr/bin/env python3
"""Train the linesight surface classifier from scratch on synthetic data,
pick the NG threshold on the validation set, export to ONNX with metadata,
and measure it on a held-out test set.

    python tools/train_classifier.py            # defaults: writes models/surface-classifier.*
    python tools/train_classifier.py --data DIR --out models/mine.onnx [--test DIR] [--epochs N] [--threads 1]

With `--data DIR` it trains the same network on your own images instead: an ImageFolder
(`DIR/good/*.png|jpg` = OK, every other folder = one NG class, named for the defect). It splits
DIR into train and validation itself (stratified, `--val-frac`, seeded), picks the NG threshold
on validation, exports `--out` with the same contract as the committed model (so the daemon and
`linesight eval` load it as it is), and writes `<out>.metrics.json` beside it (validation figures,
and held-out figures if `--test DIR` is another ImageFolder with the same class folders), with
the process's CPU time (user + sys).

Splits come from disjoint seeds of tools/make_dataset.py:
    train seed 1000, val seed 2000, held-out test seed 3000.
The test split is only used for the final metrics (never for choices).

Preprocessing contract (must match the Rust side exactly):
    cv2.resize(bgr, (128,128), interpolation=cv2.INTER_LINEAR)
    BGR -> RGB, float32 / 255, (x - 0.5) / 0.25 per channel, NCHW.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_dataset import CLASSES, make_set  # noqa: E402

INPUT = 128
MEAN = [0.5, 0.5, 0.5]
STD = [0.25, 0.25, 0.25]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------ preprocessing
def preprocess(bgr: np.ndarray) -> np.ndarray:
    """One BGR uint8 image of any size -> float32 [3,128,128] (the contract)."""
    x = cv2.resize(bgr, (INPUT, INPUT), interpolation=cv2.INTER_LINEAR)
    x = cv2.cvtColor(x, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    x = (x - np.float32(MEAN)) / np.float32(STD)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def batch_from_resized(X: np.ndarray) -> np.ndarray:
    """N x 128 x 128 x 3 BGR uint8 (already cv2.resize'd) -> N x 3 x 128 x 128 float32.
    Identical to preprocess() per image."""
    x = X[..., ::-1].astype(np.float32) / 255.0
    x = (x - np.float32(MEAN)) / np.float32(STD)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# ------------------------------------------------------------ model
def conv_bn(cin, cout, stride):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SurfaceNet(nn.Module):
    def __init__(self, n_classes=len(CLASSES), widths=(16, 32, 64, 80)):
        super().__init__()
        w1, w2, w3, w4 = widths
        self.features = nn.Sequential(
            conv_bn(3, w1, 2),   # 64x64
            conv_bn(w1, w2, 2),  # 32x32
            conv_bn(w2, w3, 2),  # 16x16
            conv_bn(w3, w3, 1),
            conv_bn(w3, w4, 2),  # 8x8
            conv_bn(w4, w4, 1),
        )
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(2 * w4, n_classes)

    def forward(self, x):
        x = self.features(x)
        # global average pool + global max pool: a defect is small and can be
        # anywhere, max pooling keeps its evidence from being averaged away
        x = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        return self.fc(self.drop(x))


# ------------------------------------------------------------ augmentation
def augment(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Label-preserving: a random flip / 90 degree turn (one per batch, cheap),
    per-image brightness, contrast and per-channel gain jitter (normalised space)."""
    n = xb.shape[0]
    k = int(torch.randint(0, 4, (1,), generator=gen))
    out = torch.rot90(xb, k, dims=(2, 3)) if k else xb
    if float(torch.rand(1, generator=gen)) < 0.5:
        out = out.flip(3)
    c = 1.0 + (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.3
    b = (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.4
    g = 1.0 + (torch.rand(n, 3, 1, 1, generator=gen) - 0.5) * 0.06
    mu = out.mean(dim=(1, 2, 3), keepdim=True)
    return (out - mu) * (c * g) + mu + b


def augment_per_image(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """For a few hundred images of one's own parts (`--data`): every image gets its own 90 degree
    turn, flip and shift (up to 12 px of 128, wrapped round, so a defect never leaves the frame and
    the label stays true), and brighter/darker, contrast and per-channel gain changes three to six
    times wider than `augment` (another lamp, another colour temperature). On 240 drilled-plate
    images (tools/make_plate_dataset.py) `augment` let the network learn the training images by
    heart (train loss 0.2, validation NG errors 24 of 60 = chance); this brought validation NG
    errors to 10 of 60 after 200 epochs."""
    n = xb.shape[0]
    out = torch.empty_like(xb)
    for i in range(n):
        o = torch.rot90(xb[i], int(torch.randint(0, 4, (1,), generator=gen)), dims=(1, 2))
        if float(torch.rand(1, generator=gen)) < 0.5:
            o = o.flip(2)
        dy, dx = torch.randint(-12, 13, (2,), generator=gen).tolist()
        out[i] = torch.roll(o, (dy, dx), dims=(1, 2))
    c = 1.0 + (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.5
    b = (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.8
    g = 1.0 + (torch.rand(n, 3, 1, 1, generator=gen) - 0.5) * 0.4
    mu = out.mean(dim=(1, 2, 3), keepdim=True)
    return (out - mu) * (c * g) + mu + b


# ------------------------------------------------------------ helpers
def predict_logits(model, X, bs=250):
    model.eval()
    outs = []
    with torch.no_grad():
        for a in range(0, len(X), bs):
            outs.append(model(torch.from_numpy(batch_from_resized(X[a:a + bs]))))
    return torch.cat(outs).numpy()


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def choose_threshold(p_ng, is_ng, lo=0.2, hi=0.8):
    """On validation data: among T in [lo,hi] (0.01 steps) take those with the
    fewest errors (missed NG + false rejects), then the middle of the widest
    run of such T (robust to small score shifts)."""
    grid = np.round(np.arange(lo, hi + 1e-9, 0.01), 2)
    errs = np.array([((p_ng >= t) != is_ng).sum() for t in grid])
    best = errs.min()
    ok = errs == best
    runs, start = [], None
    for i, v in enumerate(ok):
        if v and start is None:
            start = i
        if (not v or i == len(ok) - 1) and start is not None:
            end = i if v else i - 1
            runs.append((end - start, start, end))
            start = None
    _, s, e = max(runs)
    return float(grid[(s + e) // 2]), int(best)


def ng_metrics(p_ng, y, t):
    is_ng = y != 0
    pred = p_ng >= t
    tp = int((pred & is_ng).sum())
    fp = int((pred & ~is_ng).sum())
    fn = int((~pred & is_ng).sum())
    tn = int((~pred & ~is_ng).sum())
    return {
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "ng_precision": tp / max(tp + fp, 1),
        "ng_recall": tp / max(tp + fn, 1),
        "false_reject_rate": fp / max(fp + tn, 1),
        "binary_accuracy": (tp + tn) / len(y),
    }


def class_report(probs, y, classes=CLASSES):
    pred = probs.argmax(1)
    k = len(classes)
    cm = np.zeros((k, k), int)
    for t, p in zip(y, pred):
        cm[t, p] += 1
    rec = {c: float(cm[i, i] / max(cm[i].sum(), 1)) for i, c in enumerate(classes)}
    return float((pred == y).mean()), rec, cm.tolist()


# ------------------------------------------------------------ export
def export_onnx(model, path, meta_json, doc="linesight surface classifier"):
    import onnx
    model.eval()
    dummy = torch.from_numpy(np.zeros((1, 3, INPUT, INPUT), np.float32))
    kw = dict(
        input_names=["images"], output_names=["scores"], opset_version=17,
        dynamic_axes={"images": {0: "N"}, "scores": {0: "N"}},
    )
    try:
        torch.onnx.export(model, (dummy,), path, dynamo=False, **kw)
        exporter = "torchscript"
    except Exception as e:  # legacy exporter removed in this torch: use dynamo one
        print("legacy exporter unavailable (%s); using dynamo exporter" % e)
        kw.pop("dynamic_axes")
        batch = torch.export.Dim("N", min=1, max=4096)
        torch.onnx.export(model, (dummy,), path, dynamo=True, external_data=False,
                          dynamic_shapes={"x": {0: batch}}, **kw)
        exporter = "dynamo"
    m = onnx.load(path)
    del m.metadata_props[:]
    p = m.metadata_props.add()
    p.key = "linesight"
    p.value = meta_json
    m.doc_string = doc + "; output 'scores' are logits (apply softmax)"
    onnx.checker.check_model(m)
    onnx.save(m, path)
    for f in (path + ".data",):
        if os.path.exists(f):
            raise RuntimeError("unexpected external data file " + f)
    return exporter, m.opset_import[0].version


def ort_logits(path, X, bs=250):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    outs = []
    for a in range(0, len(X), bs):
        outs.append(sess.run(["scores"], {"images": batch_from_resized(X[a:a + bs])})[0])
    return np.concatenate(outs)


def cached_set(seed, n, workers):
    """make_set at 128x128; cached in $LINESIGHT_DATA_CACHE (a folder) if set."""
    d = os.environ.get("LINESIGHT_DATA_CACHE")
    if d:
        import hashlib
        src = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "make_dataset.py"), "rb").read()
        h = hashlib.sha1(src).hexdigest()[:10]  # invalidated when the generator changes
        p = os.path.join(d, f"set_{seed}_{n}_{INPUT}_{h}.npz")
        if os.path.exists(p):
            z = np.load(p)
            return z["X"], z["y"]
    X, y = make_set(seed, n, size=INPUT, workers=workers)
    if d:
        os.makedirs(d, exist_ok=True)
        np.savez(p, X=X, y=y)
    return X, y


# ------------------------------------------------------------ training
def fit(model, Xtr, ytr, Xva, yva, epochs, batch, lr, seed, aug=augment):
    """Adam with cosine decay, the augmentation above; prints the validation figures
    of every epoch; returns the wall time of training. Shared by the synthetic run and
    `--data`: the same calls in the same order, so the synthetic run draws the same numbers."""
    xtr = torch.from_numpy(batch_from_resized(Xtr))
    ytr_t = torch.from_numpy(ytr)
    steps_per_epoch = (len(xtr) + batch - 1) // batch
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch, eta_min=lr * 0.02)
    gen = torch.Generator().manual_seed(seed)
    va_is_ng = yva != 0

    t1 = time.time()
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        tot, nb = 0.0, 0
        for s in range(steps_per_epoch):
            idx = perm[s * batch:(s + 1) * batch]
            xb = aug(xtr[idx], gen)
            loss = F.cross_entropy(model(xb), ytr_t[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item()
            nb += 1
        pv = softmax(predict_logits(model, Xva))
        p_ng = 1.0 - pv[:, 0]
        t_ep, err = choose_threshold(p_ng, va_is_ng)
        acc = float((pv.argmax(1) == yva).mean())
        print(f"epoch {ep + 1:2d}/{epochs} loss {tot / nb:.4f} val acc {acc:.4f} "
              f"val NG errors {err} @T={t_ep:.2f}  [{time.time() - t1:.0f}s]", flush=True)
    t_train = time.time() - t1
    return t_train


# ------------------------------------------------------------ your own images (--data)
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def imagefolder_classes(root, classes=None):
    """The class list of an ImageFolder: `good` first (the OK class), then every other folder
    (an NG class each) in name order. With `classes` given (a held-out set), its folders must be
    among them."""
    if not os.path.isdir(root):
        sys.exit(f"{root}: no such folder; --data/--test take an ImageFolder (good/ and one folder per defect)")
    found = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if classes is not None:
        extra = [d for d in found if d not in classes]
        if extra:
            sys.exit(f"{root}: folders {extra} are not classes of the training data {classes}; "
                     "rename them to one of those or move them out")
        return classes
    if "good" not in found:
        sys.exit(f"{root}: no `good/` folder; put the images of good parts in {os.path.join(root, 'good')} "
                 "and each defect's images in a folder named for it")
    ng = [d for d in found if d != "good"]
    if not ng:
        sys.exit(f"{root}: only `good/`; add at least one defect folder (e.g. {os.path.join(root, 'defect')})")
    return ["good"] + ng


def read_imagefolder(root, classes):
    """Every image of every class folder, resized to the model's input as the contract says.
    Returns (uint8 N x 128 x 128 x 3 BGR, int64 class indices, file paths)."""
    X, y, paths = [], [], []
    for k, c in enumerate(classes):
        d = os.path.join(root, c)
        if not os.path.isdir(d):
            continue
        files = sorted(f for f in os.listdir(d) if f.lower().endswith(IMAGE_EXT))
        for f in files:
            path = os.path.join(d, f)
            img = cv2.imread(path, cv2.IMREAD_COLOR)
            if img is None:
                sys.exit(f"{path}: not an image OpenCV can read; re-export it or move it out of {d}")
            X.append(cv2.resize(img, (INPUT, INPUT), interpolation=cv2.INTER_LINEAR))
            y.append(k)
            paths.append(path)
    if not X:
        sys.exit(f"{root}: no images (.png, .jpg, .bmp, .tif) in the class folders {classes}")
    return np.stack(X), np.array(y, np.int64), paths


def stratified_split(y, val_frac, seed):
    """Indices (train, val): per class, a seeded shuffle, `val_frac` of it (at least one image,
    when the class has two or more) to validation."""
    rng = np.random.default_rng(seed)
    tr, va = [], []
    for k in np.unique(y):
        idx = np.nonzero(y == k)[0]
        rng.shuffle(idx)
        n_va = int(round(len(idx) * val_frac))
        if len(idx) >= 2:
            n_va = min(max(n_va, 1), len(idx) - 1)
        else:
            n_va = 0
        va.extend(idx[:n_va])
        tr.extend(idx[n_va:])
    return np.array(sorted(tr)), np.array(sorted(va))


def cpu_seconds():
    """User + system CPU time of this process and its finished children (what `time` reports)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def split_figures(p_ng, y, T, classes):
    """NG figures at T, per-class recall (argmax) and NG recall per defect folder."""
    m = ng_metrics(p_ng, y, T)
    by_defect = {c: float((p_ng[y == i] >= T).mean()) for i, c in enumerate(classes) if i and (y == i).any()}
    return {"n": int(len(y)), "n_good": int((y == 0).sum()), "n_ng": int((y != 0).sum()), **m,
            "ng_recall_by_defect": by_defect}


def main_data(a):
    """Train on an ImageFolder of the user's own parts (see the module documentation)."""
    if not a.out:
        sys.exit("--data needs --out PATH.onnx (where to write the model, its sidecar and its metrics)")
    if not a.out.endswith(".onnx"):
        sys.exit(f"--out {a.out}: name the model file with .onnx (the sidecar is <out>.json, the metrics <name>.metrics.json)")
    epochs = a.epochs or 200
    aug_name = a.augment or "image"
    aug = augment_per_image if aug_name == "image" else augment
    cpu0 = cpu_seconds()
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    classes = imagefolder_classes(a.data)
    X, y, paths = read_imagefolder(a.data, classes)
    counts = {c: int((y == i).sum()) for i, c in enumerate(classes)}
    print(f"data: {len(y)} images in {a.data}: {counts}", flush=True)
    tr, va = stratified_split(y, a.val_frac, a.seed)
    if len(va) == 0 or not (y[va] == 0).any() or not (y[va] != 0).any():
        sys.exit(f"{a.data}: too few images to keep good and defective ones for validation "
                 f"({counts}); add images (tens per class at least) or raise --val-frac")
    Xtr, ytr, Xva, yva = X[tr], y[tr], X[va], y[va]
    print(f"split (seed {a.seed}): train {len(tr)}, validation {len(va)}", flush=True)

    model = SurfaceNet(n_classes=len(classes))
    n_params = sum(p.numel() for p in model.parameters())
    t_train = fit(model, Xtr, ytr, Xva, yva, epochs, a.batch, a.lr, a.seed, aug)
    pv = softmax(predict_logits(model, Xva))
    T, _ = choose_threshold(1.0 - pv[:, 0], yva != 0)
    print(f"chosen T={T} on validation", flush=True)

    name = a.name or os.path.basename(a.out)[: -len(".onnx")]
    meta = {
        "kind": "classifier", "name": name, "version": "1",
        "input": {"name": "images", "width": INPUT, "height": INPUT, "channel_order": "rgb",
                  "scale": 1.0 / 255.0, "mean": MEAN, "std": STD, "resize": "bilinear"},
        "output": {"name": "scores", "activation": "logits"},
        "classes": classes, "ok_classes": ["good"], "ng_threshold": T,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    exporter, opset = export_onnx(model, a.out, json.dumps(meta, separators=(",", ":")), doc="linesight classifier " + name)
    with open(a.out + ".json", "w") as f:
        f.write(json.dumps(meta, indent=2) + "\n")

    # validation figures from the exported file (what the daemon runs), and torch beside it
    po = softmax(ort_logits(a.out, Xva))
    max_diff = float(np.abs(po - pv).max())
    cpu_train = cpu_seconds() - cpu0
    import onnxruntime
    metrics = {
        "data": os.path.abspath(a.data), "classes": classes, "images": counts,
        "split": {"seed": a.seed, "val_frac": a.val_frac, "train": int(len(tr)), "validation": int(len(va))},
        "threshold": T,
        "threshold_chosen_on": "validation split of --data: fewest NG errors, middle of the widest such range in [0.2,0.8]",
        "validation": {**split_figures(1.0 - po[:, 0], yva, T, classes),
                       "note": "the threshold was chosen on these images: optimistic; judge the model on --test or with linesight eval"},
        "onnx_vs_torch_max_abs_prob_diff": max_diff,
        "epochs": epochs, "batch": a.batch, "lr": a.lr, "seed": a.seed, "threads": a.threads, "augment": aug_name,
        "param_count": int(n_params),
        "training_wall_s": round(t_train, 1),
        "cpu_s_user_sys": round(cpu_train, 1),
        "exporter": exporter, "opset": int(opset),
        "torch_version": torch.__version__, "onnxruntime_version": onnxruntime.__version__,
        "opencv_version": cv2.__version__, "model_bytes": os.path.getsize(a.out),
    }
    if a.test:
        Xte, yte, _ = read_imagefolder(a.test, imagefolder_classes(a.test, classes))
        pt = softmax(ort_logits(a.out, Xte))
        acc, rec, cm = class_report(pt, yte, classes)
        metrics["test"] = {"data": os.path.abspath(a.test), **split_figures(1.0 - pt[:, 0], yte, T, classes),
                           "accuracy": acc, "per_class_recall": rec,
                           "confusion_matrix": {"classes": classes, "rows": "true", "cols": "predicted (argmax)", "matrix": cm}}
    mpath = a.out[: -len(".onnx")] + ".metrics.json"
    with open(mpath, "w") as f:
        f.write(json.dumps(metrics, indent=2) + "\n")
    show = {"validation": {k: metrics["validation"][k] for k in ("n", "ng_recall", "false_reject_rate")},
            "threshold": T, "training_wall_s": metrics["training_wall_s"], "cpu_s_user_sys": metrics["cpu_s_user_sys"]}
    if a.test:
        show["test"] = {k: metrics["test"][k] for k in ("n", "ng_recall", "false_reject_rate", "accuracy")}
    print(json.dumps(show, indent=2))
    print(f"wrote {a.out}, {a.out}.json, {mpath}")


# ------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None,
                    help="the ONNX file to write (default models/surface-classifier.onnx; required with --data)")
    ap.add_argument("--data", help="train on this ImageFolder (good/ = OK, every other folder = an NG class) "
                                   "instead of the synthetic parts")
    ap.add_argument("--test", help="with --data: a held-out ImageFolder (same class folders) for the metrics")
    ap.add_argument("--val-frac", type=float, default=0.2, help="with --data: share of each class kept for validation")
    ap.add_argument("--name", help="with --data: the model name in its contract (default: --out's file name)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--seed", type=int, default=0, help="torch seed (init, shuffling, augmentation)")
    ap.add_argument("--train-seed", type=int, default=1000)
    ap.add_argument("--val-seed", type=int, default=2000)
    ap.add_argument("--test-seed", type=int, default=3000)
    ap.add_argument("--n-train", type=int, default=14000)
    ap.add_argument("--n-val", type=int, default=500)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=None, help="default 40 (synthetic), 200 (--data: few images)")
    ap.add_argument("--augment", choices=["batch", "image"], default=None,
                    help="batch: one turn/flip per batch, mild light jitter (the synthetic run's); image: per image, "
                         "with shifts and wider light jitter (default with --data: few images)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.data:
        return main_data(a)
    if a.test or a.augment:
        ap.error("--test and --augment go with --data (the synthetic run makes its own held-out set, augments per batch)")
    a.out = a.out or os.path.join(ROOT, "models", "surface-classifier.onnx")
    a.epochs = a.epochs or 40

    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    seeds = {a.train_seed, a.val_seed, a.test_seed}
    assert len(seeds) == 3, "split seeds must be distinct"

    t0 = time.time()
    Xtr, ytr = cached_set(a.train_seed, a.n_train, a.workers)
    Xva, yva = cached_set(a.val_seed, a.n_val, a.workers)
    Xte, yte = cached_set(a.test_seed, a.n_test, a.workers)
    t_data = time.time() - t0
    print(f"data: {len(Xtr)}/{len(Xva)}/{len(Xte)} in {t_data:.0f}s; train classes {np.bincount(ytr, minlength=5)}", flush=True)

    model = SurfaceNet()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params: {n_params}", flush=True)

    t_train = fit(model, Xtr, ytr, Xva, yva, a.epochs, a.batch, a.lr, a.seed)
    # the final epoch's weights are used (no checkpoint picking on val beyond the threshold)

    # ---- threshold on validation
    pv = softmax(predict_logits(model, Xva))
    T, val_err = choose_threshold(1.0 - pv[:, 0], yva != 0)
    val_m = ng_metrics(1.0 - pv[:, 0], yva, T)
    print(f"chosen T={T} on val: {val_m}", flush=True)

    # ---- export
    meta = {
        "kind": "classifier", "name": "surface-classifier", "version": "1",
        "input": {"name": "images", "width": INPUT, "height": INPUT, "channel_order": "rgb",
                  "scale": 1.0 / 255.0, "mean": MEAN, "std": STD, "resize": "bilinear"},
        "output": {"name": "scores", "activation": "logits"},
        "classes": CLASSES, "ok_classes": ["good"], "ng_threshold": T,
    }
    meta_json = json.dumps(meta, separators=(",", ":"))
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    exporter, opset = export_onnx(model, a.out, meta_json)
    with open(a.out + ".json", "w") as f:
        f.write(json.dumps(meta, indent=2) + "\n")

    # ---- held-out test, measured with onnxruntime (what is deployed) and torch
    lt = predict_logits(model, Xte)
    lo = ort_logits(a.out, Xte)
    pt, po = softmax(lt), softmax(lo)
    max_diff = float(np.abs(pt - po).max())
    p_ng = 1.0 - po[:, 0]
    tm = ng_metrics(p_ng, yte, T)
    acc, rec, cm = class_report(po, yte)
    # NG recall per defect type at threshold T
    ng_rec_by_type = {c: float((p_ng[yte == i] >= T).mean()) for i, c in enumerate(CLASSES) if i}
    import onnx
    import onnxruntime
    metrics = {
        "split": "held-out test (make_dataset seed %d, never used for training or choices)" % a.test_seed,
        "n": int(len(yte)),
        "n_good": int((yte == 0).sum()),
        "n_ng": int((yte != 0).sum()),
        "threshold": T,
        "threshold_chosen_on": "validation set (seed %d, n=%d): fewest NG errors, middle of the widest such range in [0.2,0.8]" % (a.val_seed, len(yva)),
        "accuracy": acc,
        "ng_precision": tm["ng_precision"],
        "ng_recall": tm["ng_recall"],
        "false_reject_rate": tm["false_reject_rate"],
        "binary_accuracy": tm["binary_accuracy"],
        "ng_counts": {k: tm[k] for k in ("tp", "fp", "fn", "tn")},
        "per_class_recall": rec,
        "ng_recall_by_defect": ng_rec_by_type,
        "confusion_matrix": {"classes": CLASSES, "rows": "true", "cols": "predicted (argmax)", "matrix": cm},
        "validation": {"n": int(len(yva)), **val_m},
        "onnx_vs_torch_max_abs_prob_diff": max_diff,
        "measured_with": "onnxruntime %s on the exported model" % onnxruntime.__version__,
        "target": {"ng_recall_min": 0.99, "false_reject_rate_max": 0.01,
                   "met": bool(tm["ng_recall"] >= 0.99 and tm["false_reject_rate"] <= 0.01)},
        "training_time_s": round(t_train, 1),
        "data_generation_time_s": round(t_data, 1),
        "epochs": a.epochs, "batch": a.batch, "lr": a.lr,
        "n_train": int(len(ytr)), "seed": a.seed,
        "split_seeds": {"train": a.train_seed, "val": a.val_seed, "test": a.test_seed},
        "param_count": int(n_params),
        "exporter": exporter, "opset": int(opset),
        "torch_version": torch.__version__, "onnx_version": onnx.__version__,
        "onnxruntime_version": onnxruntime.__version__, "opencv_version": cv2.__version__,
        "numpy_version": np.__version__,
        "model_bytes": os.path.getsize(a.out),
    }
    mpath = os.path.join(os.path.dirname(a.out), "surface-classifier.metrics.json")
    with open(mpath, "w") as f:
        f.write(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps({k: metrics[k] for k in ("accuracy", "ng_precision", "ng_recall", "false_reject_rate",
                                              "threshold", "onnx_vs_torch_max_abs_prob_diff", "training_time_s",
                                              "target")}, indent=2))
    print("confusion:", np.array(cm))


if __name__ == "__main__":
    main()
