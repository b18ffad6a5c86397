"""`python -m mlproject.report build` on a real repository: a base with no metrics yet, bad input,
and the report side's independence from the training code."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ENV, ROOT, run


def report_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlproject.report", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
    )


def test_the_report_package_imports_neither_torch_nor_the_training_modules():
    code = (
        "import sys, mlproject.report.build, mlproject.report.plots, mlproject.report.ci, "
        "mlproject.report.model, mlproject.report.__main__; "
        "bad = [m for m in sys.modules if m == 'torch' or m.split('.')[0] == 'torch' "
        "or m in ('mlproject.pipeline.train', 'mlproject.pipeline.models', 'mlproject.pipeline.export')]; print(bad)"
    )
    result = run([sys.executable, "-c", code], ROOT)
    assert result.stdout.strip() == "[]"


def test_an_unknown_base_is_a_clear_error_and_writes_nothing(tmp_path):
    result = report_cli("build", "--base", "no-such-rev", "--out", str(tmp_path / "pr"), cwd=ROOT)
    assert result.returncode == 2
    assert "BASE=no-such-rev is not a commit" in result.stderr
    assert not (tmp_path / "pr").exists()


@pytest.mark.slow
def test_a_base_without_metrics_gives_new_rows_and_the_floors_still_apply(pipeline_repo, tmp_path):
    repo = Path(shutil.copytree(pipeline_repo, tmp_path / "repo", symlinks=True))
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "--allow-empty", "-m", "outputs"], repo)
    # A base from before the pipeline existed: no reports, no model card.
    run(["git", "checkout", "-q", "-b", "empty-base"], repo)
    run(["git", "rm", "-r", "-q", "reports", "models/model_card.json"], repo)
    run(["git", "commit", "-q", "--allow-empty", "-m", "no metrics yet"], repo)
    run(["git", "checkout", "-q", "main"], repo)

    result = report_cli("build", "--base", "empty-base", cwd=repo)
    assert result.returncode == 0, result.stderr
    report = json.loads((repo / "reports/pr/report.json").read_text())
    eval_rows = report["metrics"][0]["rows"]
    assert report["metrics"][0]["file"] == "reports/eval/metrics.json"
    assert {r["mark"] for r in eval_rows} == {"new"}
    assert report["gate"]["passed"]
    assert any("no base value" in c["reason"] for c in report["gate"]["checks"])
    assert report["model"]["size"]["old"] is None and report["model"]["size"]["new"] > 0
    assert report["model"]["latency_ms"]["new"] > 0
    md = (repo / "reports/pr/report.md").read_text()
    assert "The base has no `reports/eval/metrics.json` yet" in md
    for plot in report["plots"]:
        assert (repo / "reports/pr" / plot["image"]).stat().st_size > 1000
    assert "not at base" not in md  # said inside the images, not in the text

    gate = report_cli("gate", "--base", "empty-base", cwd=repo)
    assert gate.returncode == 0 and "passed" in gate.stdout


@pytest.mark.slow  # needs the trained demo project (pipeline_repo)
def test_stale_head_outputs_are_refreshed_first_or_refused_never_reported(pipeline_repo, tmp_path):
    """After a params change on a branch, `make report` and `make gate` do not report on the
    old outputs: they run the stale stages first (and say so), or refuse naming them."""
    repo = Path(shutil.copytree(pipeline_repo, tmp_path / "repo", symlinks=True))
    run("git add -A && git commit -q --allow-empty -m outputs", repo)
    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("epochs: 40", "epochs: 2", 1))

    refused = report_cli("gate", "--base", "HEAD", "--head-outputs", "refuse", cwd=repo)
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("error: head's outputs are stale: train (")
    assert "changed deps: params.yaml (train)" in line and "make repro" in line
    assert not (repo / "reports/pr").exists()

    built = report_cli("build", "--base", "HEAD", "--no-plots", "--no-latency", cwd=repo)
    assert built.returncode == 0, built.stderr
    assert "head's outputs are stale: train (" in built.stdout
    assert "Running stage 'train'" in built.stdout
    report = json.loads((repo / "reports/pr/report.json").read_text())
    assert {p["name"] for p in report["params"]} >= {"train.epochs"}
    assert json.loads((repo / "reports/train/metrics.json").read_text())["step"] <= 2  # was 24
    assert "up to date" in run(["dvc", "status"], repo).stdout
