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

from mlproject.core.errors import SettingsError
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
            action = "/".join(action.split("/")[:2])  # actions/cache/restore: actions/cache
            assert PINS.get(action) == sha, f"{where}: {uses} is not the pinned current release"


def test_the_dvc_cache_key_hashes_the_stages_code():
    """Fix 8: a code-only push must get a new key, or actions/cache skips saving its outputs."""
    action = load(GITHUB / "actions" / "setup" / "action.yml")
    install = next(s for s in action["runs"]["steps"] if s.get("run") == "make install")
    # make install maps TORCH=cpu to PyTorch's CPU index, cuda to PyPI's build (test_install.py).
    assert install["env"]["TORCH"] == "${{ inputs.torch }}"
    assert action["inputs"]["torch"]["default"] == "cpu"
    cache = next(
        s
        for s in action["runs"]["steps"]
        if "actions/cache@" in s.get("uses", "") and s["with"]["path"] == ".dvc/cache"
    )
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
    assert jobs["cpu"]["with"]["runs-on"] == '["ubuntu-24.04"]'
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
    with pytest.raises(SettingsError, match="CML_RUNNER_CLOUD_TYPE"):
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
    with pytest.raises(SettingsError, match="REPORT_IMAGES='public'"):
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
    run(["git", "commit", "-q", "--allow-empty", "-m", "base: pipeline outputs"], repo)
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


# ------------------------------------------------- GitHub's real runners (issue 18, item 4)

DEPENDABOT = "github.actor != 'dependabot[bot]'"


def jobs(path: Path) -> dict:
    return load(path)["jobs"]


def test_runner_images_are_pinned_and_act_maps_every_label():
    """ubuntu-latest moved to 26.04 (docs/ci.md says what that would change): pinned here, and
    make act maps each label the workflows name to this machine."""
    from mlproject.ops.act_setup import LABELS

    for path in WORKFLOWS:
        assert "ubuntu-latest" not in path.read_text(), f"{path.name}: pin ubuntu-24.04"
        for name, job in jobs(path).items():
            runs_on = job.get("runs-on") or json.loads(job.get("with", {}).get("runs-on", "[]"))
            labels = [runs_on] if isinstance(runs_on, str) else runs_on
            for label in labels:
                if "${{" in label:  # pr-loop.yml: the caller's labels, checked at the caller
                    continue
                assert label in LABELS, f"{path.name}:{name}: act has no -P for {label}"
                assert not label.startswith("ubuntu") or label == "ubuntu-24.04", (path, name)
    default = triggers(load(PR_LOOP))["workflow_call"]["inputs"]["runs-on"]["default"]
    assert json.loads(default) == ["ubuntu-24.04"]


# What each job takes here (minutes, 2 cores), measured; its timeout must be at least twice that.
TAKES_HERE = {
    ("ci.yml", "test"): 16,  # `make test` serially (pytest-xdist brings it under 8)
    ("ci.yml", "lint"): 4,  # make install, promtool's package, make lint (~10 s), make docs (3 s)
    ("docs.yml", "build"): 2,
}


def test_every_job_has_a_timeout_of_at_least_twice_what_it_takes():
    for path in WORKFLOWS:
        for name, job in jobs(path).items():
            if "uses" in job:  # a reusable workflow: each of its jobs has its own
                for inner, called in jobs(ROOT / job["uses"]).items():
                    assert "timeout-minutes" in called, f"{job['uses']}:{inner} needs a timeout"
                continue
            timeout = job.get("timeout-minutes")
            assert timeout is not None, f"{path.name}:{name} needs a timeout-minutes"
            if isinstance(timeout, int):
                assert timeout >= 2 * TAKES_HERE.get((path.name, name), 0), (path.name, name)
            else:
                assert "inputs.timeout-minutes" in timeout, (path.name, name)


def _cache_steps() -> list[tuple[str, dict]]:
    return [
        (where, step)
        for where, step in all_steps()
        if re.match(r"actions/cache(/restore|/save)?@", step.get("uses", ""))
    ]


def test_caches_are_keyed_on_the_lock_and_every_cache_saved_is_restored():
    """uv's cache on requirements/lock.txt, the DVC cache on dvc.lock (and what the stages
    read); a cache saved under a key is restored by a step with the same key and restore-keys
    (actions/cache does both); tag runs, whose caches no other run can read, only restore."""
    caches = _cache_steps()
    saved = [s for _, s in caches if "/restore@" not in s["uses"]]
    restored = [s for _, s in caches if "/save@" not in s["uses"]]
    assert saved and restored
    for step in saved:
        key = step["with"]["key"]
        assert any(r["with"]["key"] == key for r in restored), f"{key}: saved, never restored"
        prefix = step["with"]["restore-keys"].strip()
        assert key.startswith(prefix), key  # an older cache of the same kind restores
        assert "!startsWith(github.ref, 'refs/tags/')" in step.get("if", ""), key
    paths = {str(s["with"]["path"]).strip(): s["with"]["key"] for s in saved}
    uv = paths["~/.cache/uv\n~/.cache/mlproject"]
    assert "hashFiles('requirements/lock.txt')" in uv and "inputs.torch" in uv
    assert "'dvc.lock'" in paths[".dvc/cache"]
    # uv installs: setup-python's pip cache would be saved and never read (and fail its post
    # step when pip never ran).
    for where, step in all_steps():
        if step.get("uses", "").startswith("actions/setup-python@"):
            assert "cache" not in step.get("with", {}), where


