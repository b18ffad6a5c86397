"""The table kind: one CSV or Parquet file under data/, a target column, numeric and categorical
feature columns with missing values; an MLP on the encoded columns; an ONNX graph that takes the
raw columns (one input per column) and does the preprocessing inside.

values.py holds the spec (what prepare fitted on the training split) and the value rules shared by
every side; frame.py reads, validates and splits the file; encode.py fits and applies the
preprocessing and builds the ONNX graph; loader.py feeds training; explain.py measures each
column's importance; serving.py and monitoring.py are the server's and the monitor's sides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..base import DataKind, SplitSchema
from . import values


@dataclass
class TableSchema:
    """The `data:` section of a table (conf/data/cars.yaml documents each key)."""

    name: str = "table"
    kind: str = "table"
    root: str = "data"
    file: str = ""  # the CSV or Parquet file, relative to root
    target: str = ""  # the column to predict
    task: str = "classification"
    features: Any = None  # null: every column but the target and `drop`
    categorical: list[str] = field(default_factory=list)  # besides string and boolean columns
    drop: list[str] = field(default_factory=list)  # id columns and the like
    missing_target: str = "drop"  # drop | fail: rows whose target is empty
    duplicates: str = "drop"  # drop | fail | keep: identical rows (leakage across splits)
    min_rows_per_class: int = 5
    split: SplitSchema = field(default_factory=SplitSchema)
    in_memory: Any = "auto"
    memory_budget_mb: int = 1024
    workers: int = 0  # DataLoader worker processes when streaming


class Table(DataKind):
    name = "table"
    schema = TableSchema
    choices = {
        "data.task": ("classification", "regression"),
        "data.missing_target": ("drop", "fail"),
        "data.duplicates": ("drop", "fail", "keep"),
    }

    def check_config(self, data_cfg: Any, source: str) -> None:
        from ...pipeline.config import ConfigError

        for key in ("file", "target"):
            if not data_cfg.get(key):
                raise ConfigError(
                    f"{source}: 'data.{key}' is empty; a table names its "
                    + ("file under data.root." if key == "file" else "target column."),
                    key=f"data.{key}",
                )
        if Path(str(data_cfg.file)).suffix.lower() not in (".csv", ".parquet", ".pq"):
            raise ConfigError(
                f"{source}: 'data.file' is {data_cfg.file!r}; a table is a .csv or .parquet file.",
                key="data.file",
            )

    def model_kwargs(self, spec: dict[str, Any], num_outputs: int) -> dict[str, Any]:
        return {"in_features": values.encoded_width(spec), "num_classes": num_outputs}

    def prepare(self, cfg: Any, out_dir: Path) -> dict[str, Any]:
        from .frame import prepare

        return prepare(cfg.data, out_dir)

    def describe_prepared(self, meta: dict[str, Any]) -> str:
        from .frame import describe

        return describe(meta)

    def open_split(self, prepared: Path, split: str, data_cfg: Any, device: Any):
        from ...core.io import read_json
        from .loader import open_split

        meta = read_json(Path(prepared) / "meta.json")
        return open_split(prepared, split, data_cfg, device, meta["input"], meta)

    def input_module(self, spec: dict[str, Any]):
        import torch

        return torch.nn.Identity()  # the loader yields the encoded float32 rows

    def augmenter(self, augment_cfg: Any, spec: dict[str, Any], seed: int):
        from ...pipeline.config import ConfigError

        if augment_cfg is not None and augment_cfg.get("name", "none") != "none":
            raise ConfigError(
                f"augment: {augment_cfg.get('name')!r} augments images; a table takes "
                "augment=none.",
                key="augment",
            )
        return None

    def export_onnx(self, model: Any, spec: dict[str, Any], path: Path, opset: int) -> None:
        from .encode import export

        export(model, spec, path, opset)

    def parity_inputs(self, prepared: Path, spec: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        import pandas as pd
        import torch

        from .encode import encode, feed

        frame = pd.read_parquet(Path(prepared) / "test.parquet")
        return feed(frame, spec), torch.from_numpy(encode(frame, spec))

    def input_names(self, spec: dict[str, Any]) -> list[str]:
        return values.column_names(spec)

    def card_input(self, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            **spec,
            "inputs": [
                {"name": c["name"], "datatype": c["datatype"], "shape": [-1, 1]}
                for c in spec["columns"]
            ],
            "missing": "a number: NaN (null in JSON); a category: the empty string (null in JSON)",
        }

    def explain(self, model: Any, payload: dict[str, Any], prepared: Path, out_dir: Path):
        import pandas as pd
        import torch

        from ... import tasks
        from ...core.io import read_json
        from .encode import encode, labels
        from .explain import explain_table

        spec = payload["input"]
        meta = read_json(Path(prepared) / "meta.json")
        frame = pd.read_parquet(Path(prepared) / "test.parquet")
        task = tasks.get(payload.get("task"))  # what a shuffled column worsens: its metric

        @torch.no_grad()
        def predict(rows):
            return task.predicted(model(torch.from_numpy(encode(rows, spec))))

        summary = explain_table(
            predict,
            frame,
            labels(frame, meta),
            values.column_names(spec),
            out_dir,
            metric=task.IMPORTANCE,
        )
        return {
            **summary,
            "description": f"permutation importance of {len(spec['columns'])} columns "
            f"over {len(frame)} test rows",
        }
