"""A table's values and spec, shared by every side of the table kind (standard library only).

The spec (prepared meta.json["input"], checkpoint["input"], model card["input"]) is:

    {"kind": "table", "task": "classification", "target": "<column>",
     "columns": [                                   # the model's features, in this order
        {"name": "Horsepower", "type": "numeric", "datatype": "FP32",
         "fill": <training median>, "mean": <of filled training values>, "std": <same, >= 1e-6>,
         "min": ..., "max": ..., "missing_rate": <share missing in training>},
        {"name": "Origin", "type": "categorical", "datatype": "BYTES",
         "categories": ["Europe", "Japan", "USA"],  # seen in training, sorted
         "missing_rate": ...},
     ],
     "encoded_width": <sum of column widths>}

Encoding (in PyTorch training, in the exported ONNX graph, anywhere): a numeric column is one
slot, (value, or `fill` when missing, - mean) / std; a categorical column is a one-hot block of
len(categories) + 1 slots, the last one for a value never seen in training. A missing number is
NaN (`null` in JSON); a missing category is the empty string (`null` in JSON), a category like
any other: seen in training or not.
"""

from __future__ import annotations

import math
from typing import Any

MISSING_CATEGORY = ""
NUMERIC, CATEGORICAL = "numeric", "categorical"


def category_value(value: Any) -> str:
    """The string a categorical value is matched by, the same in training and serving:
    missing (None, NaN) -> "", booleans -> "True"/"False", whole numbers -> "4" (not "4.0"),
    anything else -> str(value)."""
    if value is None:
        return MISSING_CATEGORY
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        if math.isnan(value):
            return MISSING_CATEGORY
        if value.is_integer():
            return str(int(value))
        return repr(value)
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        return category_value(value.item())
    return str(value)


def columns(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec["columns"])


def column_names(spec: dict[str, Any]) -> list[str]:
    return [c["name"] for c in spec["columns"]]


def width(column: dict[str, Any]) -> int:
    """Slots a column takes in the encoded input."""
    return 1 if column["type"] == NUMERIC else len(column["categories"]) + 1


def encoded_width(spec: dict[str, Any]) -> int:
    return sum(width(c) for c in spec["columns"])


def slices(spec: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Each column's [start, stop) in the encoded input."""
    out, start = {}, 0
    for column in spec["columns"]:
        out[column["name"]] = (start, start + width(column))
        start += width(column)
    return out
