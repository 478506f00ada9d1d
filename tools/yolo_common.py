"""Shared helpers of tools/train_segmenter.py, tools/train_yolo_classifier.py and
tools/yolo_reference_seg_cls.py (stdlib only at import time, so it can be
imported before Ultralytics).

* install_network_guard(): the no-network approach of tools/train_detector.py
  (copied, not imported: importing train_detector would install its own
  guard): every non-loopback socket connect / DNS lookup made by this process
  is refused and recorded (the list goes into the metrics as
  "network_attempts"). Call it before importing ultralytics; also sets
  YOLO_OFFLINE=1.
* patch_ultralytics_offline(): check_font() -> no-op (check_det_dataset /
  check_cls_dataset call it even with plots=False, and with no font cached it
  fetches Arial.ttf from github.com).
* onnx_info(): input/output names + shapes, opset and metadata_props of an
  ONNX file (as train_detector.onnx_info).
* rle_encode() / rle_decode(): the mask run-length code of the segmenter's
  reference predictions.
"""
from __future__ import annotations

import os
import socket
import traceback

NETWORK_ATTEMPTS: list[dict] = []
_LOCAL = ("127.", "::1", "localhost", "0.0.0.0")
_installed = False


def _where():
    fr = [f for f in traceback.extract_stack()[:-2] if "ultralytics" in f.filename or "tools/" in f.filename]
    return [f"{f.filename.split('site-packages/')[-1]}:{f.lineno} {f.name}" for f in fr[-6:]]


def install_network_guard(tag: str = "tools/yolo_common.py") -> list[dict]:
    """Refuse (and record) every non-loopback connect / getaddrinfo in this process."""
    global _installed
    os.environ.setdefault("YOLO_OFFLINE", "1")  # must happen before ultralytics is imported
    if _installed:
        return NETWORK_ATTEMPTS
    orig_connect = socket.socket.connect
    orig_getaddrinfo = socket.getaddrinfo

    def guard_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not str(address[0]).startswith(_LOCAL):
            NETWORK_ATTEMPTS.append({"connect": f"{address[0]}:{address[1]}", "from": _where()})
            raise OSError(f"network access refused by {tag}")
        return orig_connect(self, address)

    def guard_getaddrinfo(host, *a, **k):
        if host is not None and not str(host).startswith(_LOCAL):
            NETWORK_ATTEMPTS.append({"resolve": str(host), "from": _where()})
            raise socket.gaierror(socket.EAI_NONAME, f"network access refused by {tag}")
        return orig_getaddrinfo(host, *a, **k)

    socket.socket.connect = guard_connect
    socket.getaddrinfo = guard_getaddrinfo
    _installed = True
    return NETWORK_ATTEMPTS


def patch_ultralytics_offline():
    """check_font("Arial.ttf") is called by the dataset checks even with plots=False and
    downloads the font when it is not cached. Nothing is plotted here: make it a no-op
    everywhere it was imported by name."""
    import ultralytics.data.utils as du
    import ultralytics.utils.checks as ck

    def no_font(*a, **k):
        return None

    du.check_font = no_font
    ck.check_font = no_font


def onnx_info(path, root):
    """Input/output names + shapes, opset and metadata_props of an ONNX file."""
    import ast
    import hashlib

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
    if isinstance(parsed.get("names"), dict):
        parsed["names"] = {str(k): v for k, v in parsed["names"].items()}
    return {
        "path": os.path.relpath(path, root),
        "bytes": os.path.getsize(path),
        "sha256": hashlib.sha256(open(path, "rb").read()).hexdigest(),
        "opset": int(next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))),
        "ir_version": int(m.ir_version),
        "inputs": [{"name": v.name, "shape": shape(v), "dtype": dtype(v)} for v in m.graph.input],
        "outputs": [{"name": v.name, "shape": shape(v), "dtype": dtype(v)} for v in m.graph.output],
        "op_types": sorted({n.op_type for n in m.graph.node}),
        "metadata_props": meta,
        "metadata_parsed": parsed,
    }


