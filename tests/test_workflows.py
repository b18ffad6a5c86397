"""The GitHub workflows, checked statically: schema, security linters, house rules, pins. They
run under a real Actions engine (act) in tests/test_act_workflows.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlproject.report import ci

from conftest import BIN, ENV, ROOT, run

GITHUB = ROOT / ".github"
WORKFLOWS = sorted((GITHUB / "workflows").glob("*.yml"))
ACTIONS = sorted((GITHUB / "actions").glob("*/action.yml"))
PR_LOOP = GITHUB / "workflows" / "pr-loop.yml"
PR = GITHUB / "workflows" / "pr.yml"
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def triggers(workflow: dict) -> dict:
    return workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as True


def all_steps():
    for path in WORKFLOWS:
        for name, job in load(path)["jobs"].items():
            for step in job.get("steps") or []:
                yield f"{path.name}:{name}", step
    for path in ACTIONS:
        for step in load(path)["runs"]["steps"]:
            yield str(path.relative_to(ROOT)), step


# ---------------------------------------------------------------------------------- linters


def test_workflows_validate_against_the_github_schemas():
    run(
        [
            str(BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            *map(str, WORKFLOWS),
        ],
        ROOT,
    )
    run(
        [
            str(BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.github-actions",
            *map(str, ACTIONS),
        ],
        ROOT,
    )
    run(
        [
            str(BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.dependabot",
            str(GITHUB / "dependabot.yml"),
        ],
        ROOT,
    )


def test_zizmor_reports_nothing_of_medium_severity_or_above():
    result = run(
        [
            str(BIN / "zizmor"),
            "--offline",
            "--config",
            str(GITHUB / "zizmor.yml"),
            "--min-severity",
            "medium",
            "--format",
            "json",
            str(GITHUB / "workflows"),
            str(GITHUB / "actions"),
        ],
        ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout or "[]") == []


def test_actionlint_passes():
    run([str(BIN / "actionlint"), "-no-color", *map(str, WORKFLOWS)], ROOT)


# ------------------------------------------------------------------------------ house rules


def test_third_party_actions_are_pinned_to_commit_shas_with_their_version_noted():
    texts = {p: p.read_text() for p in [*WORKFLOWS, *ACTIONS]}
    for where, step in all_steps():
        uses = step.get("uses")
        if not uses or uses.startswith("./"):
            continue
        assert SHA_PIN.match(uses), f"{where}: {uses} is not pinned to a commit SHA"
        path = next(p for p, t in texts.items() if uses in t)
        before = texts[path].split(uses)[0].splitlines()[-2:]
        assert any(re.search(r"#.*\bv\d", line) for line in before), (
            f"{where}: say which version {uses} is in a comment above it"
        )


def test_no_expression_is_interpolated_into_a_run_script():
    for where, step in all_steps():
        assert "${{" not in (step.get("run") or ""), f"{where}: pass values via env:"


def test_no_pull_request_target_and_least_privilege_everywhere():
    for path in WORKFLOWS:
        workflow = load(path)
        assert "pull_request_target" not in (triggers(workflow) or {}), path.name
        assert workflow.get("permissions") == {}, f"{path.name}: default to no permissions"
        for name, job in workflow["jobs"].items():
            assert "permissions" in job, f"{path.name}:{name} needs its own permissions"
            assert "write-all" not in str(job["permissions"])
            if "uses" not in job:  # a reusable workflow's jobs carry their own timeouts
                assert "timeout-minutes" in job, f"{path.name}:{name} needs a timeout"


def test_checkouts_do_not_persist_the_token():
    for where, step in all_steps():
        if str(step.get("uses", "")).startswith("actions/checkout@"):
            assert step.get("with", {}).get("persist-credentials") is False, where


def test_superseded_pr_runs_are_cancelled():
    for path in (GITHUB / "workflows" / "ci.yml", PR):
        concurrency = load(path)["concurrency"]
        assert concurrency["cancel-in-progress"] in (
            True,
            "${{ github.event_name == 'pull_request' }}",
        )
        assert "pull_request.number" in concurrency["group"]


def test_the_reusable_workflow_can_be_called_and_runs_make_targets_only():
    workflow = load(PR_LOOP)
    assert "workflow_call" in triggers(workflow)
    makefile = (ROOT / "Makefile").read_text()
    for where, step in all_steps():
        script = (step.get("run") or "").strip()
        if script:
            target = re.fullmatch(r"make ([\w-]+)|\.ci/run", script)
            assert target, f"{where}: `{script}`: steps call make targets, not inline logic"
            if target.group(1):
                assert re.search(rf"^{target.group(1)}:", makefile, re.M), script


PINS = {  # ../shared/actions-pins.md: the newest release of each action's newest major (node24)
    "actions/checkout": "3d3c42e5aac5ba805825da76410c181273ba90b1",  # v7.0.1
    "actions/setup-python": "5fda3b95a4ea91299a34e894583c3862153e4b97",  # v7.0.0
    "actions/cache": "27d5ce7f107fe9357f9df03efb73ab90386fccae",  # v5.0.5
    "actions/setup-node": "820762786026740c76f36085b0efc47a31fe5020",  # v7.0.0
    "actions/upload-artifact": "bbbca2ddaa5d8feaa63e36b76fdaad77386f024f",  # v7.0.0
    "actions/download-artifact": "3e5f45b2cfb9172054b4087a40e8e0b5a5461e7c",  # v8.0.1
    "aws-actions/configure-aws-credentials": "e6de054238d6b7531b4efff3b6587d9aade6a06c",  # v6.2.3
    "google-github-actions/auth": "7c6bc770dae815cd3e89ee6cdf493a5fab2cc093",  # v3.0.0
    "Azure/login": "f5d393ae46f8fde4be8b75f32e3fc50e654ad0ca",  # v3.0.1
    "docker/login-action": "4907a6ddec9925e35a0a9e82d7399ccc52663121",  # v4.1.0
    "hashicorp/setup-terraform": "dfe3c3f87815947d99a8997f908cb6525fc44e9e",  # v4.0.1
    "Azure/setup-kubectl": "829323503d1be3d00ca8346e5391ca0b07a9ab0d",  # v5.1.0
    "actions/upload-pages-artifact": "fc324d3547104276b827a68afc52ff2a11cc49c9",  # v5.0.0
    "actions/deploy-pages": "cd2ce8fcbc39b97be8ca5fce6e763baed58fa128",  # v5.0.0
}


def test_every_action_is_pinned_to_its_current_node24_release():
    """Fix 11 (node20 is retired on GitHub's runners); fix 2: checkout >= v6.0.2 keeps an
    annotated registry tag annotated, so `gto` sees it in release.yml."""
    for where, step in all_steps():
        uses = step.get("uses", "")
        if uses and not uses.startswith("./"):
            action, sha = uses.split("@")
            assert PINS.get(action) == sha, f"{where}: {uses} is not the pinned current release"


def test_the_dvc_cache_key_hashes_the_stages_code():
    """Fix 8: a code-only push must get a new key, or actions/cache skips saving its outputs."""
    action = load(GITHUB / "actions" / "setup" / "action.yml")
    install = next(s for s in action["runs"]["steps"] if s.get("run") == "make install")
    # make install maps TORCH=cpu to PyTorch's CPU index, cuda to PyPI's build (test_install.py).
    assert install["env"]["TORCH"] == "${{ inputs.torch }}"
    assert action["inputs"]["torch"]["default"] == "cpu"
    cache = next(s for s in action["runs"]["steps"] if "actions/cache@" in s.get("uses", ""))
    assert cache["with"]["path"] == ".dvc/cache"
    for part in ("'dvc.lock'", "'params.yaml'", "'dvc.yaml'", "'src/**'", "'conf/**'"):
        assert part in cache["with"]["key"]
    assert cache["with"]["restore-keys"].strip() in cache["with"]["key"]


def test_ci_runs_on_main_pushes_and_prs_and_never_cancels_main():
    """Fix 9: no second run for a PR's branch, none for registry tags, main's runs all finish."""
    workflow = load(GITHUB / "workflows" / "ci.yml")
    assert triggers(workflow)["push"] == {"branches": ["main"]}
    assert "pull_request" in triggers(workflow)
    concurrency = workflow["concurrency"]
    assert concurrency["cancel-in-progress"] == "${{ github.event_name == 'pull_request' }}"
    assert "github.sha" in concurrency["group"]


def test_static_keys_do_not_blank_oidc_credentials_and_google_gets_one_method():
    """Fixes 4 and 10 (tests/test_act_workflows.py shows both under act)."""
    steps = load(PR_LOOP)["jobs"]["train"]["steps"]
    repro = next(s for s in steps if s.get("run") == "make ci-pr-repro")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert repro["env"][key] == f"${{{{ secrets.{key} || env.{key} }}}}"
    google = next(s for s in steps if "google-github-actions/auth@" in s.get("uses", ""))
    assert "inputs.gcp-workload-identity-provider == ''" in google["with"]["credentials_json"]


def test_gpu_jobs_get_gpu_runners_only_when_one_is_configured():
    """Fix 6: the GPU routes need GPU_RUNNER; unset, the CPU job runs (the routes under act:
    tests/test_act_workflows.py)."""
    jobs = load(PR)["jobs"]
    assert jobs["cpu"]["with"]["runs-on"] == '["ubuntu-latest"]'
    assert "gpu" in json.loads(jobs["gpu-self-hosted"]["with"]["runs-on"])
    assert json.loads(jobs["gpu-cloud"]["with"]["runs-on"]) == ["self-hosted", "cml-gpu"]
    assert all(jobs[j]["with"]["gpu"] is True for j in ("gpu-self-hosted", "gpu-cloud"))
    assert "vars.GPU_RUNNER == 'self-hosted'" in jobs["gpu-self-hosted"]["if"]
    assert "vars.GPU_RUNNER == 'cml-cloud'" in jobs["gpu-launch"]["if"]
    comment = load(PR_LOOP)["jobs"]["comment"]["if"]
    assert "head.repo.full_name == github.repository" in comment and "!cancelled()" in comment


def test_cloud_runner_has_cost_guards():
    args = ci.launch_runner_args(
        {"CML_RUNNER_CLOUD": "aws", "CML_RUNNER_CLOUD_TYPE": "g4dn.xlarge"}
    )
    assert args[:3] == ["cml", "runner", "launch"]
    assert "--single" in args and "--idle-timeout=10min" in args and "--labels=cml-gpu" in args
    with pytest.raises(SystemExit, match="CML_RUNNER_CLOUD_TYPE"):
        ci.launch_runner_args({"CML_RUNNER_CLOUD": "aws"})


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({}, "artifact"),
        ({"REPORT_IMAGES": "none"}, "none"),
        ({"REPORT_IMAGES": "cml", "REPO_VISIBILITY": "public"}, "cml"),
        ({"REPORT_IMAGES": "cml", "REPO_VISIBILITY": "private"}, "artifact"),
        ({"REPORT_IMAGES": "cml", "REPORT_PUBLISH_URL": "https://assets.acme.internal"}, "cml"),
    ],
)
def test_private_repositories_never_use_the_public_image_host(env, setting):
    assert ci.image_setting(env) == setting
    args = ci.cml_args("reports/pr/comment.md", setting, {"PR_NUMBER": "7", **env})
    assert args[:5] == [
        "cml",
        "comment",
        "update",
        "--target=pr/7",
        "--watermark-title=mlproject-pr-report",
    ]
    assert ("--publish" in args) == (setting == "cml")
    assert ("--no-publish" in args) == (setting != "cml")


def test_unknown_image_setting_is_an_error():
    with pytest.raises(SystemExit, match="REPORT_IMAGES='public'"):
        ci.image_setting({"REPORT_IMAGES": "public"})


# ------------------------------------------------------------------------- the gate, here


def set_params(repo: Path, replacements: dict[str, str]) -> None:
    """Edit params.yaml and conf/config.yaml alike (textually: the test does not recompose)."""
    for rel in ("params.yaml", "conf/config.yaml"):
        text = (repo / rel).read_text()
        for old, new in replacements.items():
            text = text.replace(old, new)
        (repo / rel).write_text(text)


def pr_repo(pipeline_repo: Path, dest: Path, replacements: dict[str, str]) -> Path:
    """A copy of the pipeline repo: `main` = the pipeline's outputs committed (the base);
    branch `feature` = one commit that changes params (the head)."""
    repo = Path(shutil.copytree(pipeline_repo, dest, symlinks=True))
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "base: pipeline outputs"], repo)
    run(["git", "checkout", "-q", "-b", "feature"], repo)
    set_params(repo, replacements)
    run(["git", "commit", "-q", "-am", "head: change params"], repo)
    return repo


@pytest.mark.slow
def test_make_gate_exits_non_zero_when_the_gate_fails(pipeline_repo, tmp_path):
    repo = pr_repo(pipeline_repo, tmp_path / "repo", {"accuracy: 0.95": "accuracy: 0.999"})
    result = subprocess.run(
        [sys.executable, "-m", "mlproject.report", "gate", "--base", "main"],
        cwd=repo,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED" in result.stdout and "< 0.999" in result.stdout
