"""Stage `export`: ONNX model, checked and compared with PyTorch, plus a model card.

The ONNX file has a dynamic batch dimension and its weights inside (one self-contained file).
`onnx.checker` validates it; onnxruntime must match PyTorch on the real test images within
`export.parity_atol`, or the stage fails and writes nothing. models/model_card.json records the
lineage (data hash from data.dvc), the numerics fingerprint, params, metrics, input spec, classes and settings.
"""

from __future__ import annotations

import hashlib
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from ..core.cli import entry_point
from ..core.errors import ProjectError
from ..core.io import atomic_path, read_json, write_json
from ..core.lineage import dvc_tracked_info
from ..core.paths import DATA_DVC, EVAL_METRICS, MODEL_CARD, ONNX_MODEL
from ..core.preprocess import normalize
from .config import load_params
from .data import load_split
from .train import CHECKPOINT, PREPARED, load_checkpoint

ONNX_PATH = ONNX_MODEL
CARD_PATH = MODEL_CARD
METRICS = EVAL_METRICS
INPUT_NAME, OUTPUT_NAME, PROBS_NAME = "input", "logits", "probabilities"


class ParityError(ProjectError, RuntimeError):
    """onnxruntime and PyTorch disagree beyond the tolerance."""


class WithProbabilities(torch.nn.Module):
    """The deployed graph: logits and their softmax, so clients need no post-processing."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        return logits, torch.softmax(logits, dim=1)


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    batch = torch.export.Dim("batch", min=1)
    # The exporter logs a warning per torchvision op it cannot register; we use none of them.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            opset_version=opset,
            verbose=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME, PROBS_NAME],
            dynamic_shapes=({0: batch},),
        )
    program.save(str(path), external_data=False)
    make_portable(path)


def producer_version(torch_version: str | None = None) -> str:
    """torch's public version, without the build's local suffix (`2.14.1+cu130` -> `2.14.1`):
    the CUDA and CPU builds of one release export the same graph, so they write the same bytes."""
    return (torch_version or torch.__version__).split("+")[0]


def make_portable(path: Path) -> None:
    """Bytes that depend on the model only: drop the exporter's per-node Python stack traces
    (they hold absolute source paths, so another checkout folder would get other bytes), and
    record torch's public version as the producer (not the `+cu130` / `+cpu` build suffix)."""
    import onnx

    model = onnx.load(str(path))
    model.producer_version = producer_version()

    def clean(graph) -> None:
        for node in graph.node:
            keep = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
            del node.metadata_props[:]
            node.metadata_props.extend(keep)
            for attr in node.attribute:
                for sub in [attr.g, *attr.graphs] if attr.HasField("g") else attr.graphs:
                    clean(sub)

    clean(model.graph)
    for function in model.functions:
        clean(function)
    onnx.save(model, str(path))


