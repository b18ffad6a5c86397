"""What sweeps and HPO share: running DVC with a time limit, reading `dvc exp show --json`, the
metric that ranks experiments (the quality gate's first one), and the ranked table."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import tasks
from ..core.errors import ProjectError
from ..core.io import atomic_write_text
from ..report.gate import GateConfig

PARAMS = "params.yaml"


class ExperimentError(ProjectError):
    """A sweep or search cannot go on; the message says why and what to do (exit 1)."""


class QueueStuck(ExperimentError):
    """DVC's task queue stalled or the sweep ran past its timeout (exit 2: not a failed run)."""

    exit_code = 2


def dvc_env() -> dict[str, str]:
    """DVC sends no analytics; stage output is unbuffered so progress lines arrive as printed."""
    bindir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if bindir not in path.split(os.pathsep):  # stages run `python -m ...`: the venv's python
        path = f"{bindir}{os.pathsep}{path}"
    return {**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1"}


# DVC runs a trial or a queued experiment in a temporary copy of the project and checks every
# dependency and output out of the cache into it: by default as copies, file by file (2.7 s of a
# 22 s demo trial for its 1,797 images; far more for a fork's photos). Linked, it takes 0.6 s.
LINKS = "reflink,hardlink,copy"


def linked_checkouts(scratch: Path = Path(".dvc/tmp")) -> dict[str, str]:
    """Environment for `dvc exp run --temp` and `dvc queue start`: DVC links files from the cache
    into the experiment's temporary copy instead of copying them.

    Set at DVC's lowest config level (system, through DVC_SYSTEM_CONFIG_DIR, pointed at a copy of
    this machine's system config with `cache.type` added), so a `cache.type` that the project, the
    user or the machine sets still wins. The workspace is not touched: a temporary run checks out
    only into its own copy, and stages replace their outputs rather than write into them."""
    from dvc.dirs import system_config_dir

    system = Path(system_config_dir()) / "config"
    text = system.read_text() if system.is_file() else ""
    if re.search(r"^\s*\[\s*cache\s*\]", text, re.MULTILINE):
        return {}  # the machine's own cache settings stand
    folder = (scratch / "experiments-config").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "config", f"{text.rstrip()}\n[cache]\n    type = {LINKS}\n".lstrip())
    return {"DVC_SYSTEM_CONFIG_DIR": str(folder)}


