"""What every data kind answers: the interface the stages, server and monitor call.

A kind is stateless; what it learned from the data (image size and normalization, a table's
columns and fitted preprocessing) is its *spec*, a JSON-able dict with `"kind": <name>` that
prepare writes to `outputs/prepared/meta.json["input"]`, the checkpoint carries as `input` and
the model card as `input`. Methods take the spec (or the card) and never keep state.

Pipeline methods may import PyTorch (lazily, inside the method); `serving` and `monitoring`
return torch-free modules, loaded by name so the server image and the monitor never load the
training side.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import Any


@dataclass
class SplitSchema:
    """`data.split`: the validation and test fractions and the split's seed (every kind)."""

    val: float = 0.15
    test: float = 0.15
    seed: int = 42


class DataKind:
    """Base class: a kind subclasses it and implements every method below."""

    name: str = ""
    # The dataclass that types and checks the `data:` config section of this kind
    # (pipeline.config.validate merges the section into it; an unknown key is an error).
    schema: type = object
    # Allowed values of some keys, checked after the schema merge: {"data.key": (values...)}.
    choices: dict[str, tuple] = {}

    # --------------------------------------------------------------- configuration
    def check_config(self, data_cfg: Any, source: str) -> None:
        """Kind-specific checks of the `data:` section after the schema merge (raise ConfigError
        naming the key)."""

    def model_kwargs(self, spec: dict[str, Any], num_outputs: int) -> dict[str, Any]:
        """Keyword arguments every model of this kind is built with, besides its conf/model
        keys (images: in_channels, num_classes, image_size; a table: in_features, ...)."""
        raise NotImplementedError

    # --------------------------------------------------------------- stage prepare
    def prepare(self, cfg: Any, out_dir: Path) -> dict[str, Any]:
        """Read and validate the raw data, split it, fit the preprocessing on the training split
        and write out_dir atomically: the splits and meta.json (classes, input spec, counts,
        leakage). Returns meta. Bad data raises DataError naming the file, column or row."""
        raise NotImplementedError

    def describe_prepared(self, meta: dict[str, Any]) -> str:
        """The line `prepare` prints."""
        raise NotImplementedError

    # --------------------------------------------------------------- stages train, evaluate
    def open_split(self, prepared: Path, split: str, data_cfg: Any, device: Any):
        """A prepared split as a training source: `len()`, `.streamed`, `.labels` (numpy) and
        `.batches(batch_size, generator=None, rank=0, world=1)` yielding (indices, raw batch,
        targets) tensors on the device, the same batches in memory or streamed."""
        raise NotImplementedError

    def input_module(self, spec: dict[str, Any]):
        """A torch module: raw batch (as open_split yields it) -> the model's float input."""
        raise NotImplementedError

    def augmenter(self, augment_cfg: Any, spec: dict[str, Any], seed: int):
        """A callable raw batch -> raw batch for training, or None (augment: none)."""
        raise NotImplementedError

    # --------------------------------------------------------------- stage export
    def export_onnx(self, model: Any, spec: dict[str, Any], path: Path, opset: int) -> None:
        """Write the deployable ONNX graph of `model` (a module returning logits and
        probabilities from the model's float input) to path: it takes what clients send
        (images: the normalized NCHW tensor; a table: one raw input per column)."""
        raise NotImplementedError

    def parity_inputs(self, prepared: Path, spec: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        """The test split twice: as the exported graph's feed (name -> numpy array) and as the
        PyTorch model's float input tensor, row for row."""
        raise NotImplementedError

    def input_names(self, spec: dict[str, Any]) -> list[str]:
        """The exported graph's input names, in order."""
        raise NotImplementedError

    def card_input(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The model card's `input` section: the spec, plus what a client needs to call the
        ONNX graph (tensor names, datatypes, shapes; how to encode a value)."""
        raise NotImplementedError

    # --------------------------------------------------------------- stage explain
    def explain(
        self, model: Any, payload: dict[str, Any], prepared: Path, out_dir: Path
    ) -> dict[str, Any]:
        """Attributions the PR report shows, written atomically to out_dir (attributions.png
        and attributions.json), for the trained `model` and its checkpoint `payload`. Returns
        the summary, with `description`: the words the stage prints."""
        raise NotImplementedError

    # --------------------------------------------------------------- torch-free sides
    @property
    def serving(self) -> ModuleType:
        """The server's side of this kind (request decoding, metadata, logged features)."""
        return import_module(f"mlproject.kinds.{self.name}.serving")

    @property
    def monitoring(self) -> ModuleType:
        """The monitor's side of this kind (per-feature summaries, drift tests, logged
        traffic)."""
        return import_module(f"mlproject.kinds.{self.name}.monitoring")
