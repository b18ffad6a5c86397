"""Grid sweeps as DVC experiments.

    make sweep ARGS="-S 'train.lr=0.001,0.003,0.01' -S 'model=cnn,mlp'" JOBS=2
    python -m mlproject.experiments.sweep run -S 'train.lr=0.001,0.01' -S model=cnn,mlp --jobs 2

`run` expands the grid (Hydra's sweep syntax, as `dvc exp run` does), leaves out the combinations
that already have a finished experiment on this commit, queues the rest (`dvc exp run --queue`),
runs them with `dvc queue start -j JOBS`, shows a progress line until they are done, and prints the
experiments ranked by the quality gate's first metric for the task (dvcexp.objective: accuracy
maximized for a classifier, rmse minimized for regression), the best marked `*`. `prepare` is
restored from DVC's run cache when its inputs did not change; the later stages have git-tracked
(uncached) reports, for which DVC keeps no run cache, so they run for each combination.

DVC's task queue is known to stall (treeverse/dvc#8165, #10398, #10562: the worker finishes one or
two tasks, then idles or exits with tasks still queued). `run` restarts the workers once when
tasks wait with none running, and otherwise stops with what to do; `--timeout` bounds the whole.

`shard` (CI: one matrix job's share) runs its combinations one by one with `dvc exp run`, no queue;
`show` prints the table for a grid; `best` prints the best experiment's name.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..core.cli import entry_point
from .dvcexp import (
    Experiment,
    ExperimentError,
    Objective,
    QueueStuck,
    dvc,
    dvc_env,
    experiments,
    linked_checkouts,
    metric_value,
    objective,
    ranked,
    table,
)

QUEUE_HELP = (
    "What to do: `dvc queue status` lists the tasks and workers; `dvc queue logs <task>` shows a "
    "task's output (worker logs: .dvc/tmp/exps/celery/*.out); `dvc queue start -j N` restarts the "
    "workers; `dvc queue kill <task>` stops a stuck task and `dvc queue remove --queued` drops the "
    "waiting ones. Rerun the sweep afterwards: finished combinations are skipped."
)


# ------------------------------------------------------------------------------ the grid


def expand(overrides: list[str]) -> list[list[str]]:
    """The combinations of a Hydra sweep (`a=1,2 b=x,y` -> 4), in DVC's own order."""
    from dvc.utils.hydra import get_hydra_sweeps

    if not overrides:
        raise ExperimentError("no grid: give at least one -S 'key=v1,v2' (Hydra sweep syntax)")
    try:
        sweeps = get_hydra_sweeps({"params.yaml": list(overrides)})
    except Exception as exc:  # Hydra's parser errors name the bad override
        raise ExperimentError(f"bad sweep override in {overrides}: {exc}") from exc
    return [list(s["params.yaml"]) for s in sweeps]


def label(combo: list[str]) -> dict[str, str]:
    return dict(o.lstrip("+~").split("=", 1) for o in combo)


def composed(combo: list[str]) -> dict[str, Any]:
    """params.yaml as DVC's Hydra integration would write it for these overrides."""
    from omegaconf import OmegaConf

    from ..pipeline.config import compose

    return OmegaConf.to_container(compose(combo), resolve=True)


def match(
    grid: list[list[str]], found: list[Experiment], states: Iterable[str] = ("success",)
) -> dict[int, Experiment]:
    """Combination index -> its newest experiment in one of `states` (params equal)."""
    wanted = {i: composed(c) for i, c in enumerate(grid)}
    matched: dict[int, Experiment] = {}
    for exp in found:  # dvc exp show lists the newest first
        if exp.state not in states:
            continue
        for i, params in wanted.items():
            if i not in matched and exp.params == params:
                matched[i] = exp
    return matched


# ------------------------------------------------------------------------- the task queue


def queue_status() -> dict[str, str]:
    """{task rev: Queued|Running|Success|Failed}, as `dvc queue status` lists them. Workers are
    not asked (that is a broadcast through the queue's broker, which the poll must not load)."""
    from dvc.repo import Repo

    with Repo(".") as repo:
        return {t["rev"]: t["status"] for t in repo.experiments.celery_queue.status()}