def dvc(
    *args: str, timeout: float = 300, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `dvc args...`, output captured, within `timeout` seconds (DVC can wait on a lock
    forever). Output goes through files, not pipes: `dvc queue start` leaves workers running that
    inherit them, and a pipe would stay open until they exit."""
    command = ["dvc", *args]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            code = subprocess.run(
                command,
                stdout=out,
                stderr=err,
                text=True,
                env={**dvc_env(), **(env or {})},
                timeout=timeout,
            ).returncode
        except subprocess.TimeoutExpired:
            raise ExperimentError(
                f"`{' '.join(command)}` did not finish within {timeout:.0f} s. Another DVC command "
                "may hold the repository's lock: check `dvc queue status` and running `dvc` "
                "processes."
            ) from None
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(command, code, out.read(), err.read())
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()[-2000:]
        raise ExperimentError(f"`{' '.join(command)}` failed (exit {result.returncode}):\n{detail}")
    return result


# ------------------------------------------------------------------------- the ranking metric


@dataclass(frozen=True)
class Objective:
    """The metric that ranks experiments, in its metrics file and direction, and the metric
    training prints per epoch (`val_acc`, `val_rmse`) with its direction, which HPO's pruner
    reads (`epoch_value`)."""

    metric: str
    metrics_file: str
    higher_is_better: bool
    epoch_metric: str = "accuracy"
    epoch_higher_is_better: bool = True

    @property
    def direction(self) -> str:
        return "maximize" if self.higher_is_better else "minimize"

    def better(self, a: float, b: float) -> bool:
        return a > b if self.higher_is_better else a < b

    def epoch_value(self, val_loss: float, val_metric: float) -> float:
        """What a trial reports for one epoch, comparable across trials in the study's direction:
        the validation loss when the objective is a loss; otherwise the epoch metric (accuracy,
        rmse: in the target's units whatever `train.loss` is), negated when it runs the other
        way (r2 maximized while training prints rmse)."""
        if "loss" in self.metric:
            return -val_loss if self.higher_is_better else val_loss
        same = self.epoch_higher_is_better == self.higher_is_better
        return val_metric if same else -val_metric


def objective(params: dict[str, Any] | None = None, metric: str | None = None) -> Objective:
    """The ranking metric: `metric` when given, else the gate's first metric of the project's
    task (its own rules `gate.<task>` merged over the shared ones: min, then max, then
    max_regression; another task's metrics skipped) that runs the way training does (the
    task's per-epoch metric: accuracy up, rmse down); else that per-epoch metric itself. So the
    shipped gate ranks a classifier by accuracy (maximized) and a regression model by rmse
    (minimized): its only regression rule, the floor r2 >= 0, is a sanity check, and ranks the
    same models in the same order on one test split anyway."""
    if params is None:
        params = yaml.safe_load(Path(PARAMS).read_text()) or {}
    gate = GateConfig.from_params(params)
    task = tasks.for_config((params or {}).get("data") or {})
    epoch_metric = task.Objective.metric
    trains_up = gate.direction(epoch_metric) != "lower"
    if metric is None:
        named = [
            m for rule in ("min", "max", "max_regression") for m in gate.rules(task.NAME, rule)
        ]
        mine = [m for m in named if tasks.owner(m) in (None, task.NAME)]
        if not named:
            raise ExperimentError(
                f"{PARAMS}: the gate names no metric (gate.min, gate.max, gate.max_regression); "
                "add one, or pass --metric."
            )
        same_way = [m for m in mine if (gate.direction(m) != "lower") == trains_up]
        metric = same_way[0] if same_way else epoch_metric
    return Objective(
        metric,
        gate.metrics_file,
        gate.direction(metric) != "lower",
        epoch_metric,
        trains_up,
    )


# ----------------------------------------------------------------------- dvc exp show --json


@dataclass
class Experiment:
    name: str
    rev: str
    state: str  # success, queued, running, failed (DVC's executor states)
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def _files_data(section: dict | None) -> dict[str, dict]:
    return {path: (entry or {}).get("data") or {} for path, entry in (section or {}).items()}


def experiments(baseline: str = "HEAD", timeout: float = 300) -> list[Experiment]:
    """The experiments on `baseline` (a commit), as `dvc exp show --json` lists them."""
    sha = subprocess.run(
        ["git", "rev-parse", baseline], capture_output=True, text=True, check=True
    ).stdout.strip()
    raw = json.loads(dvc("exp", "show", "--json", "--rev", sha, timeout=timeout).stdout or "[]")
    found = []
    for entry in raw:
        if entry.get("rev") != sha:
            continue
        for exp in entry.get("experiments") or []:
            revs = exp.get("revs") or []
            if not revs:
                continue
            head = revs[0]
            data = head.get("data") or {}
            state = ((exp.get("executor") or {}).get("state")) or "success"
            found.append(
                Experiment(
                    name=exp.get("name") or head.get("name") or head.get("rev", "")[:7],
                    rev=head.get("rev", ""),
                    state=state,
                    params=_files_data(data.get("params")).get(PARAMS, {}),
                    metrics=_files_data(data.get("metrics")),
                )
            )
    return found


def metric_value(exp: Experiment, target: Objective) -> float | None:
    value = exp.metrics.get(target.metrics_file, {}).get(target.metric)
    return float(value) if isinstance(value, (int, float)) else None


# ------------------------------------------------------------------------------ the table


def ranked(rows: list[tuple[Experiment, dict[str, str]]], target: Objective):
    """Rows sorted best first by the objective; rows without the metric last."""

    def key(row):
        value = metric_value(row[0], target)
        if value is None:
            return (1, 0.0)
        return (0, -value if target.higher_is_better else value)

    return sorted(rows, key=key)


def table(rows: list[tuple[Experiment, dict[str, str]]], target: Objective, md: bool = False):
    """The experiments, best first, the best marked `*`; `rows` pairs each with its overrides."""
    from tabulate import tabulate

    rows = ranked(rows, target)
    keys = sorted({k for _, overrides in rows for k in overrides})
    metrics = sorted(
        {m for exp, _ in rows for m in exp.metrics.get(target.metrics_file, {})} - {target.metric}
    )
    arrow = "max" if target.higher_is_better else "min"
    headers = ["", "experiment", "rev", *keys, f"{target.metric} ({arrow})", *metrics]
    body = []
    for i, (exp, overrides) in enumerate(rows):
        value = metric_value(exp, target)
        best = i == 0 and value is not None
        values = exp.metrics.get(target.metrics_file, {})
        body.append(
            [
                "*" if best else "",
                exp.name,
                exp.rev[:7],
                *(overrides.get(k, "") for k in keys),
                "" if value is None else f"{value:.4f}",
                *(_fmt(values.get(m)) for m in metrics),
            ]
        )
    return tabulate(body, headers=headers, tablefmt="github" if md else "simple")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)
