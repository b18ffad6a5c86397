"""HPO and sweeps on a regression project: they rank by rmse, minimized, and the pruner reads the
per-epoch value that moves the study's way (mlproject.experiments.dvcexp.objective)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import yaml

from mlproject.experiments import dvcexp, hpo, sweep
from mlproject.experiments.dvcexp import Experiment, Objective

from conftest import ENV, ROOT, copy_repo, run

GATE = {
    "min": {"accuracy": 0.95, "f1_macro": 0.95},
    "max_regression": {"accuracy": 0.01},
    "regression": {"min": {"r2": 0.0}, "max_regression": {"r2": 0.05}},
    "lower_is_better": ["loss", "rmse", "mae"],
}
METRICS = "reports/eval/metrics.json"


def test_the_ranking_metric_and_its_direction_follow_the_task():
    regression = dvcexp.objective({"gate": GATE, "data": {"task": "regression"}})
    assert (regression.metric, regression.direction) == ("rmse", "minimize")
    assert (regression.epoch_metric, regression.epoch_higher_is_better) == ("rmse", False)
    classifier = dvcexp.objective({"gate": GATE, "data": {"task": "classification"}})
    assert (classifier.metric, classifier.direction) == ("accuracy", "maximize")
    assert dvcexp.objective({"gate": GATE}) == classifier  # no task: classification
    # A fork's error ceiling for regression is the gate's first metric that way: it ranks.
    fork = {**GATE, "regression": {"max": {"mae": 40.0}, "min": {"r2": 0.1}}}
    assert dvcexp.objective({"gate": fork, "data": {"task": "regression"}}).metric == "mae"
    # Asked for by name: r2 is maximized.
    r2 = dvcexp.objective({"gate": GATE, "data": {"task": "regression"}}, metric="r2")
    assert r2.direction == "maximize"


def test_each_epoch_reports_a_value_that_moves_the_study_s_way():
    line = "epoch   2/20  train_loss 0.9100  val_loss 0.8500  val_rmse 55.1200  lr 3.00e-03  0.1s"
    found = hpo.EPOCH.match(line)
    assert found and found.groups() == ("2", "0.8500", "55.1200")
    rmse = Objective("rmse", METRICS, False, "rmse", False)
    assert rmse.epoch_value(0.85, 55.12) == 55.12  # target units, whatever train.loss is
    r2 = Objective("r2", METRICS, True, "rmse", False)
    assert r2.epoch_value(0.85, 55.12) == -55.12  # rmse down is r2 up
    loss = Objective("loss", METRICS, False, "rmse", False)
    assert loss.epoch_value(0.85, 55.12) == 0.85
    accuracy = Objective("accuracy", METRICS, True)
    assert accuracy.epoch_value(0.35, 0.90) == 0.90


def test_the_lowest_rmse_ranks_first_and_is_marked():
    target = dvcexp.objective({"gate": GATE, "data": {"task": "regression"}})

    def exp(name, rmse):
        return Experiment(name, f"{name:0<40}", "success", {}, {METRICS: {"rmse": rmse}})

    rows = [(exp("b", 60.0), {}), (exp("a", 52.5), {}), (exp("c", 70.0), {})]
    assert [e.name for e, _ in dvcexp.ranked(rows, target)] == ["a", "b", "c"]
    lines = dvcexp.table(rows, target).splitlines()
    assert "rmse (min)" in lines[0] and lines[2].startswith("*") and " a " in lines[2]


def test_a_grid_on_the_regression_demo_ranks_by_rmse(monkeypatch):
    monkeypatch.chdir(ROOT)
    grid = sweep.expand(["data=diabetes", "model=mlp", "train.lr=0.001,0.01"])
    target = sweep.grid_objective(grid)
    assert (target.metric, target.direction) == ("rmse", "minimize")


@pytest.mark.slow  # three 2-epoch trials through `dvc exp run --temp` on the diabetes demo
def test_hpo_on_the_regression_demo_keeps_the_lowest_rmse(regression_repo, tmp_path):
    repo = copy_repo(regression_repo, tmp_path / "repo")
    space = {
        "study": "reg",
        "fixed": ["train.epochs=2"],
        "pruner": {"type": "none"},
        "params": {"train.lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True}},
    }
    path = tmp_path / "reg.yaml"  # outside the repository: the workspace stays clean
    path.write_text(yaml.safe_dump(space))
    # As a user types it: `make hpo` (it makes data/ present, then runs the search).
    make = ["make", "--no-print-directory", "hpo", "TRIALS=3", f"SPACE={path}"]
    env = {**ENV, "PATH": f"{Path(sys.executable).parent}:{ENV['PATH']}"}
    out = run([*make, f"VENV={sys.prefix}", "VENV_PREBUILT=1"], repo, env=env, timeout=1500).stdout
    assert "study 'reg' (minimize rmse)" in out
    best = yaml.safe_load((repo / "reports/hpo/best.yaml").read_text())
    assert (best["metric"], best["direction"]) == ("rmse", "minimize")
    rows = list(csv.DictReader((repo / "reports/hpo/trials.csv").open()))
    assert [r["state"] for r in rows] == ["complete"] * 3
    values = {int(r["trial"]): float(r["rmse"]) for r in rows}
    assert best["trial"] == min(values, key=values.get)
    # The value is the experiment's own test rmse, as committed by DVC.
    shown = run(["dvc", "exp", "show", "--json"], repo).stdout
    assert best["experiment"] in shown
    metrics = run(["git", "show", f"refs/exps/{_ref(repo, best['experiment'])}:{METRICS}"], repo)
    assert abs(yaml.safe_load(metrics.stdout)["rmse"] - best["value"]) < 1e-9


def _ref(repo: Path, name: str) -> str:
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], repo).stdout.split()
    return next(r for r in refs if r.endswith(f"/{name}")).removeprefix("refs/exps/")
