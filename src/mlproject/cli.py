"""`mlproject <command>`: the pipeline's entry points under one command.

mlproject params [--check] [overrides...]   write params.yaml from conf/ (or compare)
mlproject data [demo [DIR]]                 make data/ present
mlproject prepare|train|evaluate|export     run one stage, pinned as dvc.yaml runs it
"""

from __future__ import annotations

import argparse
import importlib

from .core.cli import entry_point, subcommands

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
STAGES = ("prepare", "train", "evaluate", "export")  # pinned, as dvc.yaml runs them


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser, add = subcommands("mlproject", __doc__)
    for name, (_, text) in COMMANDS.items():
        sub = add(name, text)
        if name not in STAGES:
            sub.add_argument("args", nargs=argparse.REMAINDER, help="passed on to the command")
    args = parser.parse_args(argv)
    if args.command in STAGES:
        from .pipeline.run import main as run_stage

        return run_stage([args.command])
    return importlib.import_module(COMMANDS[args.command][0]).main(args.args)


if __name__ == "__main__":
    raise SystemExit(main())
