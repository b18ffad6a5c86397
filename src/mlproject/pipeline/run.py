"""One entry point for every pipeline stage: pin the numerics, then run the stage's `main()`.

    python -m mlproject.pipeline train      # what dvc.yaml runs (prepare, train, evaluate, ...)

Environment variables that fix threads and instruction sets are read by torch, MKL, oneDNN and
numpy when they load, so they are set here, before the stage module (and torch) is imported.
The stages that use torch run in a child of the project's preload server (preload.py), which has
imported torch with the same environment already; `MLPROJECT_PRELOAD=0` runs them here.
`python -m mlproject.pipeline.train` still runs a stage, with the machine's own settings.
"""

from __future__ import annotations

import argparse
import importlib

from ..core.cli import entry_point
from ..core.errors import SettingsError
from . import preload
from .determinism import Pinning, pin_environment, pin_torch, read_pinning

STAGES = {
    "prepare": "mlproject.pipeline.prepare",
    "train": "mlproject.pipeline.train",
    "evaluate": "mlproject.pipeline.evaluate",
    "export": "mlproject.pipeline.export",
    "explain": "mlproject.pipeline.explain",
    "profile": "mlproject.monitor.profile",
}
# Stages that never load torch need no run-time torch settings, nor the preload server.
NO_TORCH = ("prepare", "profile")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mlproject.pipeline", description=__doc__.split("\n")[0]
    )
    parser.add_argument("stage", choices=list(STAGES))
    return parser


def _pinning() -> Pinning:
    try:
        return read_pinning()
    except ValueError as exc:  # a `determinism:` key of params.yaml
        raise SettingsError(str(exc)) from None


@entry_point
def main(argv: list[str] | None = None) -> int:
    stage = _parser().parse_args(argv).stage
    pin_environment(_pinning())
    if stage in NO_TORCH:
        if stage == "prepare":  # train comes next: torch loads on the other core meanwhile
            preload.start()
        return run_here(stage)
    code = preload.run_stage(stage)
    return run_here(stage) if code is None else code


@entry_point
def run_here(stage: str) -> int:
    """Run the stage in this process (the environment pinned already)."""
    pinning = _pinning()
    module = importlib.import_module(STAGES[stage])
    if stage not in NO_TORCH:
        pin_torch(pinning)
    return module.main()  # the stage's own entry_point prints its errors and timing line


if __name__ == "__main__":
    raise SystemExit(main())
