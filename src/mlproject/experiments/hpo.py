"""Hyperparameter search with Optuna, every trial a DVC experiment.

    make hpo TRIALS=20 [JOBS=1] [SPACE=conf/hpo/default.yaml]
    python -m mlproject.experiments.hpo --trials 20 --jobs 1 --space conf/hpo/default.yaml

The space (conf/hpo/*.yaml) names each key's range; each trial runs `dvc exp run --temp -S ...`
(outside the workspace, so trials can run side by side and the workspace stays as it was), is
listed by `dvc exp show`, and is cached like any experiment. The study lives in
`.hpo/<study>.db` (SQLite): a rerun continues it up to TRIALS finished trials. A trial reports its
per-epoch validation metric from the training's progress lines (val_acc, val_rmse: see
Objective.epoch_value), so the pruner can stop it early. The study's metric and direction are
dvcexp.objective's: accuracy maximized for a classifier, rmse minimized for regression.
Writes reports/hpo/: best.yaml (the overrides to apply), trials.csv, trials.md, history.png and
importance.png.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
from pathlib import Path

import yaml

from ..core.cli import entry_point
from ..core.io import atomic_write_text
from .dvcexp import ExperimentError, Objective, dvc_env, linked_checkouts, objective
from .space import Space, load_space
from .sweep import composed

STORE = Path(".hpo")
OUT = Path("reports/hpo")
# train's progress line: "epoch   3/20  train_loss 0.41  val_loss 0.35  val_acc 0.9012  lr ..."
# (a regression model prints val_rmse in place of val_acc): epoch, val_loss, the epoch metric.
NUMBER = r"([-+]?(?:[\d.]+(?:e[-+]?\d+)?|nan|inf))"
EPOCH = re.compile(rf"^epoch\s+(\d+)/\d+\s.*?val_loss {NUMBER}\s+val_[a-z0-9_]+ {NUMBER}")


def run_trial(
    trial, space: Space, target: Objective, tag: str, echo=print, env: dict | None = None
) -> float:
    """One trial: sample, `dvc exp run --temp` (in `env`, default `dvc_env()`), report each
    epoch, return the final metric."""
    import optuna

    overrides = space.fixed + space.suggest(trial)
    name = f"{space.study}-{tag}-{trial.number}"
    trial.set_user_attr("experiment", name)
    trial.set_user_attr("overrides", overrides)
    command = ["dvc", "exp", "run", "--temp", "--name", name]
    command += [a for o in overrides for a in ("-S", o)]
    echo(f"trial {trial.number}: {' '.join(overrides)}")
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env or dvc_env(),
        start_new_session=True,  # a pruned trial's whole process group is stopped
    )
    tail: list[str] = []
    pruned = False
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            tail = (tail + [line])[-40:]
            found = EPOCH.match(line.strip())
            if not found or pruned:
                continue
            epoch = int(found.group(1))
            value = target.epoch_value(float(found.group(2)), float(found.group(3)))
            trial.report(value, epoch)
            if trial.should_prune():
                echo(f"trial {trial.number}: pruned at epoch {epoch}")
                pruned = True
                _stop(proc)
    except BaseException:  # Ctrl-C or an error here: the trial's own session must stop too
        _stop(proc)
        raise
    code = proc.wait()
    if pruned:
        raise optuna.TrialPruned()
    if code != 0:
        raise ExperimentError(f"trial {trial.number} ({name}) failed:\n{''.join(tail)}")
    value = _metric(name, target)
    echo(f"trial {trial.number}: {target.metric} {value:.4f} ({name})")
    return value


def _stop(proc: subprocess.Popen) -> None:
    """Interrupt DVC (it cleans its temporary workspace), kill it if it does not stop."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _metric(name: str, target: Objective) -> float:
    """The objective, read from the experiment's commit (metrics are kept in git)."""
    refs = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname)", "refs/exps"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    ref = next((r for r in refs if r.rsplit("/", 1)[-1] == name), None)
    if ref is None:
        raise ExperimentError(f"experiment {name} finished but git has no ref for it")
    shown = subprocess.run(
        ["git", "show", f"{ref}:{target.metrics_file}"], capture_output=True, text=True
    )
    metrics = yaml.safe_load(shown.stdout) if shown.returncode == 0 else None
    value = (metrics or {}).get(target.metric)
    if not isinstance(value, (int, float)):
        raise ExperimentError(f"{name}: {target.metrics_file} has no number '{target.metric}'")
    return float(value)


def study_for(space: Space, target: Objective):
    import optuna

    STORE.mkdir(exist_ok=True)
    (STORE / ".gitignore").write_text("*\n")
    storage = f"sqlite:///{(STORE / space.study).as_posix()}.db"
    pruner = (
        optuna.pruners.MedianPruner(
            n_startup_trials=space.pruner.get("startup_trials", 3),
            n_warmup_steps=space.pruner.get("warmup_epochs", 0),
        )
        if space.pruner.get("type", "median") == "median"
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        study_name=space.study,
        storage=storage,
        load_if_exists=True,
        direction=target.direction,
        sampler=optuna.samplers.TPESampler(seed=space.sampler.get("seed")),
        pruner=pruner,
    )
    if study.user_attrs.get("metric", target.metric) != target.metric:
        raise ExperimentError(
            f"{storage}: study '{space.study}' optimizes '{study.user_attrs['metric']}', not "
            f"'{target.metric}'; name another study in the space file or delete the file."
        )
    if "tag" not in study.user_attrs:  # experiment names stay unique if .hpo/ is deleted
        study.set_user_attr("tag", secrets.token_hex(2))
        study.set_user_attr("metric", target.metric)
        for params in space.enqueue:
            study.enqueue_trial(params)
    return study


