"""A raw table: read it, type its columns, validate it, split it, write the prepared splits.

`prepare(data_cfg, out_dir)` is the table kind's stage `prepare`: it reads `data.root/data.file`
(CSV or Parquet) with pyarrow, checks it, and writes `out_dir` in one atomic step:
`{train,val,test}.parquet` (the feature columns in the spec's order, numbers as float64 with NaN
for missing, categories as strings with null for missing, then the target) and `meta.json`.
Every bad table raises DataError naming the file, the column or row, and the fix, before
anything is written. The work stays in Arrow and NumPy (no per-row Python); benchmarks/table.py
measures a million-row prepare against reading the same file alone.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ...core.io import atomic_dir, write_json
from ...pipeline.data import DataError, random_split, stratified_split
from . import encode
from .values import CATEGORICAL, NUMERIC, category_value

SPLITS = ("train", "val", "test")
ROW_GROUP = 65_536  # rows per Parquet row group: the unit the streamed loader reads
CSV_SUFFIXES = {".csv", ".txt"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
NUMBER = re.compile(
    r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$|^\s*[-+]?(inf|infinity|nan)\s*$"
)
SAMPLE = 10_000  # values of a text column checked first for being mostly numbers


# ---------------------------------------------------------------------------- reading


def read_table(path: str | Path) -> pa.Table:
    """The file as an Arrow table: CSV or Parquet by suffix. Empty CSV fields and the usual NA
    spellings are missing; dates are kept as the text the file has (not parsed)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: table file not found. Put the file there, or set data.root and data.file "
            "(its path under data.root) in conf/data/<name>.yaml."
        )
    suffix = path.suffix.lower()
    try:
        if suffix in PARQUET_SUFFIXES:
            table = pq.read_table(path)
        elif suffix in CSV_SUFFIXES:
            table = _read_csv(path)
        else:
            raise DataError(
                f"{path}: unknown table format {suffix!r}; expected a CSV "
                f"({', '.join(sorted(CSV_SUFFIXES))}) or Parquet "
                f"({', '.join(sorted(PARQUET_SUFFIXES))}) file."
            )
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{path}: cannot read the table ({exc}). Check that it is a valid "
            f"{'Parquet' if suffix in PARQUET_SUFFIXES else 'CSV'} file."
        ) from exc
    names = table.column_names
    seen: set[str] = set()
    repeated = [n for n in names if n in seen or seen.add(n)]
    if repeated:
        raise DataError(
            f"{path}: duplicate column names {sorted(set(repeated))}; every column needs its own "
            "name. Rename or remove the repeated columns in the file."
        )
    if table.num_rows == 0:
        raise DataError(f"{path}: the table has no rows.")
    return table


def _read_csv(path: Path) -> pa.Table:
    from pyarrow import csv

    convert = csv.ConvertOptions(strings_can_be_null=True)
    table = csv.read_csv(path, convert_options=convert)
    temporal = [f.name for f in table.schema if pa.types.is_temporal(f.type)]
    if temporal:  # keep the file's own text ("1970-01-01"), as clients will send it
        text = csv.read_csv(
            path,
            convert_options=csv.ConvertOptions(
                strings_can_be_null=True,
                include_columns=temporal,
                column_types=dict.fromkeys(temporal, pa.string()),
            ),
        )
        for name in temporal:
            table = table.set_column(table.column_names.index(name), name, text.column(name))
    return table


def _row(path: Path, index: int) -> str:
    """How a user finds row `index` (0-based, data rows) in the file."""
    if path.suffix.lower() in CSV_SUFFIXES:
        return f"row {index + 1} (line {index + 2}, after the header)"
    return f"row {index + 1}"


# ---------------------------------------------------------------------------- typing


def column_types(table: pa.Table, data_cfg: Any, path: Path) -> tuple[list[str], list[str]]:
    """(numeric, categorical) feature columns, in the model's order: `features` (default: every
    column but the target and `drop`); categorical are those listed in `categorical` plus the
    text and boolean ones. Names that are not columns, and text in a mostly numeric column,
    raise DataError."""
    names = table.column_names
    target = data_cfg.get("target")
    if not target or target not in names:
        raise DataError(
            f"{path}: target column {target!r} not found; the columns are {names}. "
            "Set data.target to one of them."
        )
    for key in ("features", "categorical", "drop"):
        listed = list(data_cfg.get(key) or [])
        unknown = [n for n in listed if n not in names]
        if unknown:
            raise DataError(
                f"{path}: data.{key} names {unknown}, not columns of the file; the columns are "
                f"{names}. Fix data.{key}."
            )
        if target in listed:
            raise DataError(
                f"{path}: data.{key} lists the target column {target!r}; remove it from data.{key}."
            )
    drop = set(data_cfg.get("drop") or [])
    listed = data_cfg.get("features")
    features = [n for n in (listed or names) if n != target and n not in drop]
    if not features:
        raise DataError(f"{path}: no feature columns left after data.drop; keep at least one.")
    explicit = set(data_cfg.get("categorical") or [])
    numeric, categorical = [], []
    for name in features:
        kind = _column_kind(table.column(name), name, name in explicit, path)
        (categorical if kind == CATEGORICAL else numeric).append(name)
    return numeric, categorical


