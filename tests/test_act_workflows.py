"""The workflows run by a real Actions engine (act), as user `runner` when the tests run as root.

Third-party actions are stubs (.github/act/), `cml` and `gh` are recorders, and in plan mode
`make` only records its target, so job selection runs in seconds; the pull-request route runs for
real (the pipeline retrains in act's copy of a prepared repository)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from actlib import act, commit_all, git, pr_branch, remove, require_act, set_params, workspace
from conftest import ROOT, run

AS_RUNNER = os.geteuid() == 0


@pytest.fixture(autouse=True)
def _act_present():
    require_act()


@pytest.fixture(scope="module")
def plain_repo():
    """This project in a runner-owned folder, with a PR branch `feature` (shared; plan runs only)."""
    require_act()
    repo = workspace(ROOT)
    commit_all(repo, "uncommitted work") if git(repo, "status", "--porcelain") else None
    git(repo, "checkout", "-q", "-B", "main")
    pr_branch(repo, {"epochs: 40": "epochs: 8"})
    yield repo
    remove(repo)


def dvc_cache(run: act.Run, phase: str) -> list[dict]:
    """The DVC cache's restores or saves that the cache stub recorded (uv's cache is another)."""
    return [
        r for r in run.recorded("stub:cache") if r["phase"] == phase and r["key"].startswith("dvc-")
    ]


def makes(run: act.Run) -> list[tuple[str, str]]:
    """(job, make target) for each `make` a plan run's steps called, in order."""
    return [(r["job"], " ".join(r["argv"])) for r in run.recorded("make")]


def plan_pr(repo: Path, variables=None, **event) -> act.Run:
    body = act.payload("pull_request", repo, **event)
    return act.run_workflow(
        "pr.yml",
        "pull_request",
        repo,
        event_payload=body,
        variables=variables,
        plan=True,
        echo=False,
    )


# ----------------------------------------------------------------------------- stubs, ci.yml


def test_every_third_party_action_has_a_stub():
    args = act.stub_args(ROOT)
    named = {a.split("@")[0] for a in args[1::2]}
    assert (
        "actions/checkout" in named and "actions/cache" in named and "actions/setup-python" in named
    )
    assert len(named) == len(act.action_refs(ROOT))


@pytest.mark.slow  # a workflow under act: seconds each, minutes together
def test_ci_lint_job_runs_for_real_and_the_test_job_follows_it():
    """The lint job for real; the test job (the whole suite, nested) is listed, not run here:
    the suite that runs it is this one."""
    repo = workspace(ROOT)
    try:
        result = act.run_workflow("ci.yml", "push", repo, job="lint", echo=False)
        listed = act.run_workflow("ci.yml", "push", repo, extra=["-l"], echo=False)
    finally:
        remove(repo)
    assert result.returncode == 0, result.output[-3000:]
    assert result.jobs == {"lint": "success"}
    assert result.step("lint", "Lint code, config and workflows") == "success"
    (python,) = result.recorded("stub:setup-python")
    assert python["argv"] == ["python-version=3.11", "cache="]  # uv's cache is carried instead
    if AS_RUNNER:
        assert python["uid"] == act.RUNNER_UID  # not root, as on GitHub's runners
    # act -l: stage, job id, name; the test job runs after lint (needs: lint).
    assert re.search(r"^0\s+lint\s+Lint\b", listed.output, re.M), listed.output
    assert re.search(r"^1\s+test\s+Test\b", listed.output, re.M), listed.output


# ------------------------------------------------------------------------ pr.yml job selection


