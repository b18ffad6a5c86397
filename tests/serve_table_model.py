"""A table model in milliseconds, no pipeline run, for the serving and batch-scoring tests.

An ONNX graph with contract 4's inputs (one [-1, 1] input per column: FP32 with NaN for missing,
string with "" for missing), the spec's preprocessing inside (fill, standardize; LabelEncoder
and one-hot with a slot for unseen values), then a MatMul and a Softmax; its card per contract 5
with a spec per kinds/table/values.py. `reference()` computes the same probabilities in NumPy,
so tests check the served numbers, not only their shape.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from mlproject.kinds.table.values import category_value, encoded_width, slices

CLASSES = ["Europe", "Japan", "USA"]
SPEC = {
    "kind": "table",
    "task": "classification",
    "target": "Origin",
    "columns": [
        {
            "name": "Horsepower",
            "type": "numeric",
            "datatype": "FP32",
            "fill": 93.5,
            "mean": 104.5,
            "std": 38.5,
            "min": 46.0,
            "max": 230.0,
            "missing_rate": 0.015,
        },
        {
            "name": "Cylinders",
            "type": "categorical",
            "datatype": "BYTES",
            "categories": ["3", "4", "5", "6", "8"],
            "missing_rate": 0.0,
        },
        {
            "name": "Weight_in_lbs",
            "type": "numeric",
            "datatype": "FP32",
            "fill": 2800.0,
            "mean": 2979.0,
            "std": 847.0,
            "min": 1613.0,
            "max": 5140.0,
            "missing_rate": 0.0,
        },
        {
            "name": "Maker",
            "type": "categorical",
            "datatype": "BYTES",
            "categories": ["", "ford", "toyota", "vw"],
            "missing_rate": 0.01,
        },
    ],
}
SPEC["encoded_width"] = encoded_width(SPEC)
WEIGHTS = np.random.default_rng(3).standard_normal((SPEC["encoded_width"], 3)).astype(np.float32)
BIAS = np.array([0.1, -0.2, 0.3], dtype=np.float32)


def build(directory: Path, name: str = "cars-table") -> tuple[Path, Path]:
    """(model.onnx, model_card.json) in directory."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, inputs, parts = [], [], [], []
    for c in SPEC["columns"]:
        n = c["name"]
        if c["type"] == "numeric":
            inputs.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 1]))
            inits += [
                numpy_helper.from_array(np.array([c["fill"]], np.float32), f"{n}_fill"),
                numpy_helper.from_array(np.array([c["mean"]], np.float32), f"{n}_mean"),
                numpy_helper.from_array(np.array([c["std"]], np.float32), f"{n}_std"),
            ]
            nodes += [
                helper.make_node("IsNaN", [n], [f"{n}_nan"]),
                helper.make_node("Where", [f"{n}_nan", f"{n}_fill", n], [f"{n}_filled"]),
                helper.make_node("Sub", [f"{n}_filled", f"{n}_mean"], [f"{n}_centered"]),
                helper.make_node("Div", [f"{n}_centered", f"{n}_std"], [f"{n}_enc"]),
            ]
        else:
            cats = c["categories"]
            inputs.append(helper.make_tensor_value_info(n, TensorProto.STRING, ["N", 1]))
            inits += [
                numpy_helper.from_array(np.array(len(cats) + 1, np.int64), f"{n}_depth"),
                numpy_helper.from_array(np.array([0.0, 1.0], np.float32), f"{n}_onoff"),
            ]
            nodes += [
                helper.make_node(
                    "LabelEncoder",
                    [n],
                    [f"{n}_index"],
                    domain="ai.onnx.ml",
                    keys_strings=cats,
                    values_int64s=list(range(len(cats))),
                    default_int64=len(cats),
                ),
                helper.make_node(
                    "OneHot", [f"{n}_index", f"{n}_depth", f"{n}_onoff"], [f"{n}_hot"], axis=-1
                ),
                helper.make_node("Flatten", [f"{n}_hot"], [f"{n}_enc"], axis=1),
            ]
        parts.append(f"{n}_enc")
    inits += [numpy_helper.from_array(WEIGHTS, "weights"), numpy_helper.from_array(BIAS, "bias")]
    nodes += [
        helper.make_node("Concat", parts, ["encoded"], axis=1),
        helper.make_node("MatMul", ["encoded", "weights"], ["scores"]),
        helper.make_node("Add", ["scores", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        inputs,
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3]),
        ],
        inits,
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 2)],
        ir_version=8,
    )
    onnx.checker.check_model(proto)
    blob = proto.SerializeToString()
    directory.mkdir(parents=True, exist_ok=True)
    model, card = directory / "model.onnx", directory / "model_card.json"
    model.write_bytes(blob)
    card_input = {
        **SPEC,
        "inputs": [
            {"name": c["name"], "datatype": c["datatype"], "shape": [-1, 1]}
            for c in SPEC["columns"]
        ],
    }
    outputs = [
        {"name": "logits", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
    ]
    card.write_text(
        json.dumps(
            {
                "name": name,
                "sha256": hashlib.sha256(blob).hexdigest(),
                "classes": CLASSES,
                "input": card_input,
                "output": outputs[0],
                "outputs": outputs,
            }
        )
    )
    return model, card


def reference(rows: list[dict]) -> np.ndarray:
    """Class probabilities of raw rows (None or NaN: missing), computed as the graph does."""
    where = slices(SPEC)
    x = np.zeros((len(rows), SPEC["encoded_width"]), dtype=np.float64)
    for i, row in enumerate(rows):
        for c in SPEC["columns"]:
            start, stop = where[c["name"]]
            v = row[c["name"]]
            if c["type"] == "numeric":
                v = c["fill"] if v is None or (isinstance(v, float) and math.isnan(v)) else v
                x[i, start] = (float(np.float32(v)) - c["mean"]) / c["std"]
            else:
                cats = c["categories"]
                s = category_value(v)
                x[i, start + (cats.index(s) if s in cats else len(cats))] = 1.0
    logits = x @ WEIGHTS.astype(np.float64) + BIAS
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


ROWS = [
    {"Horsepower": 130.0, "Cylinders": 8, "Weight_in_lbs": 3504.0, "Maker": "ford"},
    {"Horsepower": None, "Cylinders": 4, "Weight_in_lbs": 2046.0, "Maker": "vw"},  # missing
    {"Horsepower": 88.0, "Cylinders": "7", "Weight_in_lbs": 2130.0, "Maker": "saab"},  # unseen
    {"Horsepower": 95.0, "Cylinders": 4, "Weight_in_lbs": 2372.0, "Maker": None},  # missing
]
