"""The retraining workflow, run by act (on schedule, then on repository_dispatch) in a temporary
repository with a registry, a local DVC remote and a bare `origin`; `cml` and `gh` are
recorders. A retrained model worse than production fails the gate and opens no pull request; a
better one opens one that carries the report. Then the PR step's git and GitHub calls alone: the
token on a private origin, and GitHub's 403 when workflows may not open pull requests."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from mlproject.ops import retrain

from actlib import act, bare_origin, commit_all, remove, require_act, workspace
from actlib import set_params as edit
from conftest import ROOT, run

RETRAIN = ROOT / ".github" / "workflows" / "retrain.yml"
RECORDER = """#!{python}
import json, os, pathlib, sys, time
out = pathlib.Path(os.environ["RECORD_DIR"])
out.mkdir(parents=True, exist_ok=True)
(out / f"{tool}-{{time.time_ns()}}.json").write_text(json.dumps(
    {{"tool": "{tool}", "argv": sys.argv[1:], "env_token": os.environ.get("REPO_TOKEN")}}))
if {code}:
    # What CML (Octokit) prints when GitHub refuses pulls.create to GITHUB_TOKEN.
    print("HttpError: GitHub Actions is not permitted to create or approve pull requests. "
          "- https://docs.github.com/rest/pulls/pulls#create-a-pull-request (status 403)",
          file=sys.stderr)
    sys.exit(1)
print("https://github.com/acme/mlproject/pull/12")
"""
WEAK = {"epochs: 40": "epochs: 1", "T_max: 40": "T_max: 1", "lr: 0.003": "lr: 1.0e-05"}
SHORT = {"epochs: 40": "epochs: 3", "T_max: 40": "T_max: 3"}


def registry(repo: Path, *args: str) -> str:
    return run([sys.executable, "-m", "mlproject.ops.registry", *args], repo).stdout


def recorders(shims: Path, **exit_codes: int) -> None:
    shims.mkdir(parents=True, exist_ok=True)
    for tool in ("cml", "gh"):
        (shims / tool).write_text(
            RECORDER.format(python=sys.executable, tool=tool, code=exit_codes.get(tool, 0))
        )
        (shims / tool).chmod(0o755)


class Step:
    """A step's outcome under act, as the assertions below read it."""

    def __init__(self, result: str):
        self.skipped = result == "skipped"
        self.returncode = 0 if result in ("success", "skipped") else 1


def run_retrain(repo: Path, event: str, reason: str | None = None):
    """retrain.yml under act on `event`; ({step name: Step}, cml/gh calls, the run's
    `retrain-report` artifact folder: report, lock)."""
    body = None
    if event == "repository_dispatch":
        body = act.payload(event, repo, client_payload={"reason": reason})
    result = act.run_workflow(
        "retrain.yml",
        event,
        repo,
        event_payload=body,
        secrets={"RETRAIN_TOKEN": "pat_retrain", "GITHUB_TOKEN": "ghs_default"},
        echo=False,
    )
    steps = {name: Step(r) for (job, name), r in result.steps.items() if job == "retrain"}
    calls = [c for c in result.records if c["tool"] in ("cml", "gh")]
    return steps, calls, result.state / "artifacts" / "retrain-report"


@pytest.fixture(scope="module")
def repo(pipeline_repo):
    """The trained demo project, committed on main, registered as v0.1.0 and in prod, pushed to
    a bare `origin`; in a folder act's runner user can own."""
    require_act()
    repo = workspace(pipeline_repo)
    root = repo.parent
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
    bare_origin(repo)
    yield repo
    remove(repo)


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


@pytest.mark.slow  # retrains twice (short runs) in a copy of pipeline_repo
def test_worse_model_opens_no_pr_and_better_model_opens_one_with_the_report(repo, tmp_path):
    prod_v1 = registry(repo, "base").strip()

    # A config change that cripples training: the retrained model is worse than production.
    edit(repo, WEAK)
    commit_all(repo, "weaker training")
    steps, calls, ran_in = run_retrain(repo, "schedule")
    assert steps["Retrain (dvc repro)"].returncode == 0
    assert steps["Report against the model in production"].returncode == 0
    report = json.loads((ran_in / "reports/pr/report.json").read_text())
    assert report["base"]["rev"] == prod_v1
    assert report["gate"]["passed"] is False
    assert steps["Quality gate"].returncode != 0
    assert steps["Open or update the pull request"].skipped
    assert not [c for c in calls if c["argv"][:2] == ["pr", "create"]]
    # Even when run out of order, the PR step refuses a failed gate.
    shutil.copytree(ran_in / "reports", repo / "reports", dirs_exist_ok=True)
    assert "no pull request" in run(["make", "retrain-pr"], repo).stdout

    # That weak model reaches production (v0.2.0); the next retraining, with the normal
    # (shorter) training, is better than it and opens a pull request.
    run(["dvc", "repro", "-q"], repo)
    commit_all(repo, "weak model outputs")
    run(["dvc", "push", "-q"], repo)
    registry(repo, "register", "--bump", "minor")
    registry(repo, "promote", "--stage", "prod")
    prod_v2 = registry(repo, "base").strip()
    edit(repo, {v: k for k, v in WEAK.items()})
    edit(repo, SHORT)
    commit_all(repo, "normal training")
    run(["git", "push", "-q", "origin", "--all"], repo)
    run(["git", "push", "-q", "origin", "--tags"], repo)
    steps, calls, ran_in = run_retrain(repo, "repository_dispatch", "drift: brightness")
    assert steps["Quality gate"].returncode == 0
    assert steps["Open or update the pull request"].returncode == 0
    report = json.loads((ran_in / "reports/pr/report.json").read_text())
    assert report["base"]["rev"] == prod_v2
    (pr,) = [c for c in calls if c["argv"][:2] == ["pr", "create"]]
    argv = pr["argv"]
    # The PR is opened with RETRAIN_TOKEN, a token whose PRs trigger CI.
    assert pr["token_sha256"] == hashlib.sha256(b"pat_retrain").hexdigest()
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
    shutil.copy2(ran_in / "dvc.lock", repo / "dvc.lock")  # the PR's lock
    status = run(["dvc", "status", "--cloud", "models/model.onnx"], repo).stdout
    assert "new:" not in status