@pytest.mark.slow  # a workflow under act: seconds each, minutes together
@pytest.mark.parametrize(
    ("case", "event", "variables", "skipped", "gpu", "comment"),
    [
        ("same-repo", {}, {}, {"gpu-self-hosted", "gpu-launch", "gpu-cloud"}, False, True),
        ("fork", {"fork": True}, {}, {"gpu-self-hosted", "gpu-launch", "gpu-cloud"}, False, False),
        # Fix 6: no GPU runner configured: the label changes nothing, the CPU report is posted.
        (
            "gpu, GPU_RUNNER unset",
            {"labels": ("gpu",), "action": "labeled"},
            {},
            {"gpu-self-hosted", "gpu-launch", "gpu-cloud"},
            False,
            True,
        ),
        (
            "gpu, fork",
            {"labels": ("gpu",), "fork": True},
            {"GPU_RUNNER": "self-hosted"},
            {"gpu-self-hosted", "gpu-launch", "gpu-cloud"},
            False,
            False,
        ),
        (
            "gpu, self-hosted",
            {"labels": ("gpu",)},
            {"GPU_RUNNER": "self-hosted", "SELF_HOSTED_ACK": "true"},
            {"cpu", "gpu-launch", "gpu-cloud"},
            True,
            True,
        ),
        (
            "gpu, self-hosted, public repository without SELF_HOSTED_ACK",
            {"labels": ("gpu",)},
            {"GPU_RUNNER": "self-hosted", "SELF_HOSTED_ACK": ""},
            {"gpu-self-hosted", "gpu-launch", "gpu-cloud"},
            False,
            True,
        ),
        (
            "gpu, cml-cloud",
            {"labels": ("gpu",)},
            {"GPU_RUNNER": "cml-cloud"},
            {"cpu", "gpu-self-hosted"},
            True,
            True,
        ),
        (
            "another label",
            {"labels": ("docs",), "action": "labeled"},
            {},
            {"cpu", "gpu-self-hosted", "gpu-launch", "gpu-cloud"},
            False,
            False,
        ),
    ],
)
def test_pr_training_routes(plain_repo, case, event, variables, skipped, gpu, comment):
    result = plan_pr(plain_repo, variables, **event)
    callers = {"cpu", "gpu-self-hosted", "gpu-launch", "gpu-cloud"}
    assert {j for j, r in result.jobs.items() if r == "skipped" and j in callers} == skipped, (
        result.jobs
    )
    targets = makes(result)
    if skipped == {"cpu", "gpu-self-hosted", "gpu-launch", "gpu-cloud"}:
        assert targets == []
        return
    assert ("train", "ci-pr-repro") in targets and ("train", "ci-pr-gate") in targets
    assert (("train", "ci-test-gpu") in targets) is gpu
    assert (("comment", "ci-pr-comment") in targets) is comment
    assert (("gpu-launch", "ci-gpu-runner") in targets) is (
        variables.get("GPU_RUNNER") == "cml-cloud"
    )
    # The refusal job runs (and says why) exactly when a self-hosted route is refused.
    refused = "SELF_HOSTED_ACK" in variables and variables["SELF_HOSTED_ACK"] != "true"
    assert (("gpu-refused", "ci-gpu-route") in targets) is refused


@pytest.mark.slow  # a workflow under act: seconds each, minutes together
def test_fork_prs_get_no_secrets_and_no_comment_job(plain_repo):
    body = act.payload("pull_request", plain_repo, fork=True)
    # act hands secrets to every run; GitHub gives a fork's run none: the workflow must not need them.
    result = act.run_workflow(
        "pr.yml", "pull_request", plain_repo, event_payload=body, plan=True, echo=False
    )
    assert result.jobs.get("comment") == "skipped"
    assert not result.recorded("stub:configure-aws-credentials")
    assert not result.recorded("stub:google-auth")


