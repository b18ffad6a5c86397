"""Like with like: a base whose outputs are not in the DVC cache is reproduced here, in a git
worktree at the base commit that a second report reuses."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from conftest import run

pytestmark = pytest.mark.slow

BUILD = [sys.executable, "-m", "mlproject.report", "build", "--no-plots", "--no-latency"]


def test_an_uncached_base_is_rebuilt_here_and_matches_its_committed_outputs(
    pipeline_repo, tmp_path
):
    repo = Path(shutil.copytree(pipeline_repo, tmp_path / "repo", symlinks=True))
    run("git add -A && git commit -qm outputs", repo)
    run(["dvc", "remote", "list"], repo)  # no remote: nothing to pull from
    committed = json.loads((repo / "reports/eval/metrics.json").read_text())

    cached = run([*BUILD, "--base", "HEAD"], repo)
    report = json.loads((repo / "reports/pr/report.json").read_text())
    assert report["base"]["outputs"]["source"] == "committed", cached.stderr

    shutil.rmtree(repo / ".dvc/cache")  # a fresh runner: the base's model is nowhere
    first = run([*BUILD, "--base", "HEAD"], repo)
    assert "Running stage 'train'" in first.stdout
    report = json.loads((repo / "reports/pr/report.json").read_text())
    outputs = report["base"]["outputs"]
    assert outputs["source"] == "rebuilt" and not outputs["reused"]
    assert "train" in outputs["stages_run"]
    # Pinned training: the rebuilt base equals the committed one, bit for bit.
    rows = {r["name"]: r for r in report["metrics"][0]["rows"]}
    assert rows["accuracy"]["old"] == committed["accuracy"]
    assert {r["mark"] for r in rows.values()} == {"same"}
    assert (
        report["significance"]["accuracy"]["fixed"],
        report["significance"]["accuracy"]["broken"],
    ) == (0, 0)
    md = (repo / "reports/pr/report.md").read_text()
    assert "base: its outputs rebuilt here, on this runner" in md
    # The worktree lives under .dvc/tmp: nothing new for git to track in head.
    assert "??" not in run(["git", "status", "--porcelain"], repo).stdout

    second = run([*BUILD, "--base", "HEAD"], repo)
    assert "Running stage" not in second.stdout
    report = json.loads((repo / "reports/pr/report.json").read_text())
    assert report["base"]["outputs"]["source"] == "rebuilt" and report["base"]["outputs"]["reused"]

    forced = run([*BUILD, "--base", "HEAD", "--base-outputs", "committed"], repo)
    report = json.loads((repo / "reports/pr/report.json").read_text())
    assert report["base"]["outputs"]["source"] == "committed", forced.stderr