def parity(model: torch.nn.Module, onnx_path: Path, x: np.ndarray) -> dict[str, float]:
    """Max |onnxruntime - PyTorch| over x: on probabilities (the gate), and on logits, absolute
    and relative to the largest logit (reported; logits grow with confidence, float32 rounding
    with them)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ort_logits, ort_probs = session.run([OUTPUT_NAME, PROBS_NAME], {INPUT_NAME: x})
    with torch.no_grad():
        torch_logits, torch_probs = (t.numpy() for t in model(torch.from_numpy(x)))
    logit_diff = float(np.abs(ort_logits - torch_logits).max())
    return {
        "max_abs_diff": float(np.abs(ort_probs - torch_probs).max()),
        "logits_max_abs_diff": logit_diff,
        "logits_max_rel_diff": logit_diff / float(np.abs(torch_logits).max()),
    }


def power_of_ten_bound(value: float) -> float:
    """The smallest power of ten >= value (0 stays 0): a figure the CPU's instruction set does
    not move, where the exact difference does (onnxruntime picks its kernels by CPU)."""
    return 0.0 if value <= 0 else float(f"1e{math.ceil(math.log10(value))}")


def export(
    cfg: DictConfig,
    prepared: Path = PREPARED,
    checkpoint: Path = CHECKPOINT,
    onnx_path: Path = ONNX_PATH,
    card_path: Path = CARD_PATH,
    metrics_path: Path = METRICS,
) -> dict[str, Any]:
    import onnx
    import onnxruntime

    trained, payload = load_checkpoint(checkpoint)
    model = WithProbabilities(trained).eval()
    spec = payload["input"]
    x_test, _ = load_split(prepared, "test")
    x = normalize(x_test, spec["mean"], spec["std"])

    with atomic_path(onnx_path) as tmp:
        export_onnx(model, torch.from_numpy(x[:2]), tmp, int(cfg.export.opset))
        onnx.checker.check_model(str(tmp), full_check=True)
        diffs = parity(model, tmp, x)
        if not diffs["max_abs_diff"] <= float(cfg.export.parity_atol):
            raise ParityError(
                f"export: onnxruntime probabilities differ from PyTorch by "
                f"{diffs['max_abs_diff']:.3g} (> export.parity_atol = "
                f"{cfg.export.parity_atol}); not written."
            )
        blob = tmp.read_bytes()

    card = {
        "name": f"{cfg.data.name}-{type(trained).__name__.lower()}",
        "format": "onnx",
        "file": onnx_path.name,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "size_bytes": len(blob),
        # No git commit: the card is committed with the commit that would have to name it, so a
        # fresh clone's `make repro` would rewrite it. The registry's tag names the commit.
        "lineage": {
            "data": dvc_tracked_info(DATA_DVC),
            "checkpoint_epoch": payload["epoch"],
        },
        # What the weights' bits depend on (determinism.fingerprint): `make report` compares
        # base and head outputs only when these agree.
        "numerics": payload.get("numerics") or {},
        "model": {
            "target": payload["config"]["model"]["_target_"],
            "parameters": sum(p.numel() for p in trained.parameters()),
        },
        "params": payload["config"],
        "metrics": {
            "test": read_json(metrics_path) if metrics_path.exists() else None,
            "val": payload["metrics"],
        },
        "input": {
            "name": INPUT_NAME,
            "datatype": "FP32",
            "shape": [-1, spec["channels"], spec["height"], spec["width"]],
            **spec,
            "scale": "pixel / 255, then (x - mean) / std per channel",
        },
        "output": {
            "name": OUTPUT_NAME,
            "datatype": "FP32",
            "shape": [-1, len(payload["classes"])],
            "postprocess": "softmax over logits gives class probabilities",
        },
        "outputs": [
            {"name": name, "datatype": "FP32", "shape": [-1, len(payload["classes"])]}
            for name in (OUTPUT_NAME, PROBS_NAME)
        ],
        "classes": payload["classes"],
        "export": {
            "exporter": "torch.onnx.export(dynamo=True)",
            "opset": int(cfg.export.opset),
            "dynamic_axes": {
                name: {"0": "batch"} for name in (INPUT_NAME, OUTPUT_NAME, PROBS_NAME)
            },
            "torch": torch.__version__.split("+")[0],
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "parity": {
                **{name: power_of_ten_bound(value) for name, value in diffs.items()},
                "rounding": "each difference rounded up to a power of ten (same card on any CPU)",
                "passed": True,  # the stage fails, writing nothing, when a diff exceeds atol
                "on": PROBS_NAME,
                "atol": float(cfg.export.parity_atol),
                "samples": len(x),
            },
        },
    }
    write_json(card_path, card)
    return {**card, "parity_measured": diffs}


@entry_point(stage="export")
def main() -> int:
    card = export(load_params())
    print(
        f"export: {ONNX_PATH} ({card['size_bytes'] / 1024:.0f} KiB, opset {card['export']['opset']}), "
        f"parity max |diff| {card['parity_measured']['max_abs_diff']:.1e} on probabilities "
        f"({card['parity_measured']['logits_max_rel_diff']:.1e} relative on logits) over "
        f"{card['export']['parity']['samples']} test images; card {CARD_PATH}"
    )
    from .tracking import log_run  # MLflow, when on (imported only then)

    log_run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
