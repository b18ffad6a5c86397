"""STUB for the table-serve branch only: the lead's Table class replaces this file on merge.

Just enough for `mlproject.kinds.for_spec(card["input"]).serving` to resolve in this branch.
"""

from __future__ import annotations

from ..base import DataKind


class Table(DataKind):
    name = "table"