def _column_kind(column: pa.ChunkedArray, name: str, explicit: bool, path: Path) -> str:
    kind = column.type
    if column.null_count == len(column) or (
        pa.types.is_floating(kind) and pc.all(pc.is_nan(column)).as_py()
    ):
        raise DataError(
            f"{path}: feature column {name!r} is entirely empty (every value missing). "
            f"Add it to data.drop, or fill it in the file."
        )
    if explicit or pa.types.is_boolean(kind) or pa.types.is_dictionary(kind):
        return CATEGORICAL
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return NUMERIC
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        _check_text(column, name, path)
        return CATEGORICAL
    raise DataError(
        f"{path}: column {name!r} has type {kind}, neither numbers nor text. "
        "Add it to data.drop, or convert it in the file."
    )


def _check_text(column: pa.ChunkedArray, name: str, path: Path) -> None:
    """A text column whose values are mostly numbers is a numeric column with typos."""
    sample = column.slice(0, 4 * SAMPLE).drop_null().slice(0, SAMPLE)
    if len(sample) == 0:
        return
    is_number = pc.match_substring_regex(sample, NUMBER.pattern, ignore_case=True)
    if pc.sum(is_number).as_py() * 2 < len(sample):
        return  # mostly text: a categorical column
    is_number = pc.match_substring_regex(column, NUMBER.pattern, ignore_case=True)
    bad = pc.and_(pc.is_valid(column), pc.invert(is_number))
    count = pc.sum(bad).as_py() or 0
    if count:
        first = pc.index(bad, True).as_py()
        raise DataError(
            f"{path}: column {name!r} holds numbers and {count} text value(s); the first is "
            f"{column[first].as_py()!r} at {_row(path, first)}. Fix or empty those cells, or list "
            f"{name!r} in data.categorical if it is a category."
        )
    # All numbers that Arrow kept as text (e.g. " 5", "inf"): a numeric column after all.
    raise DataError(
        f"{path}: column {name!r} holds only numbers but was read as text (spaces or unusual "
        f"spellings?). Clean the column, or list {name!r} in data.categorical."
    )


# ---------------------------------------------------------------------------- normalizing


def as_numbers(column: pa.ChunkedArray) -> np.ndarray:
    """float64 with NaN for missing."""
    return pc.cast(column, pa.float64()).to_numpy()  # nulls come out as NaN


def as_categories(column: pa.ChunkedArray) -> pa.DictionaryArray:
    """Categories as a dictionary array: values spelled as category_value spells them ("8",
    "True"), each once; missing (null, NaN, "") as null. The dictionary codes also serve the
    row hash, the split's take and the Parquet writer, so the text is hashed once."""
    values = column.combine_chunks()
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    encoded = values.dictionary_encode()
    if pa.types.is_string(values.type):
        spelled = encoded.dictionary.to_pylist()
    else:
        spelled = [category_value(v) for v in encoded.dictionary.to_pylist()]
    if "" not in spelled and len(set(spelled)) == len(spelled) and pa.types.is_string(values.type):
        return encoded
    unique = sorted(set(spelled) - {""})
    where = {v: i for i, v in enumerate(unique)}
    remap = pa.array([where.get(v) for v in spelled], pa.int32())
    indices = pc.take(remap, encoded.indices)
    return pa.DictionaryArray.from_arrays(indices, pa.array(unique, pa.string()))


def _row_hashes(columns: list[pa.Array | np.ndarray]) -> np.ndarray:
    """A 64-bit hash of each row (numbers by their bits, NaN as one value; categories by their
    dictionary code): equal rows, equal hashes; unequal rows collide with odds ~ n^2 / 2^64."""
    n = len(columns[0])
    h = np.full(n, 0xCBF29CE484222325, dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    for values in columns:
        if isinstance(values, np.ndarray):
            bits = np.where(np.isnan(values), np.nan, values).view(np.uint64)
        else:
            codes = values.indices.fill_null(-1)
            bits = codes.to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)
        h = (h ^ bits) * prime
    h ^= h >> np.uint64(33)  # final avalanche (murmur3's fmix64)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    return h


def _each(fn, items: list) -> list:
    """[fn(item) for item in items] on a thread per CPU: Arrow and NumPy release the GIL in
    the column conversions and takes this runs, so a 2-core machine does them side by side."""
    with ThreadPoolExecutor(max(1, min(len(items), os.cpu_count() or 1))) as pool:
        return list(pool.map(fn, items))


