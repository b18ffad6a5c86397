"""Grid sweeps as DVC experiments (mlproject.experiments.sweep): the grid, the ranking, the stall
guard, and a real sweep through DVC's task queue in a temporary project (slow)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from mlproject.experiments import dvcexp, sweep
from mlproject.experiments.dvcexp import Experiment, ExperimentError, Objective

from conftest import ROOT, run

VENV = Path(sys.executable).parent.parent
ACC = Objective("accuracy", "reports/eval/metrics.json", True)


def exp(name: str, accuracy: float | None, params=None, state="success") -> Experiment:
    metrics = {} if accuracy is None else {ACC.metrics_file: {"accuracy": accuracy, "loss": 0.1}}
    return Experiment(name, f"{name:0<40}", state, params or {}, metrics)


def test_the_grid_expands_as_dvc_expands_it(monkeypatch):
    monkeypatch.chdir(ROOT)
    grid = sweep.expand(["train.lr=0.001,0.003,0.01", "model=cnn,mlp"])
    assert len(grid) == 6
    assert {tuple(sorted(c)) for c in grid} == {
        (f"model={m}", f"train.lr={lr}")
        for lr in ("0.001", "0.003", "0.01")
        for m in ("cnn", "mlp")
    }
    assert sweep.label(["model=mlp", "train.lr=0.01"]) == {"model": "mlp", "train.lr": "0.01"}
    with pytest.raises(ExperimentError, match="no grid"):
        sweep.expand([])
    with pytest.raises(ExperimentError, match="bad sweep override"):
        sweep.expand(["train.lr=0.1,,"])


def test_finished_combinations_are_matched_by_their_composed_params(monkeypatch):
    monkeypatch.chdir(ROOT)
    grid = sweep.expand(["model=cnn,mlp"])
    mlp = sweep.composed(["model=mlp"])
    found = [exp("new", 0.9, mlp), exp("old", 0.8, mlp), exp("q", None, mlp, state="queued")]
    matched = sweep.match(grid, found)
    assert list(matched) == [grid.index(["model=mlp"])]
    assert matched[grid.index(["model=mlp"])].name == "new"  # the newest finished one


def test_the_gate_s_first_metric_ranks_and_the_best_is_marked():
    params = {"gate": {"min": {"accuracy": 0.9, "f1_macro": 0.9}, "lower_is_better": ["loss"]}}
    assert dvcexp.objective(params) == ACC
    assert dvcexp.objective(params, metric="loss").higher_is_better is False
    with pytest.raises(ExperimentError, match="names no metric"):
        dvcexp.objective({"gate": {}})
    rows = [(exp("b", 0.91), {"lr": "0.1"}), (exp("none", None), {}), (exp("a", 0.97), {})]
    lines = dvcexp.table(rows, ACC).splitlines()
    body = [line for line in lines[2:]]
    assert body[0].startswith("*") and " a " in body[0]
    assert " b " in body[1] and not body[1].startswith("*")
    assert " none " in body[2]  # no metric: last
    assert "accuracy (max)" in lines[0]
    lowest = Objective("loss", ACC.metrics_file, False)
    assert dvcexp.ranked(rows[:1] + rows[2:], lowest)[0][0].name in ("a", "b")


def test_a_queue_that_stalls_is_restarted_once_then_stopped_with_what_to_do(monkeypatch):
    """DVC's known stalls (treeverse/dvc#8165, #10398, #10562): tasks stay queued, none runs."""
    statuses = iter([{"t1": "Success", "t2": "Queued"}] * 100)
    monkeypatch.setattr(sweep, "queue_status", lambda: next(statuses))
    calls = []
    monkeypatch.setattr(sweep, "dvc", lambda *a, **k: calls.append(a))
    with pytest.raises(ExperimentError) as err:
        sweep.wait({"t1", "t2"}, jobs=2, timeout=0, stall_after=0.05, poll=0.01, out=io.StringIO())
    assert calls == [("queue", "start", "-j", "2")]  # the documented workaround, once
    message = str(err.value)
    for words in ("stalled", "#8165", "dvc queue status", "dvc queue logs", "dvc queue kill"):
        assert words in message


def test_the_whole_sweep_has_a_time_limit(monkeypatch):
    monkeypatch.setattr(sweep, "queue_status", lambda: {"t1": "Running"})
    out = io.StringIO()
    with pytest.raises(ExperimentError, match="past --timeout"):
        sweep.wait({"t1"}, jobs=1, timeout=0.05, poll=0.01, out=out)
    assert "0/1 done, 1 running, 0 queued" in out.getvalue()


def make(target: str, cwd: Path, *assignments: str, timeout: float = 600):
    """`make <target>` with this environment's venv, never reinstalling it."""
    command = ["make", "-o", f"{VENV}/bin/.installed", f"VENV={VENV}", target, *assignments]
    return run(command, cwd, timeout=timeout)


def test_a_queue_read_that_races_a_worker_is_retried(monkeypatch):
    """A half-written broker message (treeverse/dvc#10428) fails one read, not the sweep."""
    answers = [ValueError("Expecting value"), {"t1": "Running"}, {"t1": "Success"}]

    def status():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(sweep, "queue_status", status)
    assert sweep.wait({"t1"}, jobs=1, timeout=0, poll=0.01, out=io.StringIO()) == {"t1": "Success"}
    monkeypatch.setattr(sweep, "queue_status", lambda: (_ for _ in ()).throw(ValueError("bad")))
    with pytest.raises(ExperimentError, match="cannot read the DVC task queue"):
        sweep.wait({"t1"}, jobs=1, timeout=0, poll=0.001, out=io.StringIO())


@pytest.mark.slow  # two short experiments through DVC's task queue (minutes on a loaded machine)
def test_make_sweep_queues_runs_ranks_and_skips_finished_combinations(project: Path):
    grid = "ARGS=-S train.epochs=1 -S train.lr=0.01,0.0001"
    first = make("sweep", project, grid, "JOBS=2", timeout=1500)
    out = first.stdout
    assert "2 combination(s); 0 finished before (skipped), 2 to run with 2 job(s)" in out
    assert "sweep: 2/2 done, 0 running, 0 queued" in out
    table = out[out.index("accuracy (max)") :].splitlines()
    rows = [line for line in table[2:] if line.strip()]
    assert len(rows) == 2
    # lr 0.0001 learns little in one epoch; the columns: mark, name, rev, epochs, lr, accuracy
    assert rows[0].startswith("*") and rows[0].split()[4] == "0.01"
    names = [line.lstrip("* ").split()[0] for line in rows]
    listed = run(["dvc", "exp", "show", "--json"], project).stdout
    assert all(f'"{name}"' in listed for name in names)  # DVC experiments, as dvc exp show lists

    again = make("sweep", project, grid, "JOBS=2", timeout=600).stdout
    assert "2 finished before (skipped), 0 to run" in again
    assert "done," not in again  # nothing queued, nothing waited for
    assert again[again.index("accuracy (max)") :].splitlines()[2].startswith("*")