def _poll(misses: list[Exception], limit: int = 10) -> dict[str, str] | None:
    """One look at the queue; a read that races a worker's write (a half-written message file:
    treeverse/dvc#10428) is retried at the next poll, and only `limit` in a row fail."""
    try:
        status = queue_status()
    except Exception as exc:  # any error of DVC's reader: counted, raised after `limit`
        misses.append(exc)
        if len(misses) >= limit:
            raise ExperimentError(
                f"cannot read the DVC task queue ({limit} tries): {exc!r}\n{QUEUE_HELP}"
            ) from exc
        return None
    misses.clear()
    return status


def _read_queue(poll: float = 1) -> dict[str, str]:
    misses: list[Exception] = []
    while (status := _poll(misses)) is None:
        time.sleep(poll)
    return status


def wait(
    tasks: set[str],
    jobs: int,
    timeout: float,
    stall_after: float = 60,
    poll: float = 3,
    out=sys.stdout,
) -> dict[str, str]:
    """Follow `tasks` until none is queued or running; guard against the known stalls."""
    start = last_running = time.monotonic()
    restarted = False
    tty = out.isatty()
    shown = ""
    misses: list[Exception] = []
    while True:
        status = _poll(misses)
        if status is None:
            time.sleep(poll)
            continue
        mine = {t: status.get(t, "Unknown") for t in tasks}
        counts = {s: sum(v == s for v in mine.values()) for s in ("Success", "Failed", "Running")}
        waiting = sum(v == "Queued" for v in mine.values())
        elapsed = time.monotonic() - start
        failed = f" ({counts['Failed']} failed)" if counts["Failed"] else ""
        line = (
            f"sweep: {counts['Success'] + counts['Failed']}/{len(tasks)} done{failed}, "
            f"{counts['Running']} running, {waiting} queued  [{elapsed:.0f}s]"
        )
        if line != shown:
            print(("\r" if tty else "") + line, end="" if tty else "\n", file=out, flush=True)
            shown = line
        if not waiting and not counts["Running"]:
            if tty:
                print(file=out)
            return mine
        now = time.monotonic()
        if counts["Running"]:
            last_running = now
        elif now - last_running > stall_after:
            if restarted:
                raise QueueStuck(
                    f"\nthe DVC task queue stalled: {waiting} task(s) queued, none running for "
                    f"{stall_after:.0f} s, after one restart of the workers (known DVC issues "
                    f"treeverse/dvc#8165, #10398, #10562).\n{QUEUE_HELP}"
                )
            print(f"\nsweep: {waiting} task(s) wait with none running: restarting the workers")
            dvc("queue", "start", "-j", str(jobs), timeout=120, env=linked_checkouts())
            restarted, last_running = True, now
        if timeout and elapsed > timeout:
            raise QueueStuck(
                f"\nthe sweep ran past --timeout {timeout:.0f} s with {waiting} task(s) queued and "
                f"{counts['Running']} running.\n{QUEUE_HELP}"
            )
        time.sleep(poll)


# --------------------------------------------------------------------------- the commands


def sweep(
    overrides: list[str],
    jobs: int = 1,
    timeout: float = 0,
    stall_after: float = 60,
    rerun: bool = False,
    metric: str | None = None,
) -> int:
    """Queue the grid's unfinished combinations, run them, print the ranked table."""
    grid = expand(overrides)
    target = grid_objective(grid, metric)
    done = {} if rerun else match(grid, experiments())
    todo = [c for i, c in enumerate(grid) if i not in done]
    print(
        f"sweep: {len(grid)} combination(s); {len(done)} finished before (skipped), "
        f"{len(todo)} to run with {jobs} job(s)"
    )
    failed: dict[str, str] = {}
    if todo:
        before = _read_queue()
        if len(todo) == len(grid):  # the grid as given: DVC expands the sweep itself
            dvc("exp", "run", "--queue", *_flags(overrides), timeout=600)
        else:
            for combo in todo:
                dvc("exp", "run", "--queue", *_flags(combo), timeout=300)
        after = _read_queue()
        mine = {t for t, s in after.items() if t not in before and s == "Queued"}
        dvc("queue", "start", "-j", str(jobs), timeout=120, env=linked_checkouts())
        try:
            result = wait(mine, jobs, timeout, stall_after)
        finally:
            dvc("queue", "stop", timeout=60, check=False)  # no idle workers left behind
        failed = {t: s for t, s in result.items() if s != "Success"}
    print()
    print(show(grid, target))
    if failed:
        print(
            f"\nsweep: {len(failed)} experiment(s) failed: "
            + ", ".join(f"{t[:7]} ({s})" for t, s in failed.items())
            + "; see `dvc queue logs <task>`.",
            file=sys.stderr,
        )
        return 1
    return 0


