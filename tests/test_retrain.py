"""The retraining workflow's steps, run for real in a temporary repository with a registry and a
local DVC remote; `cml` and `gh` are recorders. A retrained model worse than production fails
the gate and opens no pull request; a better one opens one that carries the report."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from mlproject.report.workflow import run_workflow

from conftest import ENV, ROOT, run

pytestmark = pytest.mark.slow  # retrains twice (short runs) in a copy of pipeline_repo

RETRAIN = ROOT / ".github" / "workflows" / "retrain.yml"
RECORDER = """#!{python}
import json, os, pathlib, sys, time
out = pathlib.Path(os.environ["RECORD_DIR"])
out.mkdir(parents=True, exist_ok=True)
(out / f"{tool}-{{time.time_ns()}}.json").write_text(json.dumps(
    {{"tool": "{tool}", "argv": sys.argv[1:], "env_token": os.environ.get("REPO_TOKEN")}}))
print("https://github.com/acme/mlproject/pull/12")
"""
WEAK = {"epochs: 40": "epochs: 1", "T_max: 40": "T_max: 1", "lr: 0.003": "lr: 1.0e-05"}
SHORT = {"epochs: 40": "epochs: 3", "T_max: 40": "T_max: 3"}


def edit(repo: Path, replacements: dict[str, str]) -> None:
    """Edit params.yaml and conf/config.yaml alike (textually, as a user's commit would)."""
    for rel in ("params.yaml", "conf/config.yaml"):
        text = (repo / rel).read_text()
        for old, new in replacements.items():
            assert old in text or rel != "params.yaml", (rel, old)
            text = text.replace(old, new)
        (repo / rel).write_text(text)


def commit_all(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", message], repo)


def registry(repo: Path, *args: str) -> str:
    return run([sys.executable, "-m", "mlproject.registry", *args], repo).stdout


def run_retrain(repo: Path, tmp: Path, reason: str):
    shims, record = tmp / "bin", tmp / "record"
    shims.mkdir(parents=True)
    for tool in ("cml", "gh"):
        (shims / tool).write_text(RECORDER.format(python=sys.executable, tool=tool))
        (shims / tool).chmod(0o755)
    env = {
        **ENV,
        "PATH": f"{shims}:{ENV['PATH']}",
        "RECORD_DIR": str(record),
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(tmp / "summary.md"),
    }
    env.pop("BASE", None)
    context = {
        "github": {
            "event_name": "workflow_dispatch",
            "token": "ghs_default",
            "event": {},
            "repository": "acme/mlproject",
        },
        "inputs": {"reason": reason},
        "secrets": {"RETRAIN_TOKEN": "pat_retrain"},
        "vars": {},
    }
    results = run_workflow(RETRAIN, context, cwd=repo, env=env, echo=False)
    calls = [json.loads(p.read_text()) for p in sorted(record.glob("*.json"))]
    return {r.name: r for r in results}, calls


@pytest.fixture(scope="module")
def repo(pipeline_repo, tmp_path_factory) -> Path:
    """The trained demo project, committed on main, registered as v0.1.0 and in prod."""
    root = tmp_path_factory.mktemp("retrain")
    repo = Path(shutil.copytree(pipeline_repo, root / "repo", symlinks=True))
    # The demo's floors (0.95) are for 40 epochs; the short runs here are judged on regression.
    for rel in ("params.yaml", "conf/config.yaml"):
        text = (repo / rel).read_text()
        (repo / rel).write_text(
            text.replace("accuracy: 0.95", "accuracy: 0.5").replace(
                "f1_macro: 0.95", "f1_macro: 0.5"
            )
        )
    run(["dvc", "remote", "add", "-d", "local", str(root / "dvc-remote")], repo)
    commit_all(repo, "trained model")
    run(["dvc", "push", "-q"], repo)
    registry(repo, "register")
    registry(repo, "promote", "--stage", "prod")
    return repo


def test_every_step_is_a_make_target_and_the_triggers_are_schedule_manual_and_drift():
    workflow = yaml.safe_load(RETRAIN.read_text())
    on = workflow.get("on", workflow.get(True))
    assert on["schedule"][0]["cron"]
    assert "reason" in on["workflow_dispatch"]["inputs"]
    assert on["repository_dispatch"]["types"] == ["drift-detected"]
    steps = workflow["jobs"]["retrain"]["steps"]
    runs = [s["run"] for s in steps if "run" in s]
    assert runs == [
        "make ci-install-cml",
        "make retrain-data",
        "make retrain-repro",
        "make retrain-report",
        "make ci-pr-summary",
        "make ci-pr-gate",
        "make retrain-pr",
    ]
    assert (
        "RETRAIN_TOKEN"
        in next(s for s in steps if s.get("run") == "make retrain-pr")["env"]["REPO_TOKEN"]
    )


def test_worse_model_opens_no_pr_and_better_model_opens_one_with_the_report(repo, tmp_path):
    prod_v1 = registry(repo, "base").strip()

    # A config change that cripples training: the retrained model is worse than production.
    edit(repo, WEAK)
    commit_all(repo, "weaker training")
    steps, calls = run_retrain(repo, tmp_path / "worse", "drift: brightness")
    assert steps["Retrain (dvc repro)"].returncode == 0
    assert steps["Report against the model in production"].returncode == 0
    report = json.loads((repo / "reports/pr/report.json").read_text())
    assert report["base"]["rev"] == prod_v1
    assert report["gate"]["passed"] is False
    assert steps["Quality gate"].returncode != 0
    assert steps["Open or update the pull request"].skipped
    assert not [c for c in calls if c["argv"][:2] == ["pr", "create"]]
    # Even when run out of order, the PR step refuses a failed gate.
    assert "no pull request" in run(["make", "retrain-pr"], repo).stdout

    # That weak model reaches production (v0.2.0); the next retraining, with the normal
    # (shorter) training, is better than it and opens a pull request.
    commit_all(repo, "weak model outputs")
    run(["dvc", "push", "-q"], repo)
    registry(repo, "register", "--bump", "minor")
    registry(repo, "promote", "--stage", "prod")
    prod_v2 = registry(repo, "base").strip()
    edit(repo, {v: k for k, v in WEAK.items()})
    edit(repo, SHORT)
    commit_all(repo, "normal training")
    steps, calls = run_retrain(repo, tmp_path / "better", "drift: brightness")
    assert steps["Quality gate"].returncode == 0
    assert steps["Open or update the pull request"].returncode == 0
    report = json.loads((repo / "reports/pr/report.json").read_text())
    assert report["base"]["rev"] == prod_v2
    (pr,) = [c for c in calls if c["argv"][:2] == ["pr", "create"]]
    argv = pr["argv"]
    assert pr["env_token"] == "pat_retrain"  # a token whose PRs trigger CI
    flags = {argv[i]: argv[i + 1] for i in range(2, len(argv) - 1) if argv[i].startswith("--")}
    assert flags["--branch"].startswith("retrain/")
    assert "classifier@v0.2.0" in flags["--body"]
    assert "drift: brightness" in flags["--title"]
    assert "[skip ci]" not in flags["--message"]
    assert "Quality gate: passed" in flags["--body"]
    assert "`accuracy`" in flags["--body"]
    files = [a for a in argv[2:] if not a.startswith("--") and a not in flags.values()]
    assert "dvc.lock" in files
    assert "models/model_card.json" in files
    assert "reports/eval/metrics.json" in files
    assert "reports/explain/attributions.png" in files
    # The new model is in the DVC remote, so the PR's dvc.lock can be pulled by anyone.
    status = run(["dvc", "status", "--cloud", "models/model.onnx"], repo).stdout
    assert "new:" not in status
