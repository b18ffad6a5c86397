"""Sweeps and HPO against plain DVC experiments, side by side in one run.

    make bench-sweep                      # or: python benchmarks/scale_sweep.py [--epochs 2]

Two temporary projects made from this checkout (separate caches, so nothing is shared):
  A: 4 experiments one after another (`dvc exp run -S train.lr=...`);
  B: the same 4 as a sweep, `python -m mlproject.experiments.sweep run --jobs 2` (DVC's task
     queue).
Then, in turns (--rounds, 3 by default), a plain `dvc exp run` in A and a one-trial study
`python -m mlproject.experiments.hpo --trials 1` in B with the same overrides (a new learning
rate each round, so neither comes from DVC's run cache): the whole HPO command, Optuna, its
SQLite study and its reports included, against the experiment alone.
Targets (issue 11): sweep <= 0.75x the sequential time; an HPO trial <= 1.10x a plain run.
On a shared or loaded machine the figures move; the ratios, measured in one run, move less;
alternating the two spreads the machine's drift over both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import make_project, run  # noqa: E402

LRS = ["0.001", "0.003", "0.01", "0.03"]
HPO_LRS = ["0.005", "0.006", "0.007", "0.008", "0.009"]


def timed(args, cwd) -> float:
    start = time.perf_counter()
    run(args, cwd, timeout=3600)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="train.epochs of every experiment")
    parser.add_argument("--jobs", type=int, default=2, help="queue workers of the sweep")
    parser.add_argument(
        "--rounds", type=int, default=3, choices=range(1, len(HPO_LRS) + 1),
        help="plain run / HPO trial pairs, in turns",
    )  # fmt: skip
    args = parser.parse_args()
    epochs = f"train.epochs={args.epochs}"
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        a = make_project(Path(tmp) / "a")
        b = make_project(Path(tmp) / "b")
        # prepare is shared by every experiment: run it once in each project, outside the timing.
        for repo in (a, b):
            run(["dvc", "repro", "prepare"], repo)
            run(["git", "commit", "-qam", "prepared"], repo, check=False)

        print(f"4 experiments ({epochs}, train.lr={','.join(LRS)}), each the whole pipeline")
        sequential = sum(
            timed(["dvc", "exp", "run", "-S", epochs, "-S", f"train.lr={lr}"], a) for lr in LRS
        )
        swept = timed(
            [py, "-m", "mlproject.experiments.sweep", "run", "-S", epochs, "-S",
             f"train.lr={','.join(LRS)}", "--jobs", str(args.jobs)],
            b,
        )  # fmt: skip
        plains, trials = [], []
        for i, lr in enumerate(HPO_LRS[: args.rounds]):
            plains.append(timed(["dvc", "exp", "run", "-S", epochs, "-S", f"train.lr={lr}"], a))
            space = {
                "study": f"bench-{i}",
                "fixed": [epochs],
                "pruner": {"type": "none"},
                "enqueue": [{"train.lr": float(lr)}],
                "params": {"train.lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True}},
            }
            (b / "bench-space.yaml").write_text(yaml.safe_dump(space))
            hpo = [py, "-m", "mlproject.experiments.hpo", "--trials", "1"]
            trials.append(timed([*hpo, "--space", "bench-space.yaml"], b))
            print(f"round {i + 1}: plain {plains[-1]:.1f} s, HPO trial {trials[-1]:.1f} s")
    ratios = [t / p for t, p in zip(trials, plains, strict=True)]
    plain, trial = statistics.median(plains), statistics.median(trials)
    rows = [
        ("4 experiments one after another", sequential, None),
        (f"the same 4 as a sweep, JOBS={args.jobs}", swept, swept / sequential),
        (f"plain dvc exp run (median of {len(plains)})", plain, None),
        (f"HPO, 1 trial, same overrides (median of {len(trials)})", trial, trial / plain),
    ]
    print(f"\n{'':50} {'seconds':>8}  {'ratio':>6}  target")
    targets = {1: "<= 0.75", 3: "<= 1.10"}
    for i, (name, seconds, ratio) in enumerate(rows):
        shown = f"{ratio:6.2f}" if ratio is not None else ""
        print(f"{name:50} {seconds:8.1f}  {shown:>6}  {targets.get(i, '')}")
    print(
        "HPO / plain by round: " + ", ".join(f"{r:.2f}" for r in ratios)
        + f"; all rounds together {sum(trials) / sum(plains):.2f}"
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
