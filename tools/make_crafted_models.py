#!/usr/bin/env python3
"""Crafted (hostile) ONNX files for the tests: tiny graphs whose outputs have shapes that no real
export has, with the metadata that sends them to a given adapter. linesight must refuse each one at
load with a clear error, never panic (tests/it/crafted_models.rs).

Needs only the `onnx` package (onnx.helper): `pip install onnx==1.23.2` in any venv, then

    python3 tools/make_crafted_models.py            # writes models/test/*

The files are deterministic (no random weights): rerunning gives the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).resolve().parent.parent / "models" / "test"
OPSET = 17
IR_VERSION = 8


def const_from_input(name: str, values: np.ndarray, src: str) -> list[onnx.NodeProto]:
    """`name` = values + 0 * sum(src): a constant output that still depends on the input."""
    return [
        helper.make_node("ReduceSum", [src], [f"{name}_sum"], keepdims=0),
        helper.make_node("Constant", [], [f"{name}_zero"], value=numpy_helper.from_array(np.array(0.0, np.float32))),
        helper.make_node("Mul", [f"{name}_sum", f"{name}_zero"], [f"{name}_nil"]),
        helper.make_node("Constant", [], [f"{name}_value"], value=numpy_helper.from_array(values.astype(np.float32))),
        helper.make_node("Add", [f"{name}_value", f"{name}_nil"], [name]),
    ]


def save(model: onnx.ModelProto, name: str) -> None:
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    path = OUT / name
    onnx.save(model, path)
    print(f"wrote {path.relative_to(OUT.parent.parent)} ({path.stat().st_size} bytes)")


def segment_nms_small_k() -> None:
    """An Ultralytics `segment` export that says end2end (nms=True) with a [1, 2, 6] output: the
    rows hold no mask coefficients (a real one is [N, 300, 6 + 32]); the decoder read the
    coefficients at raw-export offsets and indexed far past the 12 values."""
    det = np.zeros((1, 2, 6), np.float32)
    det[0, 0] = [4.0, 4.0, 20.0, 20.0, 0.9, 0.0]  # one confident box of class 0
    protos = np.ones((1, 32, 8, 8), np.float32)
    graph = helper.make_graph(
        const_from_input("output0", det, "images") + const_from_input("output1", protos, "images"),
        "crafted_segment_nms_small_k",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
        [
            helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 2, 6]),
            helper.make_tensor_value_info("output1", TensorProto.FLOAT, [1, 32, 8, 8]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    meta = {
        "description": "crafted by tools/make_crafted_models.py (not a real export)",
        "task": "segment",
        "names": "{0: 'scratch'}",
        "imgsz": "[32, 32]",
        "stride": "32",
        "end2end": "True",
        "args": "{'batch': 1, 'nms': True}",
    }
    helper.set_model_props(model, meta)
    save(model, "segment-nms-k2.onnx")


def anomaly_flat_map() -> None:
    """An anomalib-style export whose `anomaly_map` is one value per frame ([1]) instead of
    [N, 1, h, w]: the adapter read the map's height and width at shape[len - 2]."""
    graph = helper.make_graph(
        const_from_input("pred_score", np.array([0.2], np.float32), "input")
        + const_from_input("anomaly_map", np.array([0.2], np.float32), "input"),
        "crafted_anomaly_flat_map",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
        [
            helper.make_tensor_value_info("pred_score", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    save(model, "anomaly-flat-map.onnx")
    sidecar = {"kind": "anomaly", "input": {"width": 32, "height": 32}, "threshold": 0.5}
    (OUT / "anomaly-flat-map.onnx.json").write_text(json.dumps(sidecar, indent=2) + "\n")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    segment_nms_small_k()
    anomaly_flat_map()


if __name__ == "__main__":
    main()
