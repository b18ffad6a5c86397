"""Optuna search, each trial a DVC experiment (mlproject.experiments.hpo): the space file and its
errors, the reports, and a real search in a temporary project (slow): prunes, resumes."""

from __future__ import annotations

import csv
from pathlib import Path

import optuna
import pytest
import yaml

from mlproject.experiments import hpo
from mlproject.experiments.dvcexp import ExperimentError, Objective
from mlproject.experiments.space import load_space
from test_sweep import make

from conftest import ENV, ROOT, run

ACC = Objective("accuracy", "reports/eval/metrics.json", True)
SPACE = {
    "study": "t",
    "fixed": ["train.epochs=2"],
    "params": {
        "model": {"type": "categorical", "choices": ["cnn", "mlp"]},
        "train.lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
        "train.batch_size": {"type": "int", "low": 32, "high": 128, "step": 32},
    },
}


def write(tmp_path: Path, space: dict) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def load(path: Path):
    return load_space(path, conf_dir=ROOT / "conf", params_file=ROOT / "params.yaml")


def test_the_default_space_loads_and_samples_groups_first():
    space = load(ROOT / "conf/hpo/default.yaml")
    assert space.study == "default" and "model" in space.params
    trial = optuna.trial.FixedTrial(
        {"model": "mlp", "train.lr": 0.01, "model.dropout": 0.1, "train.batch_size": 64}
    )
    overrides = space.suggest(trial)
    assert overrides[0] == "model=mlp"
    assert set(overrides) == {
        "model=mlp",
        "train.lr=0.01",
        "model.dropout=0.1",
        "train.batch_size=64",
    }


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"params": {"train.lrr": {"type": "float", "low": 0.1, "high": 1}}}, "'params.train.lrr'"),
        ({"params": {"train.lr": {"type": "float", "low": 1, "high": 0.1}}}, "'params.train.lr'"),
        ({"params": {"train.lr": {"type": "gauss"}}}, "'params.train.lr'"),
        ({"params": {"train.lr": {"type": "float", "low": "a", "high": 1}}}, "train.lr.low"),
        ({"params": {"train.lr": {"type": "float", "low": 0, "high": 1, "log": True}}}, "lr.low"),
        ({"params": {"train.epochs": {"type": "int", "low": 1.5, "high": 3}}}, "epochs.low"),
        ({"params": {"model": {"type": "categorical", "choices": ["cnn", "vit"]}}}, "choices"),
        ({"params": {"model": {"type": "float", "low": 0, "high": 1}}}, "'params.model'"),
        ({"params": {"train.lr": {"type": "float", "low": 0.1, "high": 1, "bins": 3}}}, "bins"),
        ({"params": {}}, "'params'"),
        ({"trials": 3}, "'trials'"),
        ({"pruner": {"type": "hyperband"}}, "'pruner.type'"),
        ({"enqueue": [{"train.momentum": 0.9}]}, "'enqueue[0].train.momentum'"),
        ({"fixed": "train.epochs=2"}, "'fixed'"),
    ],
)
def test_a_bad_space_file_is_rejected_naming_the_key(tmp_path, change, names):
    path = write(tmp_path, {**SPACE, **change})
    with pytest.raises(ExperimentError) as err:
        load(path)
    assert str(path) in str(err.value) and names in str(err.value)


