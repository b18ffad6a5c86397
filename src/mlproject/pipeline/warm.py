"""Compile the pipeline's imports to bytecode ahead of the first `make repro` in a new environment.

    python -m mlproject.pipeline.warm      # make install starts it in the background

A new environment holds no bytecode, so the first `train` and `export` each spend seconds
compiling torch, Hydra, DVCLive and the ONNX exporter before doing any work. `make install`
starts this at low priority right after filling a new environment: the compiling then happens
on the core that the data step and DVC leave idle, and the stages find it done. It only imports
(no stage runs, nothing is written but bytecode), and it is safe beside the stages: Python
writes bytecode files atomically. A module that fails to import here is left to the stage that
needs it, which reports the error itself.
"""

from __future__ import annotations

import importlib
import os

# In the order the stages need them: train (its optimizer imports torch._dynamo, its tracking
# DVCLive), then evaluate and export (torch.onnx's exporter, onnxscript, onnxruntime's parity).
MODULES = (
    "mlproject.pipeline.train",
    "torch._dynamo",
    "dvclive",
    "mlproject.pipeline.evaluate",
    "mlproject.pipeline.export",
    "torch.onnx",
    "torch.export",
    "onnxscript",
    "onnx",
    "onnxruntime",
    "mlproject.monitor.profile",
)


def main() -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: the other one is the stages'
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # the stage that needs it will say what is wrong
            continue
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
