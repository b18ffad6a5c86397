"""`make repro`'s closing lines (python -m mlproject.report.ci repro): the stage that failed, the
tracked files the run changed with the command to commit them (nothing staged), and why the bytes
differ from the committed ones when the numerics do. Real DVC and git in temporary folders."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mlproject.report.ci import changes_summary, tracked_changes

from conftest import run

DVC_YAML = """\
stages:
  first:
    cmd: python -c "open('a.txt', 'w').write('a')"
    outs:
      - a.txt:
          cache: false
  second:
    deps:
      - a.txt
    cmd: python -c "import sys; sys.exit('bad input in a.txt')"
    outs:
      - b.txt
"""


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    run(["git", "init", "-q", "-b", "main"], repo)
    run(["dvc", "init", "-q"], repo)
    run(["dvc", "config", "core.autostage", "false"], repo)
    return repo


@pytest.mark.slow  # runs the pipeline's stages: seconds
def test_the_summary_names_the_stage_that_failed(tmp_path):
    repo = _repo(tmp_path)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    run("git add -A && git commit -q --allow-empty -m pipeline", repo)
    out = run([sys.executable, "-m", "mlproject.report.ci", "repro"], repo, check=False)
    assert out.returncode != 0
    summary = [line for line in out.stdout.splitlines() if line.startswith("repro: ")]
    assert summary[0] == (
        "repro: FAILED at stage second (its error is above) · ran: first · from the cache: none"
        " · up to date: none"
    ), out.stdout


def _card(numerics: dict | None) -> str:
    return json.dumps({"name": "m", **({"numerics": numerics} if numerics else {})}) + "\n"


def test_changed_files_are_listed_with_the_commit_command_and_the_numerics_that_differ(tmp_path):
    repo = _repo(tmp_path)
    here = {
        "torch": "2.14.1+cu130",
        "device": "cpu",
        "arch": "x86_64",
        "isa": "AVX2",
        "pinning": "pinned: 1 thread(s)",
    }
    (repo / "models").mkdir()
    (repo / "models/model_card.json").write_text(_card({**here, "arch": "aarch64"}))
    (repo / "metrics.json").write_text('{"accuracy": 0.9}\n')
    (repo / "notes.md").write_text("mine\n")
    run("git add -A && git commit -q --allow-empty -m outputs", repo)
    (repo / "notes.md").write_text("my own edit, before the run\n")

    before = tracked_changes(str(repo))
    (repo / "models/model_card.json").write_text(_card(here))  # what the run rewrote
    (repo / "metrics.json").write_text('{"accuracy": 0.91}\n')
    lines = changes_summary(before, tracked_changes(str(repo)), str(repo))

    assert lines[0].startswith("repro: other bytes than committed, made with other numerics: ")
    assert "arch aarch64 (committed) vs x86_64 (here)" in lines[0]
    assert lines[1] == (
        "repro: changed 2 tracked file(s), nothing staged; to commit them: git add metrics.json "
        "models/model_card.json && git commit -m 'pipeline outputs refreshed'"
    )
    assert run(["git", "diff", "--cached", "--name-only"], repo).stdout == ""

    # Same numerics: the files are listed, no numerics line; nothing changed: no lines at all.
    run("git add -A && git commit -q --allow-empty -m again", repo)
    before = tracked_changes(str(repo))
    (repo / "metrics.json").write_text('{"accuracy": 0.92}\n')
    (lines_same,) = changes_summary(before, tracked_changes(str(repo)), str(repo))
    assert lines_same.startswith("repro: changed 1 tracked file(s)")
    after = tracked_changes(str(repo))
    assert changes_summary(after, after, str(repo)) == []
