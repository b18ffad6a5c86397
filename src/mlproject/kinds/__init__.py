"""The data kind: the one boundary between what the stages, the report, the server and the
monitor do and the kind of data they do it on (images, a table; text can come later).

Everything outside this package asks `for_config(cfg.data)` (the pipeline) or `for_spec(spec)`
(anything holding a prepared `meta.json`, a checkpoint or a model card, whose `input` section
names its kind) for a `DataKind` and calls its methods; nothing outside branches on the kind.
A new kind is a new sub-package here, one line in KINDS and a `conf/data/<name>.yaml`.

Kinds are found by name through KINDS (import strings, like Hydra's `_target_`), so that the
server and the monitor load the serving or monitoring side of one kind only, never PyTorch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from ..core.errors import ProjectError
from .base import DataKind

KINDS = {
    "images": "mlproject.kinds.images:Images",
    "table": "mlproject.kinds.table:Table",
}
DEFAULT = "images"  # a data config, meta.json, checkpoint or card without `kind` is images


class KindError(ProjectError, ValueError):
    """An unknown data kind; the message lists the known ones."""


def get(name: str | None) -> DataKind:
    """The data kind called `name` (None: images)."""
    name = name or DEFAULT
    if name not in KINDS:
        raise KindError(
            f"data.kind: unknown kind {name!r}; expected one of {sorted(KINDS)}. "
            "A new kind is a package in src/mlproject/kinds/ and an entry in KINDS."
        )
    module, _, cls = KINDS[name].partition(":")
    return getattr(import_module(module), cls)()


def for_config(data_cfg: Any) -> DataKind:
    """The kind a `data:` config section selects (`data.kind`, default images)."""
    return get(data_cfg.get("kind") if data_cfg is not None else None)


def for_spec(spec: dict[str, Any] | None) -> DataKind:
    """The kind of a model input spec (`meta.json["input"]`, `checkpoint["input"]`,
    `card["input"]`)."""
    return get((spec or {}).get("kind"))