def test_unreadable_space_files_say_so(tmp_path):
    with pytest.raises(ExperimentError, match="no such search space file"):
        load(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("params: [unclosed\n")
    with pytest.raises(ExperimentError, match="not valid YAML"):
        load(tmp_path / "bad.yaml")


def test_the_cli_rejects_a_bad_space_before_any_trial(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    path = write(tmp_path, {**SPACE, "params": {"train.lrr": {"type": "float"}}})
    assert hpo.main(["--trials", "1", "--space", str(path)]) == 1
    assert "'params.train.lrr'" in capsys.readouterr().err
    assert not (tmp_path / ".hpo").exists()


def test_the_progress_line_of_training_is_what_a_trial_reads():
    line = "epoch   3/20  train_loss 0.4100  val_loss 0.3500  val_acc 0.9012  lr 3.00e-03  0.52s  *"
    found = hpo.EPOCH.match(line)
    assert found and found.groups() == ("3", "0.3500", "0.9012")
    source = (ROOT / "src/mlproject/pipeline/train.py").read_text()
    assert 'f"epoch {epoch:3d}/{tc.epochs}  train_loss' in source  # the format it parses


@pytest.mark.slow  # runs optuna and its plots: seconds
def test_reports_best_overrides_table_and_plots(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    space = load(write(tmp_path, SPACE))
    study = optuna.create_study(direction="maximize")
    dist = {
        "train.lr": optuna.distributions.FloatDistribution(1e-4, 3e-2, log=True),
        "model": optuna.distributions.CategoricalDistribution(["cnn", "mlp"]),
    }
    for i, (lr, model, value) in enumerate(
        [(0.01, "cnn", 0.95), (0.001, "mlp", 0.97), (1e-4, "cnn", 0.5)]
    ):
        study.add_trial(
            optuna.trial.create_trial(
                params={"train.lr": lr, "model": model},
                distributions=dist,
                value=value,
                user_attrs={
                    "experiment": f"t-{i}",
                    "overrides": ["train.epochs=2", f"model={model}", f"train.lr={lr}"],
                },
            )
        )
    assert hpo.write_reports(study, space, ACC, out=tmp_path / "hpo") == 0
    best = yaml.safe_load((tmp_path / "hpo/best.yaml").read_text())
    assert best["overrides"] == ["train.epochs=2", "model=mlp", "train.lr=0.001"]
    assert best["experiment"] == "t-1" and best["value"] == 0.97 and best["metric"] == "accuracy"
    rows = list(csv.DictReader((tmp_path / "hpo/trials.csv").open()))
    assert [r["accuracy"] for r in rows] == ["0.9500", "0.9700", "0.5000"]
    assert (tmp_path / "hpo/trials.md").read_text().count("| *") == 1
    for png in ("history.png", "importance.png"):
        assert (tmp_path / "hpo" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # two short trials through `dvc exp run --temp` (minutes on a loaded machine)
def test_make_hpo_runs_trials_as_experiments_prunes_and_resumes(project: Path, tmp_path: Path):
    space = {
        "study": "tiny",
        "fixed": ["train.epochs=3"],
        "pruner": {"type": "median", "startup_trials": 1, "warmup_epochs": 0},
        # A good rate first, then one so small that epoch 1 is far below the median: pruned.
        "enqueue": [{"train.lr": 0.01}, {"train.lr": 1e-6}],
        "params": {"train.lr": {"type": "float", "low": 1e-6, "high": 0.03, "log": True}},
    }
    path = tmp_path / "tiny.yaml"  # outside the repository: the workspace must stay clean
    path.write_text(yaml.safe_dump(space))
    out = make("hpo", project, "TRIALS=2", f"SPACE={path}", timeout=1500).stdout
    assert "0 trial(s) finished before, 2 to run" in out
    assert "trial 1: pruned at epoch 1" in out
    best = yaml.safe_load((project / "reports/hpo/best.yaml").read_text())
    assert best["trial"] == 0 and best["overrides"] == ["train.epochs=3", "train.lr=0.01"]
    rows = list(csv.DictReader((project / "reports/hpo/trials.csv").open()))
    assert [r["state"] for r in rows] == ["complete", "pruned"]
    for name in ("trials.md", "history.png", "importance.png"):
        assert (project / "reports/hpo" / name).is_file()
    listed = run(["dvc", "exp", "show", "--json"], project).stdout
    assert f'"{best["experiment"]}"' in listed  # a DVC experiment, as dvc exp show lists it
    assert (project / ".hpo/tiny.db").is_file()
    assert (
        run(["git", "status", "--porcelain"], project).stdout.strip() == ""
    )  # workspace as it was
    image = next((project / "data").rglob("*.png"))  # trials linked their copies, not these
    assert image.stat().st_nlink == 1 and image.stat().st_mode & 0o200

    again = make("hpo", project, "TRIALS=2", f"SPACE={path}").stdout
    assert "2 trial(s) finished before, 0 to run" in again  # resumed from .hpo/tiny.db


def test_optuna_plots_leave_the_callers_matplotlib_style_alone(tmp_path):
    """Optuna's plots switch to the ggplot style globally; a PR report drawn later in the same
    process must keep its own colours (tests/test_report_plots.py reads them)."""
    import matplotlib
    import optuna

    from mlproject.experiments import hpo

    def style() -> dict:  # the backend is chosen (Agg) on purpose; the rest must not move
        return {k: v for k, v in matplotlib.rcParams.items() if not k.startswith("backend")}

    before = style()
    study = optuna.create_study(direction="maximize")
    for x in (0.1, 0.5, 0.9):
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": x},
                distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
                value=x,
            )
        )
    hpo._plots(study, tmp_path)
    assert (tmp_path / "history.png").stat().st_size > 0
    assert style() == before


@pytest.mark.slow  # runs optuna and its plots: seconds
def test_trials_link_from_the_cache_unless_a_cache_type_is_set(tmp_path, monkeypatch):
    """linked_checkouts() adds cache.type at DVC's system level, kept beside the machine's own
    system config; DVC reads it there, and a project's own cache.type still wins."""
    from mlproject.experiments.dvcexp import LINKS, linked_checkouts

    system = tmp_path / "system"
    system.mkdir()
    (system / "config").write_text("['remote \"shared\"']\n    url = /srv/dvc\n")
    monkeypatch.setenv("DVC_SYSTEM_CONFIG_DIR", str(system))
    repo = tmp_path / "repo"
    repo.mkdir()
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    monkeypatch.chdir(repo)
    env = linked_checkouts()
    made = Path(env["DVC_SYSTEM_CONFIG_DIR"])
    assert made.is_relative_to(repo / ".dvc" / "tmp")  # DVC's scratch folder, git-ignored
    assert "url = /srv/dvc" in (made / "config").read_text()  # the machine's settings kept

    def cache_type() -> tuple[str, str]:
        """(where DVC read cache.type, its value): levels are listed lowest first"""
        shown = run(["dvc", "config", "--list", "--show-origin"], repo, env={**ENV, **env})
        line = [line for line in shown.stdout.splitlines() if "cache.type=" in line][-1]
        origin, setting = line.split("\t")
        return origin, setting.removeprefix("cache.type=")

    assert cache_type() == (str(made / "config"), str(LINKS.split(",")))
    run(["dvc", "config", "cache.type", "copy"], repo)  # the project's choice wins
    assert cache_type() == (".dvc/config", "copy")
    (system / "config").write_text("[cache]\n    type = symlink\n")
    assert linked_checkouts() == {}  # nor is the machine's own cache section overridden