def grid_objective(grid: list[list[str]], metric: str | None = None) -> Objective:
    """The ranking metric of the grid's experiments: the gate's and task's of the params its
    first combination composes (a grid that sets `data=diabetes` ranks by rmse, minimized)."""
    return objective(composed(grid[0]), metric=metric)


def show(grid: list[list[str]], target: Objective, md: bool = False) -> str:
    found = experiments()
    matched = match(grid, found)
    if not matched:
        return "no finished experiment of this grid on this commit yet"
    return table([(exp, label(grid[i])) for i, exp in matched.items()], target, md=md)


def best(grid: list[list[str]], target: Objective) -> Experiment:
    matched = match(grid, experiments())
    rows = ranked([(e, {}) for e in matched.values()], target)
    if not rows or metric_value(rows[0][0], target) is None:
        raise ExperimentError(f"no finished experiment of this grid has '{target.metric}'")
    return rows[0][0]


def shard(overrides: list[str], index: int, total: int, rerun: bool = False) -> int:
    """Run share `index` of `total` (combinations index, index+total, ...), one `dvc exp run` each:
    CI's matrix fans the grid out over runners instead of DVC's task queue."""
    import subprocess

    if not 0 <= index < total:
        raise ExperimentError(f"--index must be in [0, {total}), got {index}")
    grid = expand(overrides)
    mine = grid[index::total]
    done = {} if rerun else match(mine, experiments())
    print(f"shard {index + 1}/{total}: {len(mine)} of {len(grid)} combination(s)")
    for i, combo in enumerate(mine):
        if i in done:
            print(f"  {' '.join(combo)}: finished before ({done[i].name})")
            continue
        print(f"  {' '.join(combo)}: dvc exp run", flush=True)
        subprocess.run(["dvc", "exp", "run", *_flags(combo)], env=dvc_env(), check=True)
    return 0


def _flags(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("-S", o)]


# ------------------------------------------------------------------------------------ CLI


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlproject.experiments.sweep")
    sub = parser.add_subparsers(dest="command", required=True)
    grid_args = argparse.ArgumentParser(add_help=False)
    grid_args.add_argument(
        "-S", "--set-param", dest="overrides", action="append", default=[], metavar="OVERRIDE"
    )
    grid_args.add_argument("--metric", help="rank by this metric (default: the gate's first)")
    p = sub.add_parser("run", parents=[grid_args], help="queue, run and rank the grid")
    p.add_argument("-j", "--jobs", type=int, default=1)
    p.add_argument("--timeout", type=float, default=0, help="seconds for the whole sweep (0: none)")
    p.add_argument("--stall-after", type=float, default=60, help="seconds queued with none running")
    p.add_argument("--rerun", action="store_true", help="queue finished combinations again too")
    p = sub.add_parser("shard", parents=[grid_args], help="CI: run one share of the grid")
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--total", type=int, required=True)
    p = sub.add_parser("show", parents=[grid_args], help="the ranked table of the grid")
    p.add_argument("--md", action="store_true", help="Markdown (a job summary)")
    p.add_argument("--out", type=Path, help="append the table here too")
    sub.add_parser("best", parents=[grid_args], help="the best experiment's name")
    args = parser.parse_args(argv)
    if args.command == "run":
        return sweep(
            args.overrides, args.jobs, args.timeout, args.stall_after, args.rerun, args.metric
        )
    if args.command == "shard":
        return shard(args.overrides, args.index, args.total)
    grid = expand(args.overrides)
    target = grid_objective(grid, args.metric)
    if args.command == "best":
        print(best(grid, target).name)
        return 0
    text = show(grid, target, md=args.md)
    print(text)
    if args.out:
        with args.out.open("a", encoding="utf-8") as out:
            out.write(f"### Sweep, ranked by {target.metric}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