def search(
    space_file: Path,
    trials: int,
    jobs: int = 1,
    metric: str | None = None,
    shard: int | None = None,
) -> int:
    """Run the study up to `trials` finished trials. `shard` (CI's matrix): a study of its own,
    `<study>-<shard>`, seeded apart, so runners that share nothing search side by side."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    space = load_space(space_file)
    if shard is not None:
        space.study = f"{space.study}-{shard}"
        space.sampler = {**space.sampler, "seed": (space.sampler.get("seed") or 0) + shard}
    # The params every trial starts from: a `fixed` data=... decides the task, hence the metric.
    target = objective(composed(space.fixed), metric=metric or space.metric)
    study = study_for(space, target)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    todo = max(trials - done, 0)
    print(
        f"hpo: study '{space.study}' ({target.direction} {target.metric}), {done} trial(s) "
        f"finished before, {todo} to run, {jobs} at a time"
    )
    lock = threading.Lock()

    def echo(text: str) -> None:
        with lock:
            print(text, flush=True)

    if todo:
        # The trials train on one core; the report's modules (matplotlib, Optuna's plots and its
        # importance evaluator, which imports scikit-learn: 2-3 s in all) load meanwhile.
        preload = threading.Thread(target=_preload_reports, daemon=True)
        preload.start()
        env = {**dvc_env(), **linked_checkouts()}  # once: every trial runs in the same one
        study.optimize(
            lambda t: run_trial(t, space, target, study.user_attrs["tag"], echo, env),
            n_trials=todo,
            n_jobs=jobs,
            catch=(ExperimentError,),
        )
        preload.join()
    return write_reports(study, space, target)


# ------------------------------------------------------------------------------ reports


def write_reports(study, space: Space, target: Objective, out: Path = OUT) -> int:
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    out.mkdir(parents=True, exist_ok=True)
    keys = list(space.params)
    rows = [
        {
            "trial": t.number,
            "state": t.state.name.lower(),
            target.metric: "" if t.value is None else f"{t.value:.4f}",
            **{k: t.params.get(k, "") for k in keys},
            "epochs": t.last_step or "",
            "seconds": f"{t.duration.total_seconds():.1f}" if t.duration else "",
            "experiment": t.user_attrs.get("experiment", ""),
        }
        for t in study.get_trials(deepcopy=False)
    ]
    with (out / "trials.csv.tmp").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["trial"])
        writer.writeheader()
        writer.writerows(rows)
    (out / "trials.csv.tmp").replace(out / "trials.csv")
    if not complete:
        print("hpo: no trial completed; nothing to report as best", file=sys.stderr)
        return 1
    best = study.best_trial
    from tabulate import tabulate

    marked = [{"": "*" if r["trial"] == best.number else "", **r} for r in rows]
    atomic_write_text(out / "trials.md", tabulate(marked, headers="keys", tablefmt="github") + "\n")
    overrides = best.user_attrs.get("overrides", [])
    atomic_write_text(
        out / "best.yaml",
        "# The best trial's overrides: dvc exp apply <experiment>, or\n"
        f"#   dvc exp run {' '.join(f'-S {o}' for o in overrides)}\n"
        + yaml.safe_dump(
            {
                "study": space.study,
                "metric": target.metric,
                "direction": target.direction,
                "value": best.value,
                "trial": best.number,
                "experiment": best.user_attrs.get("experiment"),
                "overrides": overrides,
                "params": dict(best.params),
            },
            sort_keys=False,
        ),
    )
    _plots(study, out)
    print(tabulate(marked, headers="keys", tablefmt="simple"))
    print(f"\nhpo: best trial {best.number}: {target.metric} {best.value:.4f} -> {out}/best.yaml")
    return 0


def _preload_reports() -> None:
    """Import what write_reports and _plots use; an import that fails here fails there again,
    where it is reported."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot
        import optuna.importance  # noqa: F401
        import tabulate  # noqa: F401
        from optuna.visualization import matplotlib as _  # noqa: F401
    except Exception:
        pass


def _plots(study, out: Path) -> None:
    """Optuna's optimization history and parameter importances (matplotlib), as PNG."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    plots = {"history.png": ovm.plot_optimization_history}
    plots["importance.png"] = ovm.plot_param_importances
    for name, draw in plots.items():
        # Optuna's plots call plt.style.use("ggplot"), which is global: rc_context puts the
        # caller's style back (a report drawn later in the same process keeps its colours).
        with matplotlib.rc_context():
            try:
                with warnings.catch_warnings():  # "too few trials": the plot says so itself
                    warnings.simplefilter("ignore")
                    axes = draw(study)
            except (ValueError, RuntimeError) as exc:  # importances need 2+ trials that differ
                print(f"hpo: no {name}: {exc}", file=sys.stderr)
                (out / name).unlink(missing_ok=True)
                continue
            figure = axes.figure if hasattr(axes, "figure") else axes[0].figure
            figure.tight_layout()
            tmp = out / f".{name}"
            figure.savefig(tmp, format="png", dpi=100)
            tmp.replace(out / name)
            plt.close(figure)


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlproject.experiments.hpo")
    parser.add_argument("--trials", type=int, default=20, help="finished trials wanted in all")
    parser.add_argument("--jobs", type=int, default=1, help="trials run side by side")
    parser.add_argument("--space", type=Path, default=Path("conf/hpo/default.yaml"))
    parser.add_argument("--metric", help="optimize this metric (default: the gate's first)")
    args = parser.parse_args(argv)
    return search(args.space, args.trials, args.jobs, args.metric)


if __name__ == "__main__":
    raise SystemExit(main())