# --- the PR step's git and GitHub calls (no pipeline) -----------------------------------------


def origin_with_branch(tmp_path: Path) -> Path:
    """A bare repository with one branch, retrain/abc, pushed from a work repository."""
    origin, work = tmp_path / "origin.git", tmp_path / "work"
    run(["git", "init", "-q", "--bare", str(origin)], tmp_path)
    run(["git", "init", "-q", "-b", "retrain/abc", str(work)], tmp_path)
    run(["git", "commit", "-q", "--allow-empty", "-m", "retrained"], work)
    run(["git", "push", "-q", str(origin), "retrain/abc"], work)
    return origin


class GitRefsHandler(http.server.BaseHTTPRequestHandler):
    """Git's smart HTTP ref advertisement for one bare repository, behind a token, as GitHub
    serves a private repository: 401 without the token's Authorization header."""

    origin: Path
    expected: str
    seen: list

    def do_GET(self):
        self.seen.append(self.headers.get("Authorization"))
        if self.headers.get("Authorization") != self.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="GitHub"')
            self.end_headers()
            return
        refs = subprocess.run(
            ["git", "upload-pack", "--stateless-rpc", "--advertise-refs", str(self.origin)],
            capture_output=True,
            check=True,
        ).stdout
        body = b"001e# service=git-upload-pack\n0000" + refs
        self.send_response(200)
        self.send_header("Content-Type", "application/x-git-upload-pack-advertisement")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def private_origin(tmp_path):
    """A private repository over HTTP on 127.0.0.1 that accepts the token `s3cret`."""
    token = "s3cret"
    handler = type(
        "Handler",
        (GitRefsHandler,),
        {
            "origin": origin_with_branch(tmp_path),
            "expected": "basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode(),
            "seen": [],
        },
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    clone = tmp_path / "checkout"
    run(["git", "init", "-q", str(clone)], tmp_path)
    url = f"http://127.0.0.1:{server.server_address[1]}/acme/mlproject.git"
    run(["git", "remote", "add", "origin", url], clone)
    yield clone, token, handler.seen
    server.shutdown()


def test_branch_lookup_on_a_private_origin_sends_the_token_without_showing_it(
    private_origin, monkeypatch, capfd
):
    clone, token, seen = private_origin
    monkeypatch.chdir(clone)
    for name in ("REPO_TOKEN", "GH_TOKEN", "GITHUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    # No credentials (persist-credentials: false): an error that says so, not "no branch".
    with pytest.raises(retrain.RetrainError, match="REPO_TOKEN"):
        retrain.branch_exists("retrain/abc")
    monkeypatch.setenv("REPO_TOKEN", token)
    assert retrain.branch_exists("retrain/abc") is True
    assert retrain.branch_exists("retrain/other") is False
    assert seen[-1] and seen[-1].startswith("basic ")
    out, err = capfd.readouterr()
    assert token not in out + err


def test_branch_lookup_on_a_local_bare_origin(tmp_path, monkeypatch):
    origin = origin_with_branch(tmp_path)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    monkeypatch.chdir(clone)
    monkeypatch.setenv("REPO_TOKEN", "unused-for-a-path")
    assert retrain.branch_exists("retrain/abc") is True
    assert retrain.branch_exists("retrain/none") is False


def test_a_403_on_pulls_create_fails_with_the_setting_to_change(tmp_path, monkeypatch):
    shims = tmp_path / "bin"
    recorders(shims, cml=1)
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
    monkeypatch.setenv("RECORD_DIR", str(tmp_path / "record"))
    with pytest.raises(retrain.RetrainError) as refused:
        retrain.create_pr(["pr", "create", "--branch", "retrain/abc", "models"])
    message = str(refused.value)
    assert "Settings > Actions > General > Workflow permissions" in message
    assert "Allow GitHub Actions to create and approve pull requests" in message
    assert "RETRAIN_TOKEN" in message
    recorders(shims)  # a token that may open pull requests
    assert retrain.create_pr(["pr", "create"]) == "https://github.com/acme/mlproject/pull/12"
