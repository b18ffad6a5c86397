"""A table's preprocessing: fitted on the training split, applied in NumPy for training and
inside the exported ONNX graph for serving, with the same float32 arithmetic in both.

`fit` learns the spec (values.py documents it); `encode` turns a frame of raw columns into the
model's float32 input [N, encoded_width]; `feed` turns it into what the ONNX graph takes (one
[N, 1] array per column); `export` writes one ONNX file that does `encode` and then the model.
A numeric slot is (x, or fill when NaN, - mean) / std computed in float32, as ONNX's
Where/Sub/Div do; a categorical block is one-hot over the training categories plus a last slot
for anything unseen.
"""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...core.io import atomic_path
from ...pipeline.data import DataError
from .values import CATEGORICAL, MISSING_CATEGORY, NUMERIC, category_value, encoded_width, slices

ENCODED = "encoded"  # the preprocessing graph's output, the torch graph's input
ML_OPSET = 3  # ai.onnx.ml: LabelEncoder-2 (string keys, int64 values, a default)


# ---------------------------------------------------------------------------- fitting


def fit(
    train_df: pd.DataFrame, numeric: list[str], categorical: list[str], target: str, task: str
) -> dict[str, Any]:
    """The spec fitted on the training split: per numeric column its median fill, mean and std
    after filling, min, max and missing rate; per categorical column its sorted categories
    (the empty string among them when a training value was missing)."""
    columns = []
    # Numeric columns side by side on a thread per CPU: the median's partition and the sums
    # release the GIL (a million-row fit spends most of its time there).
    names = [n for n in train_df.columns if n in numeric]
    with ThreadPoolExecutor(max(1, min(len(names), os.cpu_count() or 1))) as pool:
        stats = dict(
            zip(names, pool.map(lambda n: _numeric_stats(numbers(train_df[n])), names), strict=True)
        )
    for name in train_df.columns:
        if name in numeric:
            columns.append({"name": name, "type": NUMERIC, "datatype": "FP32", **stats[name]})
        elif name in categorical:
            codes, uniques = _factorize(train_df[name])
            spelled = {category_value(u) for u in uniques}
            if (codes < 0).any():
                spelled.add(MISSING_CATEGORY)
            missing = (codes < 0).sum() + sum(
                int((codes == i).sum()) for i, u in enumerate(uniques) if category_value(u) == ""
            )
            columns.append(
                {
                    "name": name,
                    "type": CATEGORICAL,
                    "datatype": "BYTES",
                    "categories": sorted(spelled),
                    "missing_rate": float(missing / len(codes)) if len(codes) else 0.0,
                }
            )
    absent = [n for n in [*numeric, *categorical] if n not in train_df.columns]
    if absent:
        raise DataError(f"fit: columns {absent} are not in the training frame.")
    spec = {"kind": "table", "task": task, "target": target, "columns": columns}
    spec["encoded_width"] = encoded_width(spec)
    return spec


def _numeric_stats(values: np.ndarray) -> dict[str, Any]:
    """fill (median of the seen values), mean and std of the filled column, min, max and the
    missing rate; the filled column's moments come from the seen values and the fill count
    (no filled copy: prepare fits a million rows)."""
    missing = np.isnan(values)
    seen = values[~missing]
    n, k = len(values), int(missing.sum())
    if not len(seen):
        return {
            "fill": 0.0,
            "mean": 0.0,
            "std": 1.0,
            "min": None,
            "max": None,
            "missing_rate": 1.0 if n else 0.0,
        }
    low, high = float(seen.min()), float(seen.max())  # before the median reorders seen
    fill = float(np.median(seen, overwrite_input=True))
    mean = (float(seen.sum()) + k * fill) / n
    square = float(np.square(seen - mean).sum()) + k * (fill - mean) ** 2
    return {
        "fill": fill,
        "mean": mean,
        "std": max(float(np.sqrt(square / n)), 1e-6),
        "min": low,
        "max": high,
        "missing_rate": k / n,
    }


# ---------------------------------------------------------------------------- applying


