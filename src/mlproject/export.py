"""Stage `export`: ONNX model, checked and compared with PyTorch, plus a model card.

The ONNX file has a dynamic batch dimension and its weights inside (one self-contained file).
`onnx.checker` validates it; onnxruntime must match PyTorch on the real test images within
`export.parity_atol`, or the stage fails and writes nothing. models/model_card.json records the
lineage (git commit, data hash from data.dvc), params, metrics, input spec, classes and settings.
"""

from __future__ import annotations

import hashlib
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from .config import ConfigError, load_params
from .data import load_split
from .io import atomic_path, read_json, write_json
from .lineage import dvc_tracked_info, git_commit
from .preprocess import normalize
from .train import CHECKPOINT, PREPARED, load_checkpoint

ONNX_PATH = Path("models/model.onnx")
CARD_PATH = Path("models/model_card.json")
METRICS = Path("reports/eval/metrics.json")
INPUT_NAME, OUTPUT_NAME = "input", "logits"


class ParityError(RuntimeError):
    """onnxruntime and PyTorch disagree beyond the tolerance."""


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (example,), dynamo=True, opset_version=opset, verbose=False,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
        )
    program.save(str(path), external_data=False)


def parity(model: torch.nn.Module, onnx_path: Path, x: np.ndarray) -> float:
    """Max |onnxruntime - PyTorch| over the logits of x."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ort_logits = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(x)).numpy()
    return float(np.abs(ort_logits - torch_logits).max())


def export(cfg: DictConfig, prepared: Path = PREPARED, checkpoint: Path = CHECKPOINT,
           onnx_path: Path = ONNX_PATH, card_path: Path = CARD_PATH,
           metrics_path: Path = METRICS) -> dict[str, Any]:
    import onnx
    import onnxruntime

    model, payload = load_checkpoint(checkpoint)
    spec = payload["input"]
    x_test, _ = load_split(prepared, "test")
    x = normalize(x_test, spec["mean"], spec["std"])

    with atomic_path(onnx_path) as tmp:
        export_onnx(model, torch.from_numpy(x[:2]), tmp, int(cfg.export.opset))
        onnx.checker.check_model(str(tmp), full_check=True)
        max_diff = parity(model, tmp, x)
        if not max_diff <= float(cfg.export.parity_atol):
            raise ParityError(f"export: onnxruntime differs from PyTorch by {max_diff:.3g} "
                              f"(> export.parity_atol = {cfg.export.parity_atol}); not written.")
        blob = tmp.read_bytes()

    card = {
        "name": f"{cfg.data.name}-{type(model).__name__.lower()}",
        "format": "onnx",
        "file": onnx_path.name,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "size_bytes": len(blob),
        "lineage": {"git": git_commit(), "data": dvc_tracked_info("data.dvc"),
                    "checkpoint_epoch": payload["epoch"]},
        "model": {"target": payload["config"]["model"]["_target_"],
                  "parameters": sum(p.numel() for p in model.parameters())},
        "params": payload["config"],
        "metrics": {"test": read_json(metrics_path) if metrics_path.exists() else None,
                    "val": payload["metrics"]},
        "input": {"name": INPUT_NAME, "datatype": "FP32",
                  "shape": [-1, spec["channels"], spec["height"], spec["width"]], **spec,
                  "scale": "pixel / 255, then (x - mean) / std per channel"},
        "output": {"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, len(payload["classes"])],
                   "postprocess": "softmax over logits gives class probabilities"},
        "classes": payload["classes"],
        "export": {"exporter": "torch.onnx.export(dynamo=True)", "opset": int(cfg.export.opset),
                   "dynamic_axes": {INPUT_NAME: {"0": "batch"}, OUTPUT_NAME: {"0": "batch"}},
                   "torch": torch.__version__.split("+")[0], "onnx": onnx.__version__,
                   "onnxruntime": onnxruntime.__version__,
                   "parity": {"max_abs_diff": max_diff, "atol": float(cfg.export.parity_atol),
                              "samples": len(x)}},
    }
    write_json(card_path, card)
    return card


def main() -> int:
    try:
        card = export(load_params())
    except (ConfigError, ParityError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"export: {ONNX_PATH} ({card['size_bytes'] / 1024:.0f} KiB, opset {card['export']['opset']}), "
          f"parity max |diff| {card['export']['parity']['max_abs_diff']:.2e} on "
          f"{card['export']['parity']['samples']} test images; card {CARD_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
