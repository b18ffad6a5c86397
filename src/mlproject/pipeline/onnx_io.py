"""Writing a PyTorch module as ONNX: the dynamo exporter on one float input with a dynamic batch
dimension, then bytes that depend on the model only (make_portable). Used by every data kind's
export (mlproject.kinds); kept apart from the export stage so that a kind imports only this."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

INPUT_NAME, OUTPUT_NAME, PROBS_NAME = "input", "logits", "probabilities"


def export_onnx(
    model: torch.nn.Module,
    example: torch.Tensor,
    path: Path,
    opset: int,
    input_names: list[str] | tuple[str, ...] = (INPUT_NAME,),
) -> None:
    """The dynamo exporter on one float input with a dynamic batch dimension; one file."""
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
            input_names=list(input_names),
            # The task's deploy module names its outputs (mlproject.tasks: logits and
            # probabilities, or prediction).
            output_names=list(getattr(model, "output_names", (OUTPUT_NAME, PROBS_NAME))),
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
