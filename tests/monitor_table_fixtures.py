"""A small table model made in the test, until the pipeline trains real ones: Parquet splits
per contract 3, an ONNX graph with contract 4's inputs (one [-1, 1] input per raw column, FP32
with NaN or string with "", imputation, scaling and one-hot with an unseen bucket inside, then
MatMul and Softmax) and a card per contract 5. The labels are the model's own decisions on
clean rows, so the model is exact on its test split and every column's role is known:
`x` and `color` decide most, `y` a little, `noise` nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlproject import kinds
from mlproject.kinds.base import DataKind

CLASSES = ["a", "b", "c"]
TARGET = "label"
CATEGORIES = ["blue", "green", "red"]
# Rows of the weight matrix: x, y, noise, color=blue, green, red, (unseen).
WEIGHTS = np.array(
    [
        [3.0, -3.0, 0.0],
        [0.0, 0.0, 0.8],
        [0.0, 0.0, 0.0],
        [1.5, 0.0, 0.0],
        [0.0, 1.5, 0.0],
        [0.0, 0.0, 2.5],
        [0.0, 0.0, 0.0],
    ],
    dtype=np.float32,
)
BIAS = np.array([0.0, 0.0, -1.0], dtype=np.float32)


def spec_for(train: pd.DataFrame) -> dict:
    """The table spec (kinds/table/values.py) fitted on the training rows."""
    columns = []
    for name in ("x", "y", "noise"):
        values = train[name].to_numpy(dtype=np.float64)
        present = values[~np.isnan(values)]
        fill = float(np.median(present))
        filled = np.where(np.isnan(values), fill, values)
        columns.append(
            {
                "name": name,
                "type": "numeric",
                "datatype": "FP32",
                "fill": fill,
                "mean": float(filled.mean()),
                "std": max(float(filled.std()), 1e-6),
                "min": float(present.min()),
                "max": float(present.max()),
                "missing_rate": float(np.isnan(values).mean()),
            }
        )
    columns.append(
        {
            "name": "color",
            "type": "categorical",
            "datatype": "BYTES",
            "categories": CATEGORIES,
            "missing_rate": float(train["color"].isna().mean()),
        }
    )
    return {
        "kind": "table",
        "task": "classification",
        "target": TARGET,
        "columns": columns,
        "encoded_width": 7,
    }


def encode(spec: dict, frame: pd.DataFrame) -> np.ndarray:
    """The spec's encoding in NumPy (what the ONNX graph does inside)."""
    parts = []
    for column in spec["columns"]:
        if column["type"] == "numeric":
            v = frame[column["name"]].to_numpy(dtype=np.float64)
            v = np.where(np.isnan(v), column["fill"], v)
            parts.append(((v - column["mean"]) / column["std"])[:, None])
        else:
            index = {c: i for i, c in enumerate(column["categories"])}
            k = len(column["categories"])
            codes = [index.get(v, k) if isinstance(v, str) else k for v in frame[column["name"]]]
            parts.append(np.eye(k + 1)[codes])
    return np.concatenate(parts, axis=1).astype(np.float32)


def rows(
    seed: int,
    n: int,
    shift: float = 0.0,
    new_share: float = 0.0,
    y_missing: float = 0.02,
) -> pd.DataFrame:
    """Rows of the demo distribution; `shift` moves x, `new_share` of colors become "purple",
    `y_missing` of y is missing. No label (see `labelled`)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, n) + shift
    x[rng.random(n) < 0.05] = np.nan
    y = rng.normal(5.0, 2.0, n)
    y[rng.random(n) < y_missing] = np.nan
    color = rng.choice(CATEGORIES, n, p=[0.5, 0.3, 0.2]).astype(object)
    color[rng.random(n) < 0.02] = None
    color[rng.random(n) < new_share] = "purple"
    return pd.DataFrame(
        {
            "x": x,
            "y": y,
            "noise": rng.normal(0.0, 1.0, n),
            "color": pd.array(color, dtype="str"),
        }
    )


def labelled(spec: dict, frame: pd.DataFrame) -> pd.DataFrame:
    logits = encode(spec, frame) @ WEIGHTS + BIAS
    return frame.assign(**{TARGET: [CLASSES[i] for i in logits.argmax(axis=1)]})


def build_onnx(spec: dict, path: Path) -> None:
    """Contract 4: per-column inputs, preprocessing inside, logits and probabilities out."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, inputs, encoded = [], [], [], []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    for column in spec["columns"]:
        name = column["name"]
        if column["type"] == "numeric":
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, 1]))
            fill = const(f"{name}_fill", np.array([column["fill"]], dtype=np.float32))
            mean = const(f"{name}_mean", np.array([column["mean"]], dtype=np.float32))
            std = const(f"{name}_std", np.array([column["std"]], dtype=np.float32))
            nodes += [
                helper.make_node("IsNaN", [name], [f"{name}_nan"]),
                helper.make_node("Where", [f"{name}_nan", fill, name], [f"{name}_filled"]),
                helper.make_node("Sub", [f"{name}_filled", mean], [f"{name}_centred"]),
                helper.make_node("Div", [f"{name}_centred", std], [f"{name}_enc"]),
            ]
        else:
            inputs.append(helper.make_tensor_value_info(name, TensorProto.STRING, [None, 1]))
            k = len(column["categories"])
            nodes += [
                helper.make_node(
                    "LabelEncoder",
                    [name],
                    [f"{name}_code"],
                    domain="ai.onnx.ml",
                    keys_strings=list(column["categories"]),
                    values_int64s=list(range(k)),
                    default_int64=k,
                ),
                helper.make_node(
                    "OneHot",
                    [
                        f"{name}_code",
                        const(f"{name}_depth", np.array([k + 1], dtype=np.int64)),
                        const(f"{name}_onoff", np.array([0.0, 1.0], dtype=np.float32)),
                    ],
                    [f"{name}_hot"],
                    axis=-1,
                ),
                helper.make_node(
                    "Reshape",
                    [f"{name}_hot", const(f"{name}_shape", np.array([-1, k + 1], dtype=np.int64))],
                    [f"{name}_enc"],
                ),
            ]
        encoded.append(f"{name}_enc")
    nodes += [
        helper.make_node("Concat", encoded, ["encoded"], axis=1),
        helper.make_node("MatMul", ["encoded", const("W", WEIGHTS)], ["scores"]),
        helper.make_node("Add", ["scores", const("b", BIAS)], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    outputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, len(CLASSES)])
        for n in ("logits", "probabilities")
    ]
    graph = helper.make_graph(nodes, "table", inputs, outputs, inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("ai.onnx.ml", 3)],
        producer_name="test",
    )
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())


