#!/usr/bin/env python3
"""Train the linesight surface classifier from scratch on synthetic data,
pick the NG threshold on the validation set, export to ONNX with metadata,
and measure it on a held-out test set.

    python tools/train_classifier.py            # defaults: writes models/surface-classifier.*

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


def class_report(probs, y):
    pred = probs.argmax(1)
    k = len(CLASSES)
    cm = np.zeros((k, k), int)
    for t, p in zip(y, pred):
        cm[t, p] += 1
    rec = {c: float(cm[i, i] / max(cm[i].sum(), 1)) for i, c in enumerate(CLASSES)}
    return float((pred == y).mean()), rec, cm.tolist()


# ------------------------------------------------------------ export
def export_onnx(model, path, meta_json):
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
    m.doc_string = "linesight surface classifier; output 'scores' are logits (apply softmax)"
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


# ------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "surface-classifier.onnx"))
    ap.add_argument("--seed", type=int, default=0, help="torch seed (init, shuffling, augmentation)")
    ap.add_argument("--train-seed", type=int, default=1000)
    ap.add_argument("--val-seed", type=int, default=2000)
    ap.add_argument("--test-seed", type=int, default=3000)
    ap.add_argument("--n-train", type=int, default=14000)
    ap.add_argument("--n-val", type=int, default=500)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()

    torch.set_num_threads(2)
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

    xtr = torch.from_numpy(batch_from_resized(Xtr))
    ytr_t = torch.from_numpy(ytr)
    steps_per_epoch = (len(xtr) + a.batch - 1) // a.batch
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=a.epochs * steps_per_epoch, eta_min=a.lr * 0.02)
    gen = torch.Generator().manual_seed(a.seed)
    va_is_ng = yva != 0

    t1 = time.time()
    best = None
    for ep in range(a.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        tot, nb = 0.0, 0
        for s in range(steps_per_epoch):
            idx = perm[s * a.batch:(s + 1) * a.batch]
            xb = augment(xtr[idx], gen)
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
        print(f"epoch {ep + 1:2d}/{a.epochs} loss {tot / nb:.4f} val acc {acc:.4f} "
              f"val NG errors {err} @T={t_ep:.2f}  [{time.time() - t1:.0f}s]", flush=True)
    t_train = time.time() - t1
    # the final epoch's weights are used (no checkpoint picking on val beyond the threshold)

    # ---- threshold on validation
    pv = softmax(predict_logits(model, Xva))
    T, val_err = choose_threshold(1.0 - pv[:, 0], va_is_ng)
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