def rle_encode(mask) -> list[int]:
    """Binary HxW mask -> run lengths of the row-major flattened mask, alternating
    0-runs and 1-runs, starting with a (possibly empty, length 0) run of 0s.
    The runs sum to H*W; the last run may be of either value."""
    import numpy as np
    f = np.asarray(mask, bool).ravel()
    if f.size == 0:
        return []
    change = np.flatnonzero(f[1:] != f[:-1]) + 1
    bounds = np.concatenate([[0], change, [f.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if f[0] else runs


def rle_decode(runs, h, w):
    import numpy as np
    f = np.zeros(h * w, bool)
    pos, val = 0, False
    for r in runs:
        if val:
            f[pos:pos + r] = True
        pos += r
        val = not val
    assert pos == h * w, (pos, h * w)
    return f.reshape(h, w)


# ---------------------------------------------------------------- a user's own data (--data, --out)
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def out_to_models_name(out):
    """`--out PATH.onnx` -> (folder, name): the model's other files (metrics, -nms, -batch) are named after it."""
    if not out.endswith(".onnx"):
        raise SystemExit(f"--out {out}: name the model file with .onnx (its metrics go beside it as <name>.metrics.json)")
    path = os.path.abspath(out)
    return os.path.dirname(path), os.path.basename(path)[: -len(".onnx")]


def resolve_yaml(data):
    """`--data` as a data.yaml or a folder holding one -> (folder, yaml path); (folder, None) when there is none."""
    if data.endswith((".yaml", ".yml")):
        if not os.path.exists(data):
            raise SystemExit(f"{data}: no such file; --data takes a data.yaml (or the folder that holds it)")
        return os.path.dirname(os.path.abspath(data)), os.path.abspath(data)
    y = os.path.join(data, "data.yaml")
    return data, (y if os.path.exists(y) else None)


def _images_under(p):
    if os.path.isfile(p) and p.endswith(".txt"):  # Ultralytics also takes a list of image paths
        base = os.path.dirname(p)
        return [ln if os.path.isabs(ln) else os.path.join(base, ln)
                for ln in (x.strip() for x in open(p)) if ln]
    out = []
    for d, _, files in os.walk(p):
        out += [os.path.join(d, f) for f in files if f.lower().endswith(IMAGE_EXT)]
    return sorted(out)


def _read_yaml(data_yaml):
    import yaml
    d = yaml.safe_load(open(data_yaml))
    base = os.path.dirname(os.path.abspath(data_yaml))
    root = d.get("path") or base
    return d, (root if os.path.isabs(root) else os.path.join(base, root))


def yaml_images(data_yaml, split):
    """The image files of one split of a data.yaml (a folder, a list file, or a list of them)."""
    d, root = _read_yaml(data_yaml)
    imgs = []
    for p in (d[split] if isinstance(d[split], list) else [d[split]]):
        imgs += _images_under(p if os.path.isabs(p) else os.path.join(root, p))
    return imgs


def yaml_stats(data_yaml):
    """What a user's data.yaml holds per split (images, labelled instances per class, images without
    a label), in the shape of the synthetic sets' stats.json (seeds None: not generated here)."""
    d, _ = _read_yaml(data_yaml)
    names = d.get("names") or {}
    names = dict(enumerate(names)) if isinstance(names, list) else {int(k): v for k, v in names.items()}
    stats = {}
    for split in ("train", "val", "test"):
        if not d.get(split):
            continue
        imgs = yaml_images(data_yaml, split)
        if not imgs:
            raise SystemExit(f"{data_yaml}: split `{split}` ({d[split]}) has no images")
        inst = {v: 0 for v in names.values()}
        empty = 0
        for im in imgs:
            i = im.rfind(os.sep + "images" + os.sep)
            lab = (im[:i] + os.sep + "labels" + os.sep + im[i + 8:]) if i >= 0 else im
            lab = os.path.splitext(lab)[0] + ".txt"
            lines = [ln.split() for ln in open(lab)] if os.path.exists(lab) else []
            lines = [ln for ln in lines if ln]
            empty += not lines
            for ln in lines:
                k = names.get(int(float(ln[0])), ln[0])
                inst[k] = inst.get(k, 0) + 1
        stats[split] = {"seed": None, "images": len(imgs), "empty_images": empty, "instances": inst}
    for split in ("train", "val"):
        if split not in stats:
            raise SystemExit(f"{data_yaml}: no `{split}:` split; Ultralytics needs train and val")
    stats["source"] = os.path.abspath(data_yaml)
    return stats


def split_imagefolder(src, dst, val_frac=0.2, seed=0):
    """A flat ImageFolder (`good/` + one folder per defect) -> `dst/train/<class>/` and
    `dst/val/<class>/` (symlinks), per class a seeded shuffle with `val_frac` to val, as
    Ultralytics' classifier wants it. Returns the counts per split and class."""
    import random
    import shutil
    classes = sorted(c for c in os.listdir(src) if os.path.isdir(os.path.join(src, c)) and not c.startswith("."))
    if "good" not in classes or len(classes) < 2:
        raise SystemExit(f"{src}: expected `good/` and at least one defect folder (an ImageFolder)")
    if os.path.isdir(dst):
        shutil.rmtree(dst)
    rng = random.Random(seed)
    counts = {"train": {}, "val": {}}
    for c in classes:
        files = sorted(f for f in os.listdir(os.path.join(src, c)) if f.lower().endswith(IMAGE_EXT))
        if len(files) < 2:
            raise SystemExit(f"{os.path.join(src, c)}: {len(files)} image(s); a class needs at least 2 (one to validate on)")
        rng.shuffle(files)
        n_val = min(max(1, round(len(files) * val_frac)), len(files) - 1)
        for split, part in (("val", files[:n_val]), ("train", files[n_val:])):
            os.makedirs(os.path.join(dst, split, c), exist_ok=True)
            for f in part:
                os.symlink(os.path.abspath(os.path.join(src, c, f)), os.path.join(dst, split, c, f))
            counts[split][c] = len(part)
    return counts


def seed_or_source(stats, split):
    """How a split was made: its seed (synthetic) or the data.yaml it came from."""
    seed = stats[split]["seed"]
    return "seed %d" % seed if seed is not None else stats.get("source", "your data.yaml")


def split_note(stats, split):
    """What the held-out figures were measured on, said in the metrics."""
    if split == "test":
        return "held-out test (%s), never used for training or choices" % seed_or_source(stats, "test")
    return ("no test split in %s: measured on val, which also picked best.pt (optimistic); give the data "
            "set a `test:` split for held-out figures" % stats.get("source", "the data.yaml"))
