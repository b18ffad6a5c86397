"""The table's preprocessing: fitted on the training split only, applied by NumPy (`encode`)
and by the exported ONNX graph on raw columns, with the same numbers (parity on held-out rows
with missing numbers, missing categories and unseen categories); and the training sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlproject.kinds.table import demo, encode, frame
from mlproject.kinds.table.values import slices
from mlproject.pipeline.data import DataError

CARS = {
    "root": None,
    "file": "cars.csv",
    "target": "Origin",
    "task": "classification",
    "categorical": ["Cylinders"],
    "drop": ["Name"],
    "duplicates": "drop",
    "min_rows_per_class": 5,
    "split": {"val": 0.15, "test": 0.15, "seed": 42},
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("cars")
    demo.write_cars(root / "cars.csv")
    out = root / "prepared"
    return out, frame.prepare({**CARS, "root": str(root)}, out)


def held_out(out: Path) -> pd.DataFrame:
    """The test split with a missing number, a missing category and unseen categories."""
    df = pd.read_parquet(out / "test.parquet")
    df.loc[0, "Horsepower"] = np.nan
    df.loc[1, "Miles_per_Gallon"] = np.nan
    df.loc[1, "Cylinders"] = None
    df.loc[2, "Cylinders"] = "12"  # never seen
    df.loc[3, "Year"] = "2050-01-01"  # never seen
    df.loc[4, "Year"] = None
    df.loc[5, "Weight_in_lbs"] = 1e6  # far outside the training range
    return df


# ---------------------------------------------------------------------------- fit


def test_fit_on_training_split_only():
    train = pd.DataFrame(
        {
            "a": [1.0, np.nan, 3.0, 10.0],
            "c": pd.Series(["x", None, "z", "x"], dtype="str"),
            "y": ["p", "q", "p", "q"],
        }
    )
    spec = encode.fit(train, ["a"], ["c"], "y", "classification")
    a, c = spec["columns"]
    assert a == {
        "name": "a",
        "type": "numeric",
        "datatype": "FP32",
        "fill": 3.0,
        "mean": pytest.approx(np.mean([1, 3, 3, 10]), rel=1e-12),
        "std": pytest.approx(np.std([1, 3, 3, 10]), rel=1e-12),
        "min": 1.0,
        "max": 10.0,
        "missing_rate": 0.25,
    }
    assert c == {
        "name": "c",
        "type": "categorical",
        "datatype": "BYTES",
        "categories": ["", "x", "z"],
        "missing_rate": 0.25,
    }
    assert spec["kind"] == "table" and spec["target"] == "y"
    assert spec["encoded_width"] == 1 + 4
    constant = encode.fit(pd.DataFrame({"a": [2.0, 2.0]}), ["a"], [], "y", "classification")
    assert constant["columns"][0]["std"] == 1e-6  # no division by zero


def test_fit_categories_come_from_train(prepared):
    out, meta = prepared
    train = pd.read_parquet(out / "train.parquet")
    year = next(c for c in meta["input"]["columns"] if c["name"] == "Year")
    assert year["categories"] == sorted(train["Year"].unique())
    horsepower = next(c for c in meta["input"]["columns"] if c["name"] == "Horsepower")
    assert horsepower["fill"] == float(train["Horsepower"].median())


# ---------------------------------------------------------------------------- encode, labels


def test_encode_layout_missing_and_unseen():
    spec = encode.fit(
        pd.DataFrame({"c": ["b", "a", "b"], "n": [0.0, 2.0, 4.0]}),
        ["n"],
        ["c"],
        "y",
        "classification",
    )
    df = pd.DataFrame(
        {"c": pd.Series(["a", "b", "zz", None], dtype="str"), "n": [2.0, np.nan, 4.0, 0.0]}
    )
    x = encode.encode(df, spec)
    assert x.dtype == np.float32 and x.shape == (4, 4)
    assert slices(spec) == {"c": (0, 3), "n": (3, 4)}
    # categories a, b, then the unseen slot (missing "" was not seen in training)
    np.testing.assert_array_equal(x[:, :3], [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]])
    std = np.float32(np.std([0, 2, 4]))
    np.testing.assert_array_equal(x[:, 3], np.array([0, 0, 2, -2], np.float32) / std)
    np.testing.assert_array_equal(encode.expand(encode.compact(df, spec), spec), x)


def test_encode_spells_non_text_categories_like_category_value():
    spec = {
        "kind": "table",
        "columns": [{"name": "k", "type": "categorical", "categories": ["4", "8", "True"]}],
        "encoded_width": 4,
    }
    x = encode.encode(pd.DataFrame({"k": [8, 4.0, True, 5]}, dtype=object), spec)
    np.testing.assert_array_equal(x.argmax(1), [1, 0, 2, 3])


def test_labels_and_unknown_class(prepared):
    out, meta = prepared
    df = pd.read_parquet(out / "val.parquet")
    y = encode.labels(df, meta)
    assert y.dtype == np.int64
    assert np.bincount(y, minlength=3).tolist() == meta["counts"]["val"]
    df.loc[0, "Origin"] = "Mars"
    with pytest.raises(DataError, match="'Mars'"):
        encode.labels(df, meta)


def test_feed_matches_contract(prepared):
    out, meta = prepared
    feed = encode.feed(held_out(out), meta["input"])
    assert list(feed) == [c["name"] for c in meta["input"]["columns"]]
    assert feed["Horsepower"].dtype == np.float32 and feed["Horsepower"].shape[1] == 1
    assert np.isnan(feed["Horsepower"][0, 0])
    assert feed["Cylinders"].dtype == object and feed["Cylinders"][1, 0] == ""
    assert feed["Year"][3, 0] == "2050-01-01"


def test_preprocessing_graph_equals_encode(prepared):
    """The ONNX preprocessing alone gives encode's numbers bit for bit (no torch needed)."""
    import onnx
    import onnxruntime as ort

    out, meta = prepared
    spec = meta["input"]
    graph = encode.preprocessing_graph(spec, 18, 10)
    onnx.checker.check_model(graph, full_check=True)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    df = held_out(out)
    (got,) = session.run(None, encode.feed(df, spec))
    np.testing.assert_array_equal(got, encode.encode(df, spec))


