"""Like with like: a base whose outputs are not in the DVC cache is reproduced here, in a git
worktree at the base commit that a second report reuses."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from conftest import other_arch, run

pytestmark = pytest.mark.slow

BUILD = [sys.executable, "-m", "mlproject.report", "build", "--no-plots", "--no-latency"]


def test_an_uncached_base_is_rebuilt_here_and_matches_its_committed_outputs(
    pipeline_repo, tmp_path
):
    repo = Path(shutil.copytree(pipeline_repo, tmp_path / "repo", symlinks=True))
    run("git add -A && git commit -q --allow-empty -m outputs", repo)
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


def _fake_other_machine(repo: Path) -> dict:
    """Make the committed outputs look like another machine's: another architecture in the card's
    fingerprint, and other numbers in every file the report reads from the base."""
    card_path = repo / "models/model_card.json"
    card = json.loads(card_path.read_text())
    card["numerics"] = {
        **card["numerics"],
        "arch": other_arch(card["numerics"]["arch"]),
    }
    card["sha256"] = "f" * 64
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    metrics_path = repo / "reports/eval/metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics_path.write_text(json.dumps({**metrics, "accuracy": 0.5, "loss": 9.0}) + "\n")
    classes_path = repo / "reports/eval/classes.json"
    classes = json.loads(classes_path.read_text())
    bumped = {
        k: {**v, "f1": 0.1} if isinstance(v, dict) and "f1" in v else v for k, v in classes.items()
    }
    classes_path.write_text(json.dumps(bumped) + "\n")
    predictions = repo / "reports/eval/predictions.csv"
    lines = predictions.read_text().splitlines()
    header = lines[0].split(",")
    i, j = header.index("actual"), header.index("predicted")
    flipped = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        cells[j] = "0" if cells[i] != "0" else "1"  # every prediction wrong
        flipped.append(",".join(cells))
    predictions.write_text("\n".join(flipped) + "\n")
    return card


def test_a_base_made_with_other_numerics_is_rebuilt_and_nothing_of_it_comes_from_git(
    pipeline_repo, tmp_path
):
    """On another architecture (or torch build) the committed base outputs are never compared with
    head's: the base is rebuilt here, and metrics, per-class rows, predictions and the model
    hash all come from that rebuild. The report says which and why."""
    repo = Path(shutil.copytree(pipeline_repo, tmp_path / "repo", symlinks=True))
    head_card = json.loads((repo / "models/model_card.json").read_text())
    tracked = [
        "models/model_card.json",
        "reports/eval/metrics.json",
        "reports/eval/classes.json",
        "reports/eval/predictions.csv",
    ]
    saved = {rel: (repo / rel).read_bytes() for rel in tracked}
    _fake_other_machine(repo)
    run("git add -A && git commit -q --allow-empty -m 'outputs of another machine'", repo)
    for rel, data in saved.items():  # head: this machine's outputs, in the workspace
        (repo / rel).write_bytes(data)

    built = run([*BUILD, "--base", "HEAD"], repo)
    report = json.loads((repo / "reports/pr/report.json").read_text())
    outputs = report["base"]["outputs"]
    assert outputs["source"] == "rebuilt", built.stderr
    arch = head_card["numerics"]["arch"]
    assert f"arch {other_arch(arch)} (base) vs {arch} (head)" in outputs["why"]
    assert outputs["numerics"]["base"] == outputs["numerics"]["head"] == head_card["numerics"]
    # Forced: nothing of the other machine's comes back from the DVC cache or a remote.
    assert {"prepare", "train", "evaluate", "export"} <= set(outputs["stages_run"])
    # Everything of the base from the rebuild: same code, same numerics, so equal to head.
    for table in report["metrics"]:
        marks = {r["name"]: r["mark"] for r in table["rows"]}
        assert set(marks.values()) <= {"same", "neutral"}, (table["file"], marks)
    assert any(t["file"] == "reports/eval/classes.json" for t in report["metrics"])
    assert report["model"]["sha256"]["old"] == report["model"]["sha256"]["new"]
    accuracy = report["significance"]["accuracy"]
    assert (accuracy["fixed"], accuracy["broken"]) == (0, 0)
    md = (repo / "reports/pr/report.md").read_text()
    assert "base: its outputs rebuilt here, on this runner (its committed outputs were made" in md
    assert f"arch {other_arch(arch)} (base)" in md
