"""The monitor's side of the table kind (NumPy; pyarrow/pandas for files, no PyTorch).

A table is monitored column by column on its raw values, the ones a client sends and the
prediction log records (contract 6): numeric columns as float64 with NaN for missing,
categorical ones as strings matched with `values.category_value` ("" for missing), so the
training split, logged requests and files of rows compare alike. The protocol these functions
answer is described in `mlproject.kinds.images.monitoring`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ...core.errors import ProjectError
from .values import CATEGORICAL, NUMERIC, category_value

UNIT = "rows"
BATCH_SIZE = 4096
FILE_SUFFIXES = (".csv", ".parquet", ".pq")


class InputError(ProjectError, ValueError):
    """A file of rows does not fit the model's columns; the message names file, column, row."""


# ------------------------------------------------------------------------------ values


def numeric_value(value: Any) -> float:
    """A logged or sent number: None/NaN -> NaN; a string or a boolean is an error."""
    if value is None:
        return math.nan
    if isinstance(value, (bool, str, bytes)):
        raise TypeError(f"expected a number or null, got {value!r}")
    return float(value)


def as_column(column: dict[str, Any], values: Any) -> np.ndarray:
    """Raw values of one column (list, numpy, pandas or pyarrow) as the monitor compares them."""
    if hasattr(values, "to_pylist"):
        return arrow_column(column, values)
    if column["type"] == NUMERIC:
        return np.array(
            [math.nan if v is None else float(v) for v in values], dtype=np.float64
        ).reshape(-1)
    out = np.empty(len(values), dtype=object)
    out[:] = [category_value(v) for v in values]
    return out


def arrow_column(column: dict[str, Any], values: Any) -> np.ndarray:
    """A pyarrow (chunked) array, vectorized where the contract's types allow: a prepared split
    of millions of rows is profiled without a Python object per value."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column["type"] == NUMERIC:
        if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
            return pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
    elif pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return pc.fill_null(values, "").to_numpy(zero_copy_only=False).astype(object)
    return as_column(column, values.to_pylist())


def feed(spec: dict[str, Any], cols: dict[str, np.ndarray], start: int = 0, stop=None) -> dict:
    """The exported graph's raw-column feed (contract 4) for rows [start, stop)."""
    out = {}
    for column in spec["columns"]:
        values = cols[column["name"]][start:stop]
        if column["type"] == NUMERIC:
            out[column["name"]] = values.astype(np.float32).reshape(-1, 1)
        else:
            out[column["name"]] = np.asarray(values, dtype=object).reshape(-1, 1)
    return out


def batched_feeds(
    spec: dict[str, Any], cols: dict[str, np.ndarray], batch_size: int = BATCH_SIZE
) -> Iterator[dict[str, np.ndarray]]:
    n = len(next(iter(cols.values()))) if cols else 0
    for start in range(0, n, batch_size):
        yield feed(spec, cols, start, start + batch_size)


# ------------------------------------------------------------------------------ the protocol


def features(spec: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for column in spec["columns"]:
        item = {"name": column["name"], "type": column["type"], "nullable": True}
        if column["type"] == CATEGORICAL:
            item["categories"] = [category_value(c) for c in column["categories"]]
        out.append(item)
    return out


def read_split(prepared: Path, split: str, spec: dict[str, Any]) -> dict[str, np.ndarray]:
    """A prepared split's feature columns (contract 3: outputs/prepared/<split>.parquet)."""
    import pyarrow.parquet as pq

    path = Path(prepared) / f"{split}.parquet"
    if not path.is_file():
        raise InputError(f"{path}: not found; run `dvc repro prepare` first.")
    names = [c["name"] for c in spec["columns"]]
    present = set(pq.read_schema(path).names)
    missing = [n for n in names if n not in present]
    if missing:
        raise InputError(f"{path}: no column {missing[0]!r} of the model's input spec.")
    table = pq.read_table(path, columns=names)
    return {c["name"]: as_column(c, table.column(c["name"])) for c in spec["columns"]}


def reference(prepared: Path, spec: dict[str, Any]) -> dict[str, np.ndarray]:
    return read_split(prepared, "train", spec)


def feeds(
    prepared: Path, split: str, card: dict[str, Any], batch_size: int = BATCH_SIZE
) -> Iterator[dict[str, np.ndarray]]:
    spec = card["input"]
    return batched_feeds(spec, read_split(prepared, split, spec), batch_size)


def record_values(features: dict[str, Any], spec: dict[str, Any]) -> list[Any]:
    """A logged record's raw row (contract 6) in the spec's column order."""
    out: list[Any] = []
    for column in spec["columns"]:
        name = column["name"]
        value = features[name]
        if column["type"] == NUMERIC:
            try:
                out.append(numeric_value(value))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"column {name!r}: {exc}") from exc
        else:
            if isinstance(value, (dict, list)):
                raise ValueError(f"column {name!r}: expected a string or null, got {value!r}")
            out.append(category_value(value))
    return out


def table_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"{path}: no such file or folder of rows (.csv, .parquet).")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in FILE_SUFFIXES)
    if not files:
        raise InputError(f"{path}: no .csv or .parquet files.")
    return files


def read_file(path: Path, spec: dict[str, Any]) -> dict[str, np.ndarray]:
    """One CSV or Parquet file's model columns; names the file, column and first bad row."""
    import pandas as pd

    categorical = [c["name"] for c in spec["columns"] if c["type"] == CATEGORICAL]
    try:
        if path.suffix == ".csv":
            frame = pd.read_csv(path, dtype=dict.fromkeys(categorical, str))
            first_row = 2  # line 1 is the header
        else:
            frame = pd.read_parquet(path)
            first_row = 0
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: cannot be read as a table ({exc}).") from exc
    out = {}
    for column in spec["columns"]:
        name = column["name"]
        if name not in frame.columns:
            raise InputError(
                f"{path}: no column {name!r} (the model's columns: "
                f"{', '.join(c['name'] for c in spec['columns'])})."
            )
        series = frame[name]
        if column["type"] == NUMERIC:
            numbers = pd.to_numeric(series, errors="coerce")
            bad = numbers.isna() & series.notna()
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise InputError(
                    f"{path}: column {name!r} is numeric but row {row + first_row} holds "
                    f"{series.iloc[row]!r}."
                )
            out[name] = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            out[name] = as_column(column, [None if pd.isna(v) else v for v in series])
    return out


def read_inputs(
    path: str | Path, card: dict[str, Any]
) -> tuple[dict[str, np.ndarray], Iterator[dict[str, np.ndarray]]]:
    """Rows of a CSV/Parquet file, or of every such file under a folder (extra columns such as
    the target are ignored)."""
    spec = card["input"]
    parts = [read_file(p, spec) for p in table_files(Path(path))]
    cols = {c["name"]: np.concatenate([part[c["name"]] for part in parts]) for c in spec["columns"]}
    if not len(next(iter(cols.values()))):
        raise InputError(f"{path}: no rows.")
    return cols, batched_feeds(spec, cols)
