"""One entry point for every pipeline stage: pin the numerics, then run the stage's `main()`.

    python -m mlproject.pipeline train      # what dvc.yaml runs (prepare, train, evaluate, ...)

Environment variables that fix threads and instruction sets are read by torch, MKL, oneDNN and
numpy when they load, so they are set here, before the stage module (and torch) is imported.
`python -m mlproject.pipeline.train` still runs a stage, with the machine's own settings.
"""

from __future__ import annotations

import importlib
import sys

from .determinism import pin_environment, pin_torch, read_pinning

STAGES = {
    "prepare": "mlproject.pipeline.prepare",
    "train": "mlproject.pipeline.train",
    "evaluate": "mlproject.pipeline.evaluate",
    "export": "mlproject.pipeline.export",
    "explain": "mlproject.pipeline.explain",
    "profile": "mlproject.monitor.profile",
}
# Stages that never load torch need no run-time torch settings.
NO_TORCH = ("prepare", "profile")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] not in STAGES:
        print(f"usage: python -m mlproject.pipeline {{{','.join(STAGES)}}}", file=sys.stderr)
        return 2
    try:
        pinning = read_pinning()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    pin_environment(pinning)
    module = importlib.import_module(STAGES[args[0]])
    if args[0] not in NO_TORCH:
        pin_torch(pinning)
    return module.main()


if __name__ == "__main__":
    raise SystemExit(main())