def numbers(series: pd.Series) -> np.ndarray:
    """float64 with NaN for missing (no copy when it already is)."""
    if series.dtype == np.float64:
        return series.to_numpy()
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def _factorize(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    return codes, np.asarray(uniques, dtype=object)


def category_slots(series: pd.Series, categories: list[str]) -> np.ndarray:
    """Each value's index in categories; missing is "" and anything unseen is len(categories)."""
    unseen = len(categories)
    index = {c: i for i, c in enumerate(categories)}
    codes, uniques = _factorize(series)
    lookup = np.array(
        [index.get(category_value(u), unseen) for u in uniques]
        + [index.get(MISSING_CATEGORY, unseen)],
        dtype=np.int64,
    )
    return lookup[codes]  # code -1 (missing) takes the last entry


def _scaled(values: np.ndarray, column: dict[str, Any]) -> np.ndarray:
    """float32 (x or fill - mean) / std, operation for operation as the ONNX graph."""
    x = values.astype(np.float32)
    x = np.where(np.isnan(x), np.float32(column["fill"]), x)
    return (x - np.float32(column["mean"])) / np.float32(column["std"])


def compact(df: pd.DataFrame, spec: dict[str, Any]) -> np.ndarray:
    """float32 [N, columns]: numeric columns scaled, categorical ones as their slot index
    (exact in float32 below 2^24 categories); `expand` makes the encoded input of it."""
    out = np.empty((len(df), len(spec["columns"])), dtype=np.float32)
    for j, column in enumerate(spec["columns"]):
        series = _column(df, column["name"])
        if column["type"] == NUMERIC:
            out[:, j] = _scaled(numbers(series), column)
        else:
            out[:, j] = category_slots(series, column["categories"])
    return out


def expand(packed: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """The encoded input float32 [N, encoded_width] of `compact`'s output."""
    n = len(packed)
    out = np.zeros((n, spec["encoded_width"]), dtype=np.float32)
    rows = np.arange(n)
    for j, (column, (start, _)) in enumerate(
        zip(spec["columns"], slices(spec).values(), strict=True)
    ):
        if column["type"] == NUMERIC:
            out[:, start] = packed[:, j]
        else:
            out[rows, start + packed[:, j].astype(np.int64)] = 1.0
    return out


def encode(df: pd.DataFrame, spec: dict[str, Any]) -> np.ndarray:
    """The model's input float32 [N, encoded_width] of a frame of raw columns."""
    return expand(compact(df, spec), spec)


def labels(df: pd.DataFrame, meta: dict[str, Any]) -> np.ndarray:
    """Class indices int64 [N] of the target column (classification), float32 values
    (regression)."""
    target = meta["target"]
    series = _column(df, target)
    if meta.get("task", "classification") == "regression":
        return numbers(series).astype(np.float32)
    classes = list(meta["classes"])
    slots = category_slots(series, classes)
    unknown = np.flatnonzero(slots == len(classes))
    if len(unknown):
        value = series.iloc[int(unknown[0])]
        raise DataError(
            f"target {target!r}: value {value!r} (row {int(unknown[0]) + 1}) is not one of the "
            f"classes {classes}; prepare the data again."
        )
    return slots


def feed(df: pd.DataFrame, spec: dict[str, Any]) -> dict[str, np.ndarray]:
    """The ONNX graph's inputs: one [N, 1] array per column, float32 with NaN for missing
    numbers, strings ("" for missing) for categories."""
    out = {}
    for column in spec["columns"]:
        series = _column(df, column["name"])
        if column["type"] == NUMERIC:
            out[column["name"]] = numbers(series).astype(np.float32).reshape(-1, 1)
        else:
            codes, uniques = _factorize(series)
            spelled = np.array([category_value(u) for u in uniques] + [MISSING_CATEGORY], object)
            out[column["name"]] = spelled[codes].reshape(-1, 1)
    return out


def _column(df: pd.DataFrame, name: str) -> pd.Series:
    if name not in df.columns:
        raise DataError(f"column {name!r} is missing; the frame has {list(df.columns)}.")
    return df[name]


# ---------------------------------------------------------------------------- ONNX


def preprocessing_graph(spec: dict[str, Any], opset: int, ir_version: int):
    """The ONNX model: one raw [N, 1] input per column -> ENCODED float32 [N, encoded_width]."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, inputs, blocks, layout = [], [], [], [], []
    numeric = [c for c in spec["columns"] if c["type"] == NUMERIC]
    for column in spec["columns"]:
        kind = TensorProto.FLOAT if column["type"] == NUMERIC else TensorProto.STRING
        inputs.append(helper.make_tensor_value_info(column["name"], kind, ["batch", 1]))
    place = slices(spec)
    if numeric:

        def const(name: str, values: list[float]) -> str:
            inits.append(numpy_helper.from_array(np.array(values, np.float32), f"pre/{name}"))
            return f"pre/{name}"

        fill = const("fill", [c["fill"] for c in numeric])
        mean = const("mean", [c["mean"] for c in numeric])
        std = const("std", [c["std"] for c in numeric])
        nodes += [
            helper.make_node("Concat", [c["name"] for c in numeric], ["pre/raw"], axis=1),
            helper.make_node("IsNaN", ["pre/raw"], ["pre/nan"]),
            helper.make_node("Where", ["pre/nan", fill, "pre/raw"], ["pre/filled"]),
            helper.make_node("Sub", ["pre/filled", mean], ["pre/centered"]),
            helper.make_node("Div", ["pre/centered", std], ["pre/numeric"]),
        ]
        blocks.append("pre/numeric")
        layout += [place[c["name"]][0] for c in numeric]
    for i, column in enumerate(c for c in spec["columns"] if c["type"] == CATEGORICAL):
        k = len(column["categories"])
        eye = f"pre/eye{i}"
        inits.append(numpy_helper.from_array(np.eye(k + 1, dtype=np.float32), eye))
        nodes += [
            helper.make_node(
                "LabelEncoder",
                [column["name"]],
                [f"pre/slot{i}"],
                domain="ai.onnx.ml",
                keys_strings=list(column["categories"]),
                values_int64s=list(range(k)),
                default_int64=k,
            ),
            helper.make_node("Gather", [eye, f"pre/slot{i}"], [f"pre/hot{i}"], axis=0),
            helper.make_node("Flatten", [f"pre/hot{i}"], [f"pre/block{i}"], axis=1),
        ]
        blocks.append(f"pre/block{i}")
        start, stop = place[column["name"]]
        layout += list(range(start, stop))
    # layout[j] = where slot j of the concatenated blocks belongs; Gather puts it there.
    order = np.argsort(np.array(layout, dtype=np.int64))
    if (order == np.arange(len(order))).all():
        nodes.append(helper.make_node("Concat", blocks, [ENCODED], axis=1))
    else:
        inits.append(numpy_helper.from_array(order.astype(np.int64), "pre/order"))
        nodes += [
            helper.make_node("Concat", blocks, ["pre/blocks"], axis=1),
            helper.make_node("Gather", ["pre/blocks", "pre/order"], [ENCODED], axis=1),
        ]
    output = helper.make_tensor_value_info(
        ENCODED, TensorProto.FLOAT, ["batch", spec["encoded_width"]]
    )
    graph = helper.make_graph(nodes, "table_preprocessing", inputs, [output], inits)
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
        ir_version=ir_version,
    )


def export(model: Any, spec: dict[str, Any], path: str | Path, opset: int) -> None:
    """Write one self-contained ONNX file to path (atomically): the raw columns of contract 4
    in, the spec's preprocessing, then `model` (float32 [N, encoded_width] -> logits,
    probabilities), exported by torch's dynamo exporter as the images' graph is."""
    import onnx
    import torch

    from ...pipeline.onnx_io import INPUT_NAME, export_onnx

    clash = {INPUT_NAME, ENCODED, "logits", "probabilities"} & {c["name"] for c in spec["columns"]}
    if clash:
        raise DataError(
            f"columns {sorted(clash)} share a name with the model's tensors; rename them."
        )
    example = torch.zeros(2, spec["encoded_width"])
    with tempfile.TemporaryDirectory() as scratch:
        network = Path(scratch) / "network.onnx"
        export_onnx(model, example, network, opset)  # also make_portable
        net = onnx.load(str(network))
    default = next(o.version for o in net.opset_import if o.domain in ("", "ai.onnx"))
    pre = preprocessing_graph(spec, default, net.ir_version)
    merged = onnx.compose.merge_models(pre, net, io_map=[(ENCODED, INPUT_NAME)])
    merged.producer_name, merged.producer_version = net.producer_name, net.producer_version
    merged.graph.name = net.graph.name or "model"
    unique = {(o.domain or "", o.version): o for o in merged.opset_import}
    del merged.opset_import[:]  # merge_models lists the default domain once per graph
    merged.opset_import.extend(unique.values())
    with atomic_path(path) as tmp:
        onnx.save(merged, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