def _repeats(hashes: np.ndarray) -> np.ndarray:
    """Positions whose hash occurs earlier in the array. Sorting, not np.unique (NumPy 2's
    hash-based unique took 1.8 s on a million uint64 here), and the index sort only when there
    are repeats (a plain sort is 8x faster)."""
    ordered = np.sort(hashes)
    if not (ordered[1:] == ordered[:-1]).any():
        return np.empty(0, dtype=np.int64)
    order = np.argsort(hashes, kind="stable")
    ordered = hashes[order]
    later = np.zeros(len(hashes), dtype=bool)
    later[1:] = ordered[1:] == ordered[:-1]
    return np.sort(order[later])


def _count_in(values: np.ndarray, sorted_pool: np.ndarray) -> int:
    """How many of values occur in sorted_pool."""
    if not len(sorted_pool):
        return 0
    at = np.minimum(np.searchsorted(sorted_pool, values), len(sorted_pool) - 1)
    return int((sorted_pool[at] == values).sum())


# ---------------------------------------------------------------------------- prepare


def prepare(data_cfg: Any, out_dir: str | Path) -> dict[str, Any]:
    """Read, validate and split the table; fit the preprocessing on the training split; write
    out_dir atomically. Returns meta (also out_dir/meta.json)."""
    path = Path(data_cfg.get("root", "data")) / str(data_cfg.get("file"))
    task = data_cfg.get("task", "classification")
    if task not in ("classification", "regression"):
        raise DataError(f"data.task is {task!r}; expected classification or regression.")
    table = read_table(path)
    target = data_cfg.get("target")
    numeric, categorical = column_types(table, data_cfg, path)
    n_file = table.num_rows

    # The target: its missing rows are dropped (counted) or fail.
    if task == "classification":
        y = as_categories(table.column(target))
    else:
        if not (
            pa.types.is_integer(table.schema.field(target).type)
            or pa.types.is_floating(table.schema.field(target).type)
        ):
            raise DataError(
                f"{path}: target column {target!r} is not numeric; task regression needs numbers."
            )
        y = as_numbers(table.column(target))
    missing = np.isnan(y) if task == "regression" else pc.is_null(y).to_numpy(zero_copy_only=False)
    n_missing = int(missing.sum())
    keep = np.ones(n_file, dtype=bool)
    if n_missing:
        first = int(np.argmax(missing))
        if data_cfg.get("missing_target", "drop") == "fail":
            raise DataError(
                f"{path}: target column {target!r} is missing in {n_missing} of {n_file} rows "
                f"(first at {_row(path, first)}). Fill them, or set data.missing_target: drop."
            )
        keep &= ~missing

    # The prepared columns: numbers as float64 + NaN, categories as strings + null.
    def convert(name: str) -> np.ndarray | pa.DictionaryArray:
        column = table.column(name)
        return as_numbers(column) if name in numeric else as_categories(column)

    columns = dict(zip(numeric + categorical, _each(convert, numeric + categorical), strict=True))
    order = [n for n in (data_cfg.get("features") or table.column_names) if n in columns]
    hashes = _row_hashes([columns[n] for n in order] + [y])  # y: numbers or categories

    # Exact duplicate rows (features and target), before the split.
    kept = np.flatnonzero(keep)
    repeats = kept[_repeats(hashes[kept])]  # rows equal to an earlier kept row
    duplicates = len(repeats)
    mode = data_cfg.get("duplicates", "drop")
    if mode not in ("drop", "fail", "keep"):
        raise DataError(f"data.duplicates is {mode!r}; expected drop, fail or keep.")
    if duplicates and mode == "fail":
        raise DataError(
            f"{path}: {duplicates} row(s) repeat an earlier row exactly (first at "
            f"{_row(path, int(repeats.min()))}); they could land in two splits. Remove them, "
            "or set data.duplicates: drop (or keep, to count them as leakage)."
        )
    if duplicates and mode == "drop":
        keep[repeats] = False
    rows = np.flatnonzero(keep)

    # Classes and the split.
    if task == "classification":
        codes = y.indices.to_numpy(zero_copy_only=False)[rows].astype(np.int64)
        present = np.flatnonzero(np.bincount(codes, minlength=len(y.dictionary)))
        names = [y.dictionary[int(i)].as_py() for i in present]
        classes = sorted(names)
        remap = np.zeros(len(y.dictionary), dtype=np.int64)
        remap[present] = [classes.index(c) for c in names]
        labels = remap[codes]
        counts = np.bincount(labels, minlength=len(classes))
        minimum = int(data_cfg.get("min_rows_per_class", 5))
        small = {c: int(k) for c, k in zip(classes, counts, strict=True) if k < minimum}
        if small:
            raise DataError(
                f"{path}: class(es) {small} of target {target!r} have fewer than "
                f"data.min_rows_per_class = {minimum} rows. Add rows, remove those classes "
                "from the file, or lower data.min_rows_per_class."
            )
        if len(classes) < 2:
            raise DataError(f"{path}: target {target!r} has {len(classes)} class; need 2 or more.")
    else:
        classes, labels = [], np.zeros(len(rows), dtype=np.int64)
    split = data_cfg.get("split") or {}
    val, test, seed = (
        float(split.get("val", 0.15)),
        float(split.get("test", 0.15)),
        int(split.get("seed", 42)),
    )
    if task == "classification":
        try:
            parts = stratified_split(labels, val, test, seed)
        except DataError as exc:  # its words are the images'; name the file and rows
            raise DataError(f"{path}: {str(exc).replace('images', 'rows')}") from exc
    else:
        parts = random_split(len(rows), val, test, seed)

    # Leakage: val/test rows equal to a training row (none once duplicates are dropped).
    leaked = 0
    if duplicates and mode == "keep":
        train_hashes = np.sort(hashes[rows[parts["train"]]])
        leaked = sum(_count_in(hashes[rows[parts[s]]], train_hashes) for s in SPLITS[1:])

    tables = {}
    for name, part in parts.items():
        idx = rows[part]
        take = pa.array(idx)
        arrays = _each(
            lambda n: pa.array(columns[n][idx]) if n in numeric else columns[n].take(take),  # noqa: B023
            order,
        )
        target_values = pa.array(y[idx]) if task == "regression" else y.take(take)
        tables[name] = pa.Table.from_arrays([*arrays, target_values], names=[*order, target])

    with atomic_dir(out_dir) as tmp, ThreadPoolExecutor(len(tables)) as pool:
        # Arrow releases the GIL while it encodes: the files are written side by side, and
        # beside the fit.
        done = [pool.submit(write_split, t, tmp / f"{n}.parquet") for n, t in tables.items()]
        spec = encode.fit(
            tables["train"].to_pandas(split_blocks=True),
            [n for n in order if n in numeric],
            [n for n in order if n in categorical],
            target,
            task,
        )
        meta = {
            "kind": "table",
            "task": task,
            "target": target,
            "classes": classes,
            "input": spec,
            "source": {"file": path.as_posix(), "rows": n_file},
            "rows": {name: len(part) for name, part in parts.items()},
            "counts": {
                name: np.bincount(labels[part], minlength=len(classes)).tolist()
                for name, part in parts.items()
            }
            if task == "classification"
            else {},
            "dropped": {
                "missing_target": n_missing,
                "duplicates": duplicates if mode == "drop" else 0,
            },
            "duplicates": {"mode": mode, "rows": duplicates},
            "leakage": {"duplicate_rows_across_splits": leaked},
        }
        for future in done:
            future.result()
        write_json(tmp / "meta.json", meta)
    return meta