def test_pull_requests_restore_the_dvc_cache_that_main_saved():
    """GitHub lets a PR restore caches saved on its base branch: main's pushes (pr-loop runs on
    PRs only, so retrain.yml and sweeps save on main) use the key prefix that a PR's restore-keys
    name, and the key does not depend on the event or the branch."""
    action = load(GITHUB / "actions" / "setup" / "action.yml")
    dvc = [s for s in action["runs"]["steps"] if s.get("with", {}).get("path") == ".dvc/cache"]
    for step in dvc:
        assert "github.ref" not in step["with"]["key"] and "event" not in step["with"]["key"]
        assert step["with"]["restore-keys"].strip() == "dvc-${{ runner.os }}-${{ inputs.torch }}-"
    saving = [w for w, s in all_steps() if s.get("uses") == "./.github/actions/setup"]
    assert any(w.startswith("retrain.yml:") for w in saving)  # saves on main weekly


def test_docs_deploy_only_when_pages_is_on_and_says_how_otherwise():
    workflow = jobs(GITHUB / "workflows" / "docs.yml")
    assert workflow["deploy"]["if"] == "vars.PAGES_ENABLED == 'true'"
    hint = next(s for s in workflow["build"]["steps"] if s.get("run") == "make ci-pages-off")
    assert hint["if"] == "vars.PAGES_ENABLED != 'true'"
    out = run(["make", "-s", "ci-pages-off"], ROOT).stdout
    assert "Settings > Pages > Build and deployment > Source: GitHub Actions" in out
    assert "PAGES_ENABLED=true" in out and "free plan" in out


def test_dependabot_runs_skip_the_comment_and_the_cloud_logins():
    train = jobs(PR_LOOP)["train"]
    assert "dependabot[bot]" in train["env"]["DEPENDABOT"]
    for step in train["steps"]:
        if any(a in step.get("uses", "") for a in ("credentials@", "auth@", "login@")):
            assert step["if"].startswith("env.DEPENDABOT != 'true' && "), step["uses"]
    assert DEPENDABOT in jobs(PR_LOOP)["comment"]["if"]
    for name in ("gpu-self-hosted", "gpu-launch"):
        assert DEPENDABOT in jobs(PR)[name]["if"], name


def test_self_hosted_gpu_in_a_public_repository_needs_the_owners_acknowledgement():
    pr = jobs(PR)
    ack = "(github.event.repository.private || vars.SELF_HOSTED_ACK == 'true')"
    assert ack in pr["gpu-self-hosted"]["if"] and ack in pr["cpu"]["if"]
    refused = pr["gpu-refused"]
    assert "!github.event.repository.private && vars.SELF_HOSTED_ACK != 'true'" in refused["if"]
    assert refused["steps"][-1]["run"] == "make ci-gpu-route"
    env = {**ENV, "GPU_RUNNER": "self-hosted", "REPO_VISIBILITY": "public"}
    refusal = subprocess.run(
        ["make", "-s", "ci-gpu-route"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert refusal.returncode != 0
    assert "refused" in refusal.stdout and "Require approval" in refusal.stdout
    for extra in ({"SELF_HOSTED_ACK": "true"}, {"REPO_VISIBILITY": "private"}):
        allowed = subprocess.run(
            ["make", "-s", "ci-gpu-route"], cwd=ROOT, env={**env, **extra}, capture_output=True
        )
        assert allowed.returncode == 0, extra


def _make_recipes() -> dict[str, str]:
    """Each Makefile target's prerequisites and recipe, as text."""
    recipes, current = {}, None
    for line in (ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"^([\w-]+):(?!=)(.*)$", line)
        if match:
            current = match.group(1)
            recipes[current] = match.group(2).split("##")[0]
        elif line.startswith("\t") and current:
            recipes[current] += "\n" + line
        elif not line.strip():
            current = None
    return recipes


def _runs_lint(command: str, recipes: dict[str, str], seen: set | None = None) -> bool:
    seen = seen if seen is not None else set()
    if re.search(r"\.ci/run(?!\s+--(no-lint|setup-only))", command):
        return True
    for target in re.findall(r"(?:make|\$\(MAKE\))\s+([\w-]+)", command):
        if target == "lint":
            return True
        if target in recipes and target not in seen:
            seen.add(target)
            deps = recipes[target].split("\n")[0].split()
            if "lint" in deps or _runs_lint(recipes[target], recipes, seen):
                return True
    return False


def test_make_lint_runs_once_per_workflow_run():
    recipes = _make_recipes()
    for path in WORKFLOWS:
        linting = [
            name
            for name, job in jobs(path).items()
            if any(_runs_lint(s.get("run") or "", recipes) for s in job.get("steps") or [])
        ]
        assert len(linting) <= 1, f"{path.name}: make lint runs in {linting}"
    assert _runs_lint("make ci-test", recipes) is False
    assert _runs_lint(".ci/run", recipes) is True  # what the Test job ran before


def test_cml_telemetry_is_off_in_every_make_target():
    """Every cml call is in a make target (steps run make only); the Makefile exports
    ITERATIVE_DO_NOT_TRACK=1 to all of them."""
    out = run(
        [
            "make",
            "-s",
            "--eval",
            "probe-cml-env: ; @echo $$ITERATIVE_DO_NOT_TRACK",
            "probe-cml-env",
        ],
        ROOT,
    ).stdout
    assert out.strip() == "1"
