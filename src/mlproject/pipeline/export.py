"""Stage `export`: ONNX model, checked and compared with PyTorch, plus a model card.

The ONNX file has a dynamic batch dimension and its weights inside (one self-contained file).
What the graph takes is the data kind's (mlproject.kinds): images, the normalized NCHW tensor;
a table, one raw input per column, preprocessed inside the graph. `onnx.checker` validates it;
onnxruntime must match PyTorch on the real test split within `export.parity_atol`, or the stage
fails and writes nothing. models/model_card.json records the
lineage (data hash from data.dvc), the numerics fingerprint, params, metrics, input spec, classes and settings.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from .. import kinds
from ..core.cli import entry_point
from ..core.errors import ProjectError
from ..core.io import atomic_path, read_json, write_json
from ..core.lineage import dvc_tracked_info
from ..core.paths import DATA_DVC, EVAL_METRICS, MODEL_CARD, ONNX_MODEL
from .config import load_params
from .onnx_io import (  # noqa: F401 -- export_onnx, make_portable: this module's API before
    INPUT_NAME,
    OUTPUT_NAME,
    PROBS_NAME,
    export_onnx,
    make_portable,
    producer_version,
)
from .train import CHECKPOINT, PREPARED, load_checkpoint

ONNX_PATH = ONNX_MODEL
CARD_PATH = MODEL_CARD
METRICS = EVAL_METRICS


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


def parity(
    model: torch.nn.Module, onnx_path: Path, feed: dict[str, np.ndarray], x: torch.Tensor
) -> dict[str, float]:
    """Max |onnxruntime - PyTorch| over the same rows, the graph fed `feed` and the model `x`:
    on probabilities (the gate), and on logits, absolute and relative to the largest logit
    (reported; logits grow with confidence, float32 rounding with them)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ort_logits, ort_probs = session.run([OUTPUT_NAME, PROBS_NAME], feed)
    with torch.no_grad():
        torch_logits, torch_probs = (t.numpy() for t in model(x))
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
    kind = kinds.for_spec(spec)
    feed, x = kind.parity_inputs(Path(prepared), spec)

    with atomic_path(onnx_path) as tmp:
        kind.export_onnx(model, spec, tmp, int(cfg.export.opset))
        onnx.checker.check_model(str(tmp), full_check=True)
        diffs = parity(model, tmp, feed, x)
        if not diffs["max_abs_diff"] <= float(cfg.export.parity_atol):
            raise ParityError(
                f"export: onnxruntime probabilities differ from PyTorch by "
                f"{diffs['max_abs_diff']:.3g} (> export.parity_atol = "
                f"{cfg.export.parity_atol}); not written."
            )
        blob = tmp.read_bytes()

    card = {
        "name": f"{cfg.data.name}-{type(trained).__name__.lower()}",
        # What the model predicts (mlproject.tasks): the report's significance test and the
        # gate's metrics follow it.
        "task": payload.get("task", "classification"),
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
        "input": kind.card_input(spec),
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
                name: {"0": "batch"}
                for name in (*kind.input_names(spec), OUTPUT_NAME, PROBS_NAME)
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
        f"{card['export']['parity']['samples']} test items; card {CARD_PATH}"
    )
    from .tracking import log_run  # MLflow, when on (imported only then)

    log_run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