def write_split(table: pa.Table, path: Path) -> None:
    """One prepared split: row groups of ROW_GROUP rows; the same table gives the same bytes.
    Categories arrive as dictionary arrays and are written as their dictionary pages (no
    re-hashing); no Arrow schema is stored, so readers get plain strings. Numbers are not
    dictionary-encoded (it doubled the write time for nothing), and no column statistics are kept
    (the loader reads whole row groups). The format versions are pinned;
    the footer names the writer (`parquet-cpp-arrow <version>`, no option changes it), so the
    bytes hold while pyarrow is pinned (requirements/lock.txt)."""
    pq.write_table(
        table.replace_schema_metadata(None),
        path,
        row_group_size=ROW_GROUP,
        compression="snappy",
        use_dictionary=[f.name for f in table.schema if pa.types.is_dictionary(f.type)],
        store_schema=False,
        write_statistics=False,  # min/max per page: nothing here reads them (17% of the write)
        version="2.6",
        data_page_version="1.0",
    )


def describe(meta: dict[str, Any]) -> str:
    """The line `prepare` prints."""
    spec = meta["input"]
    kinds = [c["type"] for c in spec["columns"]]
    rows = meta["rows"]
    dropped = meta["dropped"]
    what = f"{len(meta['classes'])} classes" if meta["task"] == "classification" else "regression"
    return (
        f"prepare: table {meta['source']['file']}: {sum(rows.values())} rows "
        f"(train {rows['train']}, val {rows['val']}, test {rows['test']}), target "
        f"{meta['target']!r} ({what}), {len(kinds)} features ({kinds.count(NUMERIC)} numeric, "
        f"{kinds.count(CATEGORICAL)} categorical; {spec['encoded_width']} encoded); dropped "
        f"{dropped['missing_target']} rows without target, {dropped['duplicates']} duplicates; "
        f"{meta['leakage']['duplicate_rows_across_splits']} rows duplicated across splits"
    )