@pytest.mark.slow  # a workflow under act: seconds each, minutes together
def test_dependabot_runs_skip_the_cloud_logins_and_the_comment_and_stay_green(plain_repo):
    """Dependabot's runs get a read-only token, no OIDC token and no secrets: with OIDC
    configured, the logins would fail and the comment would get a 403."""
    body = act.payload("pull_request", plain_repo)
    body["pull_request"]["user"] = {"login": "dependabot[bot]"}
    result = act.run_workflow(
        "pr.yml",
        "pull_request",
        plain_repo,
        event_payload=body,
        plan=True,
        echo=False,
        variables={
            "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/dvc",
            "GCP_WORKLOAD_IDENTITY_PROVIDER": "projects/1/locations/global/workloadIdentityPools/gh/providers/gh",
            "GCP_SERVICE_ACCOUNT": "dvc@acme.iam.gserviceaccount.com",
            "AZURE_CLIENT_ID": "00000000-0000-0000-0000-000000000000",
        },
        extra=["--actor", "dependabot[bot]"],
    )
    assert result.returncode == 0, result.output[-3000:]
    assert result.jobs["train"] == "success" and result.jobs["comment"] == "skipped", result.jobs
    for stub in ("stub:configure-aws-credentials", "stub:google-auth", "stub:azure-login"):
        assert not result.recorded(stub), stub
    assert ("train", "ci-pr-gate") in makes(result)
    assert not [t for j, t in makes(result) if j == "comment"]


@pytest.mark.slow  # a workflow under act: seconds each, minutes together
def test_oidc_credentials_reach_the_repro_step_and_google_auth_gets_one_method(plain_repo):
    """Fixes 4 and 10: the step's env does not blank what configure-aws-credentials exported,
    and google auth gets workload identity alone although the JSON key secret is also set."""
    body = act.payload("pull_request", plain_repo)
    result = act.run_workflow(
        "pr.yml",
        "pull_request",
        plain_repo,
        event_payload=body,
        plan=True,
        echo=False,
        variables={
            "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/dvc",
            "GCP_WORKLOAD_IDENTITY_PROVIDER": "projects/1/locations/global/workloadIdentityPools/gh/providers/gh",
            "GCP_SERVICE_ACCOUNT": "dvc@acme.iam.gserviceaccount.com",
        },
        secrets={"GCP_CREDENTIALS_JSON": '{"type": "service_account"}'},
    )
    assert result.jobs["train"] == "success", result.output[-3000:]
    (aws,) = result.recorded("stub:configure-aws-credentials")
    assert aws["argv"][0] == "role-to-assume=arn:aws:iam::123456789012:role/dvc"
    (google,) = result.recorded("stub:google-auth")
    assert "credentials_json-set=false" in google["argv"]
    repro_env = [
        e["msg"]
        for e in result.log
        if e.get("msg", "").startswith("setupEnv") and e.get("step", "").startswith("Reproduce")
    ]
    assert repro_env and "AWS_ACCESS_KEY_ID:ASIAACTSTUBOIDC00000" in repro_env[-1]


@pytest.mark.slow  # a workflow under act: seconds each, minutes together
def test_the_dvc_cache_key_changes_with_the_stages_code(plain_repo):
    """Fix 8: a code-only change gets a new key, so its outputs are saved (restore-keys still
    restore the previous cache)."""
    first = plan_pr(plain_repo)
    (restore,) = dvc_cache(first, "restore")
    (save,) = dvc_cache(first, "save")
    stage = plain_repo / "src/mlproject/pipeline/train.py"
    original = stage.read_text()
    try:
        stage.write_text(original + "\n# a code-only change\n")
        second = plan_pr(plain_repo)
    finally:
        stage.write_text(original)
    (restore2,) = dvc_cache(second, "restore")
    (save2,) = dvc_cache(second, "save")
    assert restore2["key"] != restore["key"]
    assert restore2["restored"] == save["key"]  # the previous run's cache, by restore-key
    assert save2["saved"] is True


# --------------------------------------------------------- pr.yml, same-repository, for real


@pytest.fixture(scope="module")
def pr_runs(pipeline_repo):
    """Two real runs of pr.yml in one repository (the DVC cache carried between them by the
    cache stub): `feature` (train.epochs 40 -> 8) and `strict` (the same plus a 0.999 floor)."""
    require_act()
    repo = workspace(pipeline_repo)
    commit_all(repo, "base: pipeline outputs")
    pr_branch(repo, {"epochs: 40": "epochs: 8", "T_max: 40": "T_max: 8"})
    # main's runs saved its DVC cache (the setup action's `dvc-<os>-<torch>-` entries); a pull
    # request restores it by restore-key, as on GitHub, so the base's outputs are at hand and
    # the report compares with them (a report whose base must be rebuilt: test_report_base).
    shutil.copytree(repo / ".dvc" / "cache", repo.parent / "act-state/cache/dvc-Linux-cpu-main/0")
    secrets = {"GITHUB_TOKEN": "ghs_test"}
    first = act.run_workflow("pr.yml", "pull_request", repo, secrets=secrets, echo=False)
    git(repo, "checkout", "-q", "-b", "strict")
    set_params(repo, {"accuracy: 0.95": "accuracy: 0.999"})
    commit_all(repo, "head: strict floor")
    second = act.run_workflow("pr.yml", "pull_request", repo, secrets=secrets, echo=False)
    yield first, second
    remove(repo)


