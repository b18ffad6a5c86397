"""`mlproject <stage>`: the pipeline's entry points under one command."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "params": ("mlproject.pipeline.config", "write params.yaml from conf/ (--check to compare)"),
    "data": (
        "mlproject.pipeline.data",
        "make data/ present (DVC remote, else the embedded demo data)",
    ),
    "prepare": ("mlproject.pipeline.prepare", "stage: validate and split the raw data"),
    "train": ("mlproject.pipeline.train", "stage: train the model"),
    "evaluate": ("mlproject.pipeline.evaluate", "stage: test-split metrics and plots"),
    "export": ("mlproject.pipeline.export", "stage: ONNX export, parity check, model card"),
}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        print("usage: mlproject <command> [args]\n")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:<10} {text}")
        return 0 if not args or args[0] in ("-h", "--help") else 2
    if args[0] in ("prepare", "train", "evaluate", "export"):  # pinned, as dvc.yaml runs them
        from .pipeline.run import main as run_stage

        return run_stage([args[0]])
    module = importlib.import_module(COMMANDS[args[0]][0])
    sys.argv = [f"mlproject {args[0]}", *args[1:]]
    return module.main(*([args[1:]] if args[0] in ("params", "data") else []))


if __name__ == "__main__":
    raise SystemExit(main())
