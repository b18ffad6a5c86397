"""The demo table: vega-datasets' `cars` (406 cars, 9 columns) as `data/cars.csv`.

Read from the JSON file the package ships, found without importing vega_datasets (which imports
pandas, slowly), and written with the csv module, a fixed column order, the JSON's own number
text and `\\n` line ends: the same bytes on every machine, so `data.dvc` holds everywhere.
"""

from __future__ import annotations

import csv
import io
import json
from importlib.util import find_spec
from pathlib import Path

from ...core.io import atomic_write_bytes

COLUMNS = [
    "Name",
    "Miles_per_Gallon",
    "Cylinders",
    "Displacement",
    "Horsepower",
    "Weight_in_lbs",
    "Acceleration",
    "Year",
    "Origin",
]


class _Number(str):
    """A JSON number kept as the text the file spells it with (no float round trip)."""


def cars_json() -> Path:
    """The cars.json that vega-datasets ships."""
    spec = find_spec("vega_datasets")
    folders = list(spec.submodule_search_locations or []) if spec else []
    found = [Path(f) / "_data" / "cars.json" for f in folders]
    found = [f for f in found if f.is_file()]
    if not found:
        raise FileNotFoundError(
            "vega_datasets/_data/cars.json not found: install the `train` extra "
            "(vega-datasets ships the cars table)."
        )
    return found[0]


def cars_csv() -> bytes:
    """The demo table's exact CSV bytes."""
    records = json.loads(
        cars_json().read_text(encoding="utf-8"), parse_float=_Number, parse_int=_Number
    )
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(COLUMNS)
    for record in records:
        writer.writerow(["" if record.get(c) is None else str(record[c]) for c in COLUMNS])
    return out.getvalue().encode("utf-8")


def write_cars(path: str | Path) -> int:
    """Write the demo table to path (atomically); returns the number of rows."""
    blob = cars_csv()
    atomic_write_bytes(path, blob)
    return blob.count(b"\n") - 1


DIABETES_COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6", "progression"]


def diabetes_csv() -> bytes:
    """The regression demo's exact CSV bytes: scikit-learn's diabetes data (442 patients, ten
    baseline measurements, `progression` a year later), read from the raw files scikit-learn
    ships without importing it; the numbers keep the files' own text (the target's "1.51e+02"
    written as 151)."""
    import gzip

    spec = find_spec("sklearn")
    folders = list(spec.submodule_search_locations or []) if spec else []
    found = [Path(f) / "datasets" / "data" for f in folders]
    found = [f for f in found if (f / "diabetes_data_raw.csv.gz").is_file()]
    if not found:
        raise FileNotFoundError(
            "sklearn/datasets/data/diabetes_data_raw.csv.gz not found: install the `train` extra."
        )
    with gzip.open(found[0] / "diabetes_data_raw.csv.gz", "rt", encoding="utf-8") as f:
        rows = [line.split() for line in f if line.strip()]
    with gzip.open(found[0] / "diabetes_target.csv.gz", "rt", encoding="utf-8") as f:
        target = [format(float(line), "g") for line in f if line.strip()]
    if len(rows) != len(target):
        raise ValueError(f"diabetes: {len(rows)} rows of data, {len(target)} targets")
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(DIABETES_COLUMNS)
    writer.writerows([*row, y] for row, y in zip(rows, target, strict=True))
    return out.getvalue().encode("utf-8")


def write_diabetes(path: str | Path) -> int:
    """Write the regression demo to path (atomically); returns the number of rows."""
    blob = diabetes_csv()
    atomic_write_bytes(path, blob)
    return blob.count(b"\n") - 1
