"""The model's task, as the server sees it: `mlproject.tasks.<task>_serving` (NumPy only), found
by name as a data kind's serving side is. The task module itself does not import it, so the
pipeline's stages, which import the task module, do not depend on what the server makes of a
prediction. The protocol is in mlproject.tasks.classification_serving's docstring."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from .. import tasks


def serving(task: str | None) -> ModuleType:
    """The serving side of the task named `task` (None: classification, as in tasks.get)."""
    return import_module(f"{tasks.get(task).__name__}_serving")
