"""Data tests of the table kind: the demo table's bytes, reading and typing, every bad-table
error one by one (its type, what its message names, and no output left behind), the splits,
byte-stable prepared files, and the training sources (streamed == in memory)."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlproject.kinds.table import demo, frame
from mlproject.pipeline.data import DataError

CARS_SHA256 = "91e1a4b2a045d02e5851a2ebf8238b2627866b5c65d04dbe7d051ae561648501"


def cars_config(root: Path, **overrides) -> dict:
    """conf/data/cars.yaml's data section (contract 1), pointed at root."""
    cfg = {
        "name": "cars",
        "kind": "table",
        "root": str(root),
        "file": "cars.csv",
        "target": "Origin",
        "task": "classification",
        "features": None,
        "categorical": ["Cylinders"],
        "drop": ["Name"],
        "missing_target": "drop",
        "duplicates": "drop",
        "min_rows_per_class": 5,
        "split": {"val": 0.15, "test": 0.15, "seed": 42},
        "in_memory": "auto",
        "memory_budget_mb": 1024,
        "workers": 0,
    }
    return {**cfg, **overrides}


@pytest.fixture(scope="module")
def cars(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cars")
    demo.write_cars(root / "cars.csv")
    return root


@pytest.fixture(scope="module")
def prepared(cars, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("prepared") / "prepared"
    return out, frame.prepare(cars_config(cars), out)


def small_table(
    root: Path, name: str = "t.csv", rows: list[list] | None = None, header: list[str] | None = None
) -> dict:
    """A 3-class CSV of 30 rows (x numeric, c text, y target) and its data config."""
    header = header or ["x", "c", "y"]
    if rows is None:
        rows = [[i * 1.5, "abc"[i % 3], "pq r"[i % 3] if i % 3 != 2 else "r"] for i in range(30)]
    with open(root / name, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return {
        "root": str(root),
        "file": name,
        "target": "y",
        "task": "classification",
        "min_rows_per_class": 2,
        "split": {"val": 0.2, "test": 0.2, "seed": 0},
    }


def fails(cfg: dict, out: Path, *needles: str) -> str:
    """prepare raises DataError whose message holds every needle, and writes nothing."""
    with pytest.raises(DataError) as info:
        frame.prepare(cfg, out)
    message = str(info.value)
    for needle in needles:
        assert needle in message, (needle, message)
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")] == []
    return message


# ---------------------------------------------------------------------------- the demo table


def test_write_cars_exact_bytes(tmp_path):
    """The same bytes twice and on every machine (the hash data.dvc records depends on it)."""
    assert demo.write_cars(tmp_path / "a.csv") == 406
    assert demo.write_cars(tmp_path / "b.csv") == 406
    blob = (tmp_path / "a.csv").read_bytes()
    assert blob == (tmp_path / "b.csv").read_bytes()
    assert hashlib.sha256(blob).hexdigest() == CARS_SHA256
    assert b"\r" not in blob
    lines = blob.decode().splitlines()
    assert lines[0] == ",".join(demo.COLUMNS)
    assert lines[1] == "chevrolet chevelle malibu,18,8,307,130,3504,12,1970-01-01,USA"
    table = pd.read_csv(tmp_path / "a.csv")
    assert table["Miles_per_Gallon"].isna().sum() == 8
    assert table["Horsepower"].isna().sum() == 6
    assert sorted(table["Origin"].unique()) == ["Europe", "Japan", "USA"]


# ---------------------------------------------------------------------------- prepare on cars


def test_prepare_cars_meta_and_typing(prepared):
    out, meta = prepared
    assert sorted(p.name for p in out.iterdir()) == [
        "meta.json",
        "test.parquet",
        "train.parquet",
        "val.parquet",
    ]
    assert json.loads((out / "meta.json").read_text()) == meta
    assert meta["kind"] == "table" and meta["task"] == "classification"
    assert meta["target"] == "Origin" and meta["classes"] == ["Europe", "Japan", "USA"]
    spec = meta["input"]
    assert spec["kind"] == "table" and spec["target"] == "Origin"
    types = {c["name"]: c["type"] for c in spec["columns"]}
    assert types == {
        "Miles_per_Gallon": "numeric",
        "Cylinders": "categorical",
        "Displacement": "numeric",
        "Horsepower": "numeric",
        "Weight_in_lbs": "numeric",
        "Acceleration": "numeric",
        "Year": "categorical",
    }  # Name dropped; Cylinders by data.categorical, Year as text (not parsed as a date)
    cylinders = next(c for c in spec["columns"] if c["name"] == "Cylinders")
    assert cylinders["categories"] == ["3", "4", "5", "6", "8"]  # category_value spelling
    assert sum(meta["rows"].values()) == 406 - meta["dropped"]["duplicates"]
    assert meta["dropped"]["missing_target"] == 0
    assert meta["leakage"] == {"duplicate_rows_across_splits": 0}
    line = frame.describe(meta)
    assert line.startswith("prepare: table ") and "3 classes" in line and "7 features" in line


def test_prepared_columns_follow_contract(prepared):
    out, meta = prepared
    train = pq.read_table(out / "train.parquet")
    names = [c["name"] for c in meta["input"]["columns"]]
    assert train.column_names == [*names, "Origin"]
    assert train.schema.field("Horsepower").type == pa.float64()
    assert train.schema.field("Cylinders").type == pa.string()
    assert train.schema.field("Origin").type == pa.string()
    assert train.schema.metadata is None or b"pandas" not in train.schema.metadata
    frames = {s: pd.read_parquet(out / f"{s}.parquet") for s in frame.SPLITS}
    missing_hp = sum(int(f["Horsepower"].isna().sum()) for f in frames.values())
    assert missing_hp == 6  # NaN kept, not filled: the fill is fitted state, applied later
    assert {v for f in frames.values() for v in f["Year"].unique()} >= {"1970-01-01"}


def test_split_is_stratified_and_deterministic(prepared, cars, tmp_path):
    out, meta = prepared
    counts = np.array([meta["counts"][s] for s in frame.SPLITS])
    totals = counts.sum(axis=0)
    assert [sum(meta["counts"][s]) for s in frame.SPLITS] == [meta["rows"][s] for s in frame.SPLITS]
    # every class is in every split, in proportion (within one row of it)
    for split, fraction in (("val", 0.15), ("test", 0.15)):
        assert np.all(np.abs(np.array(meta["counts"][split]) - totals * fraction) <= 1.5)
    other = frame.prepare(
        cars_config(cars, split={"val": 0.15, "test": 0.15, "seed": 7}), tmp_path / "seed7"
    )
    assert other["counts"]["test"] != meta["counts"]["test"] or not (
        pd.read_parquet(tmp_path / "seed7" / "test.parquet").equals(
            pd.read_parquet(out / "test.parquet")
        )
    )


def test_prepare_is_byte_stable(prepared, cars, tmp_path):
    """Same input, same bytes: the outputs DVC hashes do not change on a re-run."""
    out, _ = prepared
    again = tmp_path / "again"
    frame.prepare(cars_config(cars), again)
    for name in ("meta.json", "train.parquet", "val.parquet", "test.parquet"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name


def test_parquet_input_prepares_like_csv(cars, prepared, tmp_path):
    out, meta = prepared
    pq.write_table(frame.read_table(cars / "cars.csv"), tmp_path / "cars.parquet")
    from_parquet = frame.prepare(cars_config(tmp_path, file="cars.parquet"), tmp_path / "p")
    assert from_parquet["rows"] == meta["rows"] and from_parquet["input"] == meta["input"]
    for split in frame.SPLITS:
        assert pd.read_parquet(tmp_path / "p" / f"{split}.parquet").equals(
            pd.read_parquet(out / f"{split}.parquet")
        )


def test_typing_features_categorical_and_booleans(tmp_path):
    rows = [[i, i % 2 == 0, i % 4, "uvw"[i % 3], "pq"[i % 2]] for i in range(40)]
    cfg = small_table(tmp_path, rows=rows, header=["n", "flag", "k", "t", "y"])
    numeric, categorical = frame.column_types(
        frame.read_table(tmp_path / "t.csv"), {**cfg, "categorical": ["k"]}, tmp_path / "t.csv"
    )
    assert numeric == ["n"] and categorical == ["flag", "k", "t"]
    meta = frame.prepare({**cfg, "features": ["t", "flag"], "duplicates": "keep"}, tmp_path / "o")
    spec = meta["input"]
    assert [c["name"] for c in spec["columns"]] == ["t", "flag"]  # the listed order
    assert spec["columns"][1]["categories"] == ["False", "True"]


# ---------------------------------------------------------------------------- bad tables


def test_file_missing(tmp_path):
    fails(
        {"root": str(tmp_path), "file": "none.csv", "target": "y"},
        tmp_path / "out",
        "none.csv",
        "not found",
    )


def test_file_unreadable(tmp_path):
    (tmp_path / "t.parquet").write_bytes(b"not a parquet file at all")
    fails(
        {"root": str(tmp_path), "file": "t.parquet", "target": "y"},
        tmp_path / "out",
        "t.parquet",
        "cannot read",
    )
    (tmp_path / "t.xlsx").write_bytes(b"x")
    fails(
        {"root": str(tmp_path), "file": "t.xlsx", "target": "y"}, tmp_path / "out", "t.xlsx", "CSV"
    )


def test_target_column_absent(tmp_path):
    cfg = small_table(tmp_path)
    fails({**cfg, "target": "label"}, tmp_path / "out", "t.csv", "'label'", "['x', 'c', 'y']")


def test_target_missing_fail_and_drop(tmp_path):
    rows = [[i, "abc"[i % 3], "pqr"[i % 3]] for i in range(30)]
    rows[4][2] = rows[11][2] = ""
    cfg = small_table(tmp_path, rows=rows)
    fails(
        {**cfg, "missing_target": "fail"}, tmp_path / "out", "'y'", "missing in 2 of 30", "line 6"
    )
    meta = frame.prepare({**cfg, "missing_target": "drop"}, tmp_path / "out")
    assert meta["dropped"]["missing_target"] == 2 and sum(meta["rows"].values()) == 28


def test_feature_column_entirely_empty(tmp_path):
    rows = [[i, "", "pqr"[i % 3]] for i in range(30)]
    fails(small_table(tmp_path, rows=rows), tmp_path / "out", "'c'", "entirely empty", "data.drop")


def test_text_in_numeric_column(tmp_path):
    rows = [[str(i), "abc"[i % 3], "pqr"[i % 3]] for i in range(30)]
    rows[7][0] = "n/a?"
    rows[20][0] = "twelve"
    fails(
        small_table(tmp_path, rows=rows),
        tmp_path / "out",
        "'x'",
        "'n/a?'",
        "row 8 (line 9",
        "2 text value",
    )


def test_duplicate_column_names(tmp_path):
    rows = [[i, i, "pqr"[i % 3]] for i in range(30)]
    fails(
        small_table(tmp_path, rows=rows, header=["x", "x", "y"]),
        tmp_path / "out",
        "t.csv",
        "duplicate column names ['x']",
    )


def test_class_with_too_few_rows(tmp_path):
    rows = [[i, "abc"[i % 3], "p" if i < 14 else "q"] for i in range(30)]
    rows[0][2] = "rare"
    fails(
        {**small_table(tmp_path, rows=rows), "min_rows_per_class": 5},
        tmp_path / "out",
        "{'rare': 1}",
        "min_rows_per_class",
    )


@pytest.mark.parametrize("key", ["features", "categorical", "drop"])
def test_unknown_column_in_config(tmp_path, key):
    fails(
        {**small_table(tmp_path), key: ["x", "colour"]},
        tmp_path / "out",
        f"data.{key}",
        "['colour']",
        "['x', 'c', 'y']",
    )


def test_duplicates_drop_fail_keep(tmp_path):
    rows = [[i, "abc"[i % 3], "pqr"[i % 3]] for i in range(60)]
    rows += [list(r) for r in rows[:12]]  # 12 exact repeats
    cfg = small_table(tmp_path, rows=rows)
    fails({**cfg, "duplicates": "fail"}, tmp_path / "out", "12 row(s)", "line 62")
    dropped = frame.prepare({**cfg, "duplicates": "drop"}, tmp_path / "drop")
    assert dropped["dropped"]["duplicates"] == 12 and sum(dropped["rows"].values()) == 60
    assert dropped["leakage"]["duplicate_rows_across_splits"] == 0
    kept = frame.prepare({**cfg, "duplicates": "keep"}, tmp_path / "keep")
    assert sum(kept["rows"].values()) == 72 and kept["dropped"]["duplicates"] == 0
    splits = {s: pd.read_parquet(tmp_path / "keep" / f"{s}.parquet") for s in frame.SPLITS}
    train = {tuple(r) for r in splits["train"].itertuples(index=False)}
    leaked = sum(
        tuple(r) in train for s in ("val", "test") for r in splits[s].itertuples(index=False)
    )
    assert kept["leakage"]["duplicate_rows_across_splits"] == leaked > 0


def test_failure_keeps_the_previous_output(tmp_path, cars):
    """A failing prepare leaves the last good output as it was (atomic_dir)."""
    out = tmp_path / "out"
    frame.prepare(cars_config(cars), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(DataError):
        frame.prepare(cars_config(cars, target="Colour"), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# ---------------------------------------------------------------------------- regression


def test_regression_target(cars, tmp_path):
    meta = frame.prepare(
        cars_config(cars, target="Miles_per_Gallon", task="regression"), tmp_path / "r"
    )
    assert meta["classes"] == [] and meta["dropped"]["missing_target"] == 8
    assert (
        pq.read_table(tmp_path / "r" / "train.parquet").schema.field("Miles_per_Gallon").type
        == pa.float64()
    )


def test_parquet_missing_spellings(tmp_path):
    """In Parquet a missing number may be null or NaN and a missing category null or "": each
    is missing; a dictionary-typed text column is categorical."""
    n = 30
    table = pa.table(
        {
            "x": pa.array(
                [None if i == 3 else float("nan") if i == 4 else float(i) for i in range(n)]
            ),
            "c": pa.array(["" if i == 5 else None if i == 6 else "uv"[i % 2] for i in range(n)]),
            "d": pa.array(["k", "l", "m"] * 10).dictionary_encode(),
            "y": pa.array(["pqr"[i % 3] for i in range(n)]),
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    cfg = {
        "root": str(tmp_path),
        "file": "t.parquet",
        "target": "y",
        "min_rows_per_class": 2,
        "split": {"val": 0.2, "test": 0.2, "seed": 0},
    }
    meta = frame.prepare(cfg, tmp_path / "out")
    columns = {c["name"]: c for c in meta["input"]["columns"]}
    assert columns["x"]["type"] == "numeric" and columns["d"]["type"] == "categorical"
    frames = [pd.read_parquet(tmp_path / "out" / f"{s}.parquet") for s in frame.SPLITS]
    whole = pd.concat(frames)
    assert whole["x"].isna().sum() == 2 and whole["c"].isna().sum() == 2
    assert "" not in set(whole["c"].dropna())
    train = frames[0]
    for name in ("c", "d"):  # categories are the training split's values ("" for missing)
        seen = {v for v in train[name].dropna()} | ({""} if train[name].isna().any() else set())
        assert columns[name]["categories"] == sorted(seen)
