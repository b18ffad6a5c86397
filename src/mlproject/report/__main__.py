"""`python -m mlproject.report [build|gate] [--base REV] [--out DIR] ...`

    build   collect base vs workspace, write reports/pr/{report.json,report.md,plots/} (make report)
    gate    print the quality gate's checks; exit 1 when it fails                   (make gate)

The base defaults to the merge-base of HEAD with the PR's base branch (GITHUB_BASE_REF in CI),
else with main; BASE=<rev> (or --base) chooses another. Head's outputs are brought up to date
first (the stale stages run, and say so); HEAD_OUTPUTS=refuse stops with a line naming them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from ..core.cli import entry_point
from . import REPORT_DIR
from .render import gate_section, verdict_line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mlproject.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=("build", "gate"))
    parser.add_argument(
        "--base",
        default=os.environ.get("BASE") or None,
        help="base revision (default: merge-base with the PR base or main)",
    )
    parser.add_argument("--out", default=REPORT_DIR, help=f"output folder (default {REPORT_DIR})")
    parser.add_argument(
        "--from-report",
        metavar="JSON",
        help="gate: take the verdict from a report.json built in this run",
    )
    parser.add_argument(
        "--base-outputs",
        choices=("auto", "committed", "rebuild"),
        default=os.environ.get("BASE_OUTPUTS") or "auto",
        help="base outputs: committed (from git), rebuild (here), or auto: committed when they "
        "were made with head's numerics and the base's model is in the DVC cache, else pulled "
        "or rebuilt in a worktree",
    )
    parser.add_argument(
        "--head-outputs",
        choices=("refresh", "refuse", "as-is"),
        default=os.environ.get("HEAD_OUTPUTS") or "refresh",
        help="stale head outputs: refresh (run dvc repro first, the default), refuse (exit "
        "naming the stale stages) or as-is",
    )
    parser.add_argument("--no-plots", action="store_true", help="build: skip the PNGs")
    parser.add_argument("--no-latency", action="store_true", help="build: skip onnxruntime timing")
    return parser


@entry_point(error_code=2, errors=(FileNotFoundError,))  # exit 1 means "the gate failed"
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    if not args.from_report:  # never a report or a gate on outputs older than head's code
        from .ci import refresh_head
        from .diff import resolve_base

        resolve_base(args.base, ".")  # a bad BASE is named before anything runs
        refresh_head(args.head_outputs)
    if args.command == "build":
        from .build import build

        report = build(
            args.base,
            out=args.out,
            plots=not args.no_plots,
            latency=not args.no_latency,
            base_mode=args.base_outputs,
        )
        print(verdict_line(report["gate"]).lstrip("# "))
        print(
            f"wrote {args.out}/report.md, report.json and {len(report['plots'])} plot(s) "
            f"in {time.perf_counter() - start:.1f} s"
        )
        return 0
    if args.from_report:
        from .build import load_report

        gate = load_report(args.from_report)["gate"]
    else:
        from .build import collect

        gate = collect(args.base, plots=False, latency=False, base_mode=args.base_outputs)["gate"]
    print(verdict_line(gate).lstrip("# "))
    if gate["checks"]:
        print(gate_section(gate))
    return 0 if gate["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