def card_for(spec: dict, onnx_path: Path) -> dict:
    import hashlib

    inputs = [
        {"name": c["name"], "datatype": c["datatype"], "shape": [-1, 1]} for c in spec["columns"]
    ]
    return {
        "name": "table-test",
        "format": "onnx",
        "file": onnx_path.name,
        "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "classes": CLASSES,
        "input": {**spec, "inputs": inputs},
        "output": {"name": "logits", "datatype": "FP32", "shape": [-1, len(CLASSES)]},
        "outputs": [
            {"name": n, "datatype": "FP32", "shape": [-1, len(CLASSES)]}
            for n in ("logits", "probabilities")
        ],
    }


def write_project(root: Path) -> dict:
    """outputs/prepared/ (contract 3), models/model.onnx and models/model_card.json under
    root; returns the spec, card, frames and paths."""
    train = rows(0, 800)
    spec = spec_for(train)
    splits = {"train": train, "val": rows(1, 200), "test": rows(2, 300)}
    prepared = root / "outputs" / "prepared"
    prepared.mkdir(parents=True, exist_ok=True)
    counts, sizes = {}, {}
    for split, frame in splits.items():
        frame = labelled(spec, frame)
        splits[split] = frame
        frame.to_parquet(prepared / f"{split}.parquet", index=False)
        counts[split] = frame[TARGET].value_counts().sort_index().to_dict()
        sizes[split] = len(frame)
    meta = {
        "kind": "table",
        "task": "classification",
        "target": TARGET,
        "classes": CLASSES,
        "input": spec,
        "counts": counts,
        "rows": sizes,
        "dropped": {"missing_target": 0, "duplicates": 0},
        "leakage": {"duplicate_rows_across_splits": 0},
    }
    (prepared / "meta.json").write_text(json.dumps(meta, indent=2))
    onnx_path = root / "models" / "model.onnx"
    build_onnx(spec, onnx_path)
    card = card_for(spec, onnx_path)
    (root / "models" / "model_card.json").write_text(json.dumps(card, indent=2))
    return {
        "spec": spec,
        "card": card,
        "splits": splits,
        "prepared": prepared,
        "onnx": onnx_path,
        "card_path": root / "models" / "model_card.json",
    }


class Model:
    """`predict(frame) -> class indices` on the raw-column feed, as the lead's wrapper does."""

    def __init__(self, onnx_path: Path, spec: dict):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        self.spec = spec

    def feed(self, frame: pd.DataFrame) -> dict:
        out = {}
        for column in self.spec["columns"]:
            values = frame[column["name"]]
            if column["type"] == "numeric":
                out[column["name"]] = values.to_numpy(dtype=np.float32).reshape(-1, 1)
            else:
                out[column["name"]] = np.array(
                    ["" if not isinstance(v, str) else v for v in values], dtype=object
                ).reshape(-1, 1)
        return out

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        return self.session.run(["logits"], self.feed(frame))[0].argmax(axis=1)


def log_records(card: dict, frame: pd.DataFrame, model: Model, ts0: float = 1.7e9) -> list[str]:
    """Prediction-log lines (contract 6): the raw row, null for missing."""
    predicted = model(frame)
    names = [c["name"] for c in card["input"]["columns"]]
    lines = []
    for i, row in enumerate(frame[names].itertuples(index=False)):
        features = {}
        for name, value in zip(names, row, strict=True):
            missing = value is None or (isinstance(value, float) and math.isnan(value))
            features[name] = None if missing else value
        lines.append(
            json.dumps(
                {
                    "ts": ts0 + i,
                    "model": card["name"],
                    "model_sha256": card["sha256"],
                    "route": "predict",
                    "features": features,
                    "predicted": CLASSES[predicted[i]],
                    "confidence": 0.9,
                }
            )
        )
    return lines


class _StandIn(DataKind):
    """Only `name` matters: `monitoring` loads mlproject.kinds.<name>.monitoring."""


@pytest.fixture
def kind_classes(monkeypatch):
    """The registry's kinds, or stand-ins where the lead's classes are not merged yet."""
    for name in ("images", "table"):
        try:
            kinds.get(name)
        except (ImportError, AttributeError):
            cls = type(name.title(), (_StandIn,), {"name": name})
            monkeypatch.setattr(f"{__name__}.{name.title()}", cls, raising=False)
            monkeypatch.setitem(kinds.KINDS, name, f"{__name__}:{name.title()}")