@pytest.mark.slow
def test_same_repo_pr_posts_params_and_metric_deltas(pr_runs):
    result, _ = pr_runs
    assert result.jobs == {
        "gpu-self-hosted": "skipped",
        "gpu-refused": "skipped",
        "gpu-launch": "skipped",
        "gpu-cloud": "skipped",
        "train": "success",
        "comment": "success",
    }, result.output[-3000:]
    assert result.step("train", "GPU tests") == "skipped"
    assert result.step("train", "Quality gate") == "success"
    (cml,) = result.recorded("cml")
    assert cml["job"] == "comment"
    assert cml["argv"][:4] == [
        "comment",
        "update",
        "--target=pr/7",
        "--watermark-title=mlproject-pr-report",
    ]
    (body,) = [f["text"] for f in cml["files"] if f["path"].endswith(".md")]
    assert body.startswith("### ✅ Quality gate: passed")
    assert "| `train.epochs` | 40 | 8 |" in body
    report = json.loads((result.state / "artifacts/pr-report/reports/pr/report.json").read_text())
    accuracy = next(r for r in report["metrics"][0]["rows"] if r["name"] == "accuracy")
    assert accuracy["old"] is not None and accuracy["delta"] is not None
    assert f"| `accuracy` | {accuracy['old']:.4f}".rstrip("0") in body
    (upload,) = result.recorded("stub:upload-artifact")
    assert "reports/pr/report.json" in upload["argv"]
    saves = dvc_cache(result, "save")
    assert saves and saves[0]["saved"] is True
    # main's DVC cache, restored by restore-key: the base's committed outputs are used.
    assert dvc_cache(result, "restore")[0]["restored"] == "dvc-Linux-cpu-main"
    assert report["base"]["outputs"]["source"] == "committed", report["base"]["outputs"]


@pytest.mark.slow
def test_a_0999_accuracy_floor_fails_the_gate_step_and_the_report_is_still_posted(pr_runs):
    _, result = pr_runs
    assert result.jobs["train"] == "failure" and result.jobs["comment"] == "success"
    assert result.step("train", "Build the report") == "success"
    assert result.step("train", "Quality gate") == "failure"
    restores = dvc_cache(result, "restore")
    assert restores[0]["restored"]  # the first run's DVC cache, by restore-key
    (cml,) = result.recorded("cml")
    (body,) = [f["text"] for f in cml["files"] if f["path"].endswith(".md")]
    assert body.startswith("### ❌ Quality gate: FAILED")
    assert "< 0.999" in body.splitlines()[0]


@pytest.mark.slow  # plain_repo: a runner-owned copy of the project (seconds)
def test_payload_for_a_same_repository_pull_request(plain_repo):
    body = act.payload("pull_request", plain_repo)
    pr = body["pull_request"]
    assert pr["head"]["ref"] == "feature" and pr["base"]["ref"] == "main"
    assert pr["base"]["sha"] == git(plain_repo, "merge-base", "main", "HEAD")
    assert pr["head"]["repo"]["full_name"] == body["repository"]["full_name"]
    assert json.loads(json.dumps(body)) == body


# ------------------------------------------------------------------- release.yml on registry tags


