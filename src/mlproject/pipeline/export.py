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

from .. import kinds, tasks
from ..core.cli import entry_point
from ..core.errors import ProjectError
from ..core.io import atomic_path, read_json, write_json
from ..core.lineage import dvc_tracked_info
from ..core.paths import DATA_DVC, EVAL_METRICS, MODEL_CARD, ONNX_MODEL
from ..tasks import torch_heads
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


WithProbabilities = torch_heads.WithProbabilities  # a classifier's deployed graph


def parity(
    model: torch.nn.Module, onnx_path: Path, feed: dict[str, np.ndarray], x: torch.Tensor
) -> dict[str, float]:
    """Max |onnxruntime - PyTorch| over the same rows, the graph fed `feed` and the model `x`.
    `max_abs_diff` is on the last output (a classifier's probabilities, a regression model's
    prediction), the gate; for a classifier also on the logits, absolute and relative to the
    largest logit (reported; logits grow with confidence, float32 rounding with them)."""
    import onnxruntime as ort

    names = list(getattr(model, "output_names", (OUTPUT_NAME, PROBS_NAME)))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ours = session.run(names, feed)
    with torch.no_grad():
        theirs = [t.numpy() for t in model(x)]
    out = {"max_abs_diff": float(np.abs(ours[-1] - theirs[-1]).max())}
    # A number in the target's units is compared relative to its size (float32 rounding grows
    # with it); probabilities are at most 1, so this changes nothing for a classifier.
    out["scale"] = max(1.0, float(np.abs(theirs[-1]).max()))
    if len(names) > 1:
        diff = float(np.abs(ours[0] - theirs[0]).max())
        out[f"{names[0]}_max_abs_diff"] = diff
        out[f"{names[0]}_max_rel_diff"] = diff / float(np.abs(theirs[0]).max())
    return out


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
    task = tasks.get(payload.get("task"))  # classification, regression (mlproject.tasks)
    model = task.deploy(trained).eval()
    names = list(model.output_names)
    width = task.num_outputs(payload["classes"])
    spec = payload["input"]
    kind = kinds.for_spec(spec)
    feed, x = kind.parity_inputs(Path(prepared), spec)

    with atomic_path(onnx_path) as tmp:
        kind.export_onnx(model, spec, tmp, int(cfg.export.opset))
        onnx.checker.check_model(str(tmp), full_check=True)
        diffs = parity(model, tmp, feed, x)
        scale = diffs.pop("scale")
        if not diffs["max_abs_diff"] <= float(cfg.export.parity_atol) * scale:
            raise ParityError(
                f"export: onnxruntime's {names[-1]} differ from PyTorch's by "
                f"{diffs['max_abs_diff']:.3g} (> export.parity_atol = "
                f"{cfg.export.parity_atol}"
                + (f" x {scale:.3g}, the largest value" if scale > 1 else "")
                + "); not written."
            )
        blob = tmp.read_bytes()

    card = {
        "name": f"{cfg.data.name}-{payload['config']['model']['_target_'].split('.')[-1].lower()}",
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
            "name": names[0],
            "datatype": "FP32",
            "shape": [-1, width],
            "postprocess": task.OUTPUT_NOTE,
        },
        "outputs": [{"name": name, "datatype": "FP32", "shape": [-1, width]} for name in names],
        "classes": payload["classes"],
        "export": {
            "exporter": "torch.onnx.export(dynamo=True)",
            "opset": int(cfg.export.opset),
            "dynamic_axes": {name: {"0": "batch"} for name in (*kind.input_names(spec), *names)},
            "torch": torch.__version__.split("+")[0],
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "parity": {
                **{name: power_of_ten_bound(value) for name, value in diffs.items()},
                "rounding": "each difference rounded up to a power of ten (same card on any CPU)",
                "passed": True,  # the stage fails, writing nothing, when a diff exceeds atol
                "on": names[-1],
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
        f"parity max |diff| {card['parity_measured']['max_abs_diff']:.1e} on "
        f"{card['export']['parity']['on']}"
        + (
            f" ({card['parity_measured']['logits_max_rel_diff']:.1e} relative on logits)"
            if "logits_max_rel_diff" in card["parity_measured"]
            else ""
        )
        + " over "
        f"{card['export']['parity']['samples']} test items; card {CARD_PATH}"
    )
    from .tracking import log_run  # MLflow, when on (imported only then)

    log_run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