# ---------------------------------------------------------------------------- export, parity


@pytest.fixture(scope="module")
def exported(prepared, tmp_path_factory):
    import torch

    from mlproject.pipeline.export import WithProbabilities

    out, meta = prepared
    torch.manual_seed(0)
    width = meta["input"]["encoded_width"]
    net = torch.nn.Sequential(torch.nn.Linear(width, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    model = WithProbabilities(net).eval()
    folder = tmp_path_factory.mktemp("onnx")
    encode.export(model, meta["input"], folder / "model.onnx", 18)
    return model, folder / "model.onnx"


@pytest.mark.slow  # exports with torch.onnx (dynamo): seconds each
def test_export_parity_on_raw_columns(prepared, exported):
    import onnxruntime as ort
    import torch

    out, meta = prepared
    model, path = exported
    df = held_out(out)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, probs = session.run(["logits", "probabilities"], encode.feed(df, meta["input"]))
    with torch.no_grad():
        t_logits, t_probs = model(torch.from_numpy(encode.encode(df, meta["input"])))
    np.testing.assert_allclose(probs, t_probs.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(logits, t_logits.numpy(), rtol=0, atol=1e-5)
    assert logits.shape == (len(df), 3) and probs.dtype == np.float32


@pytest.mark.slow  # exports with torch.onnx (dynamo): seconds each
def test_export_graph_contract(prepared, exported):
    import onnx
    import onnxruntime as ort

    _, meta = prepared
    _, path = exported
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.producer_name == "pytorch" and "+" not in model.producer_version
    assert not (path.parent / "model.onnx.data").exists()  # weights inside
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = {i.name: (i.type, i.shape[1]) for i in session.get_inputs()}
    assert inputs == {
        c["name"]: ("tensor(float)" if c["type"] == "numeric" else "tensor(string)", 1)
        for c in meta["input"]["columns"]
    }
    assert [(o.name, o.type, o.shape[1]) for o in session.get_outputs()] == [
        ("logits", "tensor(float)", 3),
        ("probabilities", "tensor(float)", 3),
    ]
    row = {
        c["name"]: (
            np.array([[np.nan]], np.float32) if c["type"] == "numeric" else np.array([[""]], object)
        )
        for c in meta["input"]["columns"]
    }
    (probs,) = session.run(["probabilities"], row)  # an all-missing row still scores
    assert probs.shape == (1, 3) and abs(float(probs.sum()) - 1) < 1e-5


@pytest.mark.slow  # exports with torch.onnx (dynamo): seconds each
def test_export_is_byte_stable(prepared, exported, tmp_path):
    model, path = exported
    _, meta = prepared
    encode.export(model, meta["input"], tmp_path / "again.onnx", 18)
    assert (tmp_path / "again.onnx").read_bytes() == path.read_bytes()


# ---------------------------------------------------------------------------- training sources


@pytest.fixture(scope="module")
def small_groups(tmp_path_factory):
    """cars prepared with 64-row row groups, so the streamed source reads several."""
    root = tmp_path_factory.mktemp("groups")
    demo.write_cars(root / "cars.csv")
    saved, frame.ROW_GROUP = frame.ROW_GROUP, 64
    try:
        meta = frame.prepare({**CARS, "root": str(root)}, root / "prepared")
    finally:
        frame.ROW_GROUP = saved
    import pyarrow.parquet as pq

    assert pq.ParquetFile(root / "prepared" / "train.parquet").num_row_groups > 3
    return root / "prepared", meta


def test_streamed_equals_in_memory(small_groups):
    import torch

    from mlproject.kinds.table.loader import open_split

    prepared, meta = small_groups
    cpu = torch.device("cpu")
    spec = meta["input"]
    memory = open_split(prepared, "train", {"in_memory": True}, cpu, spec, meta)
    streamed = open_split(prepared, "train", {"in_memory": False}, cpu, spec, meta)
    auto = open_split(
        prepared, "train", {"in_memory": "auto", "memory_budget_mb": 0}, cpu, spec, meta
    )
    assert (memory.streamed, streamed.streamed, auto.streamed) == (False, True, True)
    assert len(memory) == len(streamed) == meta["rows"]["train"]
    assert memory.labels.dtype == streamed.labels.dtype == np.int64
    np.testing.assert_array_equal(memory.labels, streamed.labels)
    frame_ = pd.read_parquet(prepared / "train.parquet")
    np.testing.assert_array_equal(memory.x.numpy(), encode.encode(frame_, spec))
    for rank in (0, 1):
        a, b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        batches = list(
            zip(memory.batches(50, a, rank, 2), streamed.batches(50, b, rank, 2), strict=True)
        )
        assert len(batches) == int(np.ceil(len(memory) / 2 / 50))
        for (i1, x1, y1), (i2, x2, y2) in batches:
            assert torch.equal(i1, i2) and torch.equal(x1, x2) and torch.equal(y1, y2)
            assert x1.dtype == torch.float32 and y1.dtype == torch.int64
    # unshuffled (evaluation): every row once, in order
    idx = torch.cat([i for i, _, _ in streamed.batches(100)])
    assert torch.equal(idx, torch.arange(len(streamed)))
