"""The images kind: a folder of class folders (data/<root>/<class>/<image>), or for
`task: regression` images anywhere under root with a CSV of their numbers (targets.py); a
fixed-size uint8 [C, H, W] input standardized per channel, CNNs or MLPs on it.

The implementations live in this package (prepare.py, targets.py, explain.py, modules.py,
serving.py, monitoring.py) and in the image-folder modules of the pipeline it builds on (pipeline/data.py,
splits.py, loader.py, augment.py, core/preprocess.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..base import DataKind, SplitSchema

INPUT_NAME = "input"


@dataclass
class ImagesSchema:
    """The `data:` section of an image folder (conf/data/digits.yaml documents each key)."""

    name: str = "digits"
    kind: str = "images"
    root: str = "data/digits"
    # classification: class folders; regression: a number per image, from `targets`.
    task: str = "classification"
    targets: Any = None  # regression: a CSV under root of (image path under root, value)
    extensions: list[str] = field(default_factory=lambda: [".png"])
    image_size: list[int] = field(default_factory=lambda: [8, 8])
    channels: int = 1
    resize: str = "stretch"
    split: SplitSchema = field(default_factory=SplitSchema)
    min_images_per_class: int = 5
    # auto: stream a split from disk when its pixels exceed memory_budget_mb (pipeline/loader.py).
    in_memory: Any = "auto"
    memory_budget_mb: int = 1024
    workers: int = 2


class Images(DataKind):
    name = "images"
    schema = ImagesSchema
    choices = {"data.resize": ("stretch", "pad"), "data.channels": (1, 3)}
    tasks = ("classification", "regression")  # data.task; absent: classification

    def check_config(self, data_cfg: Any, source: str) -> None:
        from ...pipeline.config import ConfigError

        size = data_cfg.image_size
        if len(size) != 2 or any(int(v) < 1 for v in size):
            raise ConfigError(
                f"{source}: 'data.image_size' must be [height, width], got {list(size)}.",
                key="data.image_size",
            )
        task = data_cfg.get("task", "classification")
        if task not in self.tasks:
            raise ConfigError(
                f"{source}: 'data.task' is {task!r}; expected one of {self.tasks}.",
                key="data.task",
            )
        regression = task == "regression"
        targets = data_cfg.get("targets")
        if regression and not targets:
            raise ConfigError(
                f"{source}: 'data.targets' is empty; task regression reads each image's number "
                "from a CSV under data.root (e.g. targets: targets.csv).",
                key="data.targets",
            )
        if not regression and targets:
            raise ConfigError(
                f"{source}: 'data.targets' is set for task classification, whose labels are the "
                "class folders; set task: regression, or remove data.targets.",
                key="data.targets",
            )
        if targets and (Path(str(targets)).is_absolute() or ".." in Path(str(targets)).parts):
            raise ConfigError(
                f"{source}: 'data.targets' is {targets!r}; name a file under data.root.",
                key="data.targets",
            )

    def model_kwargs(self, spec: dict[str, Any], num_outputs: int) -> dict[str, Any]:
        return {
            "in_channels": spec["channels"],
            "num_classes": num_outputs,
            "image_size": [spec["height"], spec["width"]],
        }

    def prepare(self, cfg: Any, out_dir: Path) -> dict[str, Any]:
        from .prepare import prepare

        return prepare(cfg, out_dir)

    def describe_prepared(self, meta: dict[str, Any]) -> str:
        from .prepare import describe

        return describe(meta)

    def open_split(self, prepared: Path, split: str, data_cfg: Any, device: Any):
        from ...pipeline.loader import open_split

        return open_split(prepared, split, data_cfg, device)

    def input_module(self, spec: dict[str, Any]):
        from .modules import Normalizer

        return Normalizer(spec["mean"], spec["std"])

    def augmenter(self, augment_cfg: Any, spec: dict[str, Any], seed: int):
        from ...pipeline.augment import build_augment

        return build_augment(augment_cfg, [spec["height"], spec["width"]], spec["channels"], seed)

    def export_onnx(self, model: Any, spec: dict[str, Any], path: Path, opset: int) -> None:
        import torch

        from ...pipeline.onnx_io import export_onnx

        example = torch.zeros(2, spec["channels"], spec["height"], spec["width"])
        export_onnx(model, example, path, opset, input_names=[INPUT_NAME])

    def parity_inputs(self, prepared: Path, spec: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        import torch

        from ...core.preprocess import normalize
        from ...pipeline.data import load_split

        pixels, _ = load_split(prepared, "test")
        x = normalize(pixels, spec["mean"], spec["std"])
        return {INPUT_NAME: x}, torch.from_numpy(x)

    def input_names(self, spec: dict[str, Any]) -> list[str]:
        return [INPUT_NAME]

    def card_input(self, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": INPUT_NAME,
            "datatype": "FP32",
            "shape": [-1, spec["channels"], spec["height"], spec["width"]],
            **spec,
            "scale": "pixel / 255, then (x - mean) / std per channel",
        }

    def explain(self, model: Any, payload: dict[str, Any], prepared: Path, out_dir: Path):
        from .explain import describe, explain

        summary = explain(model, payload, prepared, out_dir)
        return {**summary, "description": describe(summary)}