@pytest.fixture(scope="module")
def release_runs(pipeline_repo):
    """release.yml under act on `classifier@v1.2.3` (annotated, from `make register`), then on
    `classifier#prod#1` (`make promote`); the model comes from a local DVC remote."""
    require_act()
    repo = workspace(pipeline_repo)
    run(["dvc", "remote", "add", "-d", "local", str(repo.parent / "dvc-remote")], repo)
    commit_all(repo, "trained model")
    run(["dvc", "push", "-q"], repo)
    registry = [sys.executable, "-m", "mlproject.ops.registry"]
    run([*registry, "register", "--version", "v1.2.3"], repo)
    run([*registry, "promote", "--stage", "prod"], repo)
    tags = git(repo, "tag", "--list").split()
    runs = {}
    for tag in (next(t for t in tags if "@" in t), next(t for t in tags if "#prod#" in t)):
        body = act.payload("push", repo, ref=f"refs/tags/{tag}")
        runs[tag] = act.run_workflow(
            "release.yml",
            "push",
            repo,
            event_payload=body,
            secrets={"GITHUB_TOKEN": "ghs_x"},
            echo=False,
        )
    yield runs
    remove(repo)


@pytest.mark.slow
def test_release_on_registry_tags_publishes_the_model_and_skips_docker_without_an_engine(
    release_runs,
):
    (version_tag, version), (stage_tag, stage) = release_runs.items()
    assert version_tag == "classifier@v1.2.3" and stage_tag.startswith("classifier#prod#")
    for result in (version, stage):
        assert result.jobs == {"release": "success", "deploy": "skipped"}, result.output[-3000:]
        assert result.step("release", "What this tag releases") == "success"
        assert result.step("release", "Model, card, profile and notes") == "success"
        assert result.step("release", "GitHub release with the model") == "success"
        assert result.step("release", "Docker engine present?") == "success"
        # The step says why (a ::notice:: annotation, which act logs as a command).
        assert any("No Docker engine on this runner" in e.get("msg", "") for e in result.log)
        for name in ("Build the serving image", "Smoke test the image", "Push the image"):
            assert result.step("release", name) == "skipped"
        assert not result.recorded("stub:docker-login")
        calls = [c["argv"] for c in result.recorded("gh")]
        assert calls[0] == ["release", "view", "classifier@v1.2.3"]
        create = calls[1]
        assert create[:3] == ["release", "create", "classifier@v1.2.3"]
        assert "--verify-tag" in create  # the annotated tag must exist on GitHub
        (gh,) = [c for c in result.recorded("gh") if c["argv"][1] == "create"]
        assets = {Path(f["path"]).name for f in gh["files"]}
        assert {"model.onnx", "model_card.json", "SHA256SUMS", "RELEASE.md"} <= assets


# ------------------------------------------------------------------------------ the driver


def test_an_action_without_a_stub_is_an_error_naming_it(tmp_path):
    (tmp_path / ".github/workflows").mkdir(parents=True)
    (tmp_path / ".github/workflows/x.yml").write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        f"      - uses: acme/unknown-action@{'0' * 40}\n"
    )
    with pytest.raises(act.ActError, match="acme/unknown-action@0+: no stub in .github/act/acme"):
        act.stub_args(tmp_path)


def test_make_act_rejects_a_bad_variable_and_an_unknown_workflow(capsys):
    assert act.main(["ci.yml", "push", "--var", "NOVALUE"]) == 2
    assert "--var 'NOVALUE': expected KEY=VALUE" in capsys.readouterr().err
    assert act.main(["nope.yml", "push"]) == 2
    assert ".github/workflows/nope.yml: no such workflow" in capsys.readouterr().err


@pytest.mark.slow  # plain_repo: a runner-owned copy of the project (seconds)
def test_payloads_for_tags_and_dispatches(plain_repo):
    tag = act.payload("push", plain_repo, ref="refs/heads/main")
    assert tag["ref"] == "refs/heads/main" and tag["after"] == git(plain_repo, "rev-parse", "main")
    dispatch = act.payload("repository_dispatch", plain_repo, client_payload={"reason": "drift"})
    assert (
        dispatch["action"] == "drift-detected" and dispatch["client_payload"]["reason"] == "drift"
    )
