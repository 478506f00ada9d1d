"""Make tests/models/slow-classifier.onnx: a linesight classifier whose inference does not return
in any useful time on a real part, for the watchdog test (tests/it/watchdog.rs).

    pip install onnx==1.17.0     # only this script needs it
    python tools/make_slow_model.py

Contract: input `images` [1,3,128,128] (the committed classifier's normalisation: a pixel of 255
becomes 2.0, the warm-up's blank grey frame of 128 about 0.0), output `scores` [1,2] logits for
`good`, `bad`. The graph loops `2e9 * (max(input) > 1.0)` times: the blank frame linesight warms up
on runs no loop (so the model loads and READY comes), a real camera frame with any pixel above 191
runs two billion iterations of an Add (tens of minutes on a CPU) - an inference that hangs.
"""
import json
from pathlib import Path

import onnx
from onnx import TensorProto, helper

OUT = Path(__file__).resolve().parent.parent / "tests" / "models" / "slow-classifier.onnx"

body = helper.make_graph(
    [
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        helper.make_node("Add", ["v_in", "one"], ["v_out"]),
    ],
    "spin",
    [
        helper.make_tensor_value_info("i", TensorProto.INT64, []),
        helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
        helper.make_tensor_value_info("v_in", TensorProto.FLOAT, []),
    ],
    [
        helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
        helper.make_tensor_value_info("v_out", TensorProto.FLOAT, []),
    ],
    [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])],
)

nodes = [
    helper.make_node("ReduceMax", ["images"], ["peak"], keepdims=0),
    helper.make_node("Greater", ["peak", "bright"], ["is_bright"]),
    helper.make_node("Cast", ["is_bright"], ["bright_i"], to=TensorProto.INT64),
    helper.make_node("Mul", ["bright_i", "spins"], ["trips"]),
    helper.make_node("Loop", ["trips", "true", "zero"], ["spun"], body=body),
    helper.make_node("Mul", ["spun", "zero"], ["nothing"]),
    helper.make_node("Add", ["nothing", "logits_ok"], ["scores"]),
]
graph = helper.make_graph(
    nodes,
    "slow-classifier",
    [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 128, 128])],
    [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2])],
    [
        helper.make_tensor("bright", TensorProto.FLOAT, [], [1.0]),
        helper.make_tensor("spins", TensorProto.INT64, [], [2_000_000_000]),
        helper.make_tensor("true", TensorProto.BOOL, [], [True]),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("logits_ok", TensorProto.FLOAT, [1, 2], [4.0, -4.0]),
    ],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="linesight tools")
model.ir_version = 8
onnx.checker.check_model(model)
OUT.parent.mkdir(parents=True, exist_ok=True)
onnx.save(model, OUT)
contract = {
    "kind": "classifier",
    "name": "slow-classifier",
    "version": "1",
    "input": {
        "name": "images", "width": 128, "height": 128, "channel_order": "rgb",
        "scale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "resize": "bilinear",
    },
    "output": {"name": "scores", "activation": "logits"},
    "classes": ["good", "bad"],
    "ok_classes": ["good"],
    "ng_threshold": 0.5,
}
Path(str(OUT) + ".json").write_text(json.dumps(contract, indent=2) + "\n")
print(f"wrote {OUT} ({OUT.stat().st_size} bytes) and its contract")
