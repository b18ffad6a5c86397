"""The GitHub workflows, checked here since GitHub cannot be reached: schema, security linters,
house rules, the routing between CPU and GPU runners, and the pull-request workflow's steps run
for real in a temporary repository with `cml` and `gh` replaced by recorders."""

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
from mlproject.report.workflow import condition, evaluate, run_workflow, substitute

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
            str(GITHUB),
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


def test_superseded_runs_are_cancelled():
    for path in (GITHUB / "workflows" / "ci.yml", PR):
        concurrency = load(path)["concurrency"]
        assert concurrency["cancel-in-progress"] is True
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


def test_the_composite_action_installs_the_cpu_torch_on_hosted_runners():
    action = load(GITHUB / "actions" / "setup" / "action.yml")
    install = next(s for s in action["runs"]["steps"] if s.get("run") == "make install")
    # make install maps TORCH=cpu to PyTorch's CPU index, cuda to PyPI's build (test_install.py).
    assert install["env"]["TORCH"] == "${{ inputs.torch }}"
    assert action["inputs"]["torch"]["default"] == "cpu"
    cache = next(s for s in action["runs"]["steps"] if "actions/cache@" in s.get("uses", ""))
    assert cache["with"]["path"] == ".dvc/cache"


# ------------------------------------------------------------------ expressions and routing


def test_expression_evaluator():
    ctx = {
        "github": {
            "event": {"pull_request": {"labels": [{"name": "gpu"}, {"name": "x"}]}},
            "event_name": "pull_request",
        },
        "inputs": {"gpu": False, "n": 3},
    }
    assert evaluate("contains(github.event.pull_request.labels.*.name, 'gpu')", ctx) is True
    assert evaluate("inputs.gpu && 'cuda' || 'cpu'", ctx) == "cpu"
    assert evaluate("!inputs.gpu && inputs.n >= 3", ctx) is True
    assert evaluate("github.event_name == 'PULL_REQUEST'", ctx) is True  # case-insensitive
    assert evaluate("format('-{0}', inputs.n)", ctx) == "-3"
    assert substitute("x-${{ inputs.n }}-${{ inputs.missing }}", ctx) == "x-3-"
    assert condition("failure()", ctx, "failure") and not condition("inputs.n", ctx, "failure")
    assert condition("${{ !cancelled() }}", ctx, "failure")


def pr_context(
    *, fork=False, labels=(), action="synchronize", label=None, dispatch_gpu=None, gpu_runner=""
):
    repo = "acme/mlproject"
    event = (
        {"inputs": {"gpu": dispatch_gpu}}
        if dispatch_gpu is not None
        else {
            "action": action,
            "label": {"name": label} if label else None,
            "pull_request": {
                "number": 7,
                "labels": [{"name": n} for n in labels],
                "head": {"repo": {"full_name": "eve/fork" if fork else repo}},
            },
        }
    )
    return {
        "github": {
            "event_name": "workflow_dispatch" if dispatch_gpu is not None else "pull_request",
            "repository": repo,
            "event": event,
            "action": event.get("action"),
        },
        "inputs": {"gpu": dispatch_gpu},
        "vars": {"GPU_RUNNER": gpu_runner},
    }


@pytest.mark.parametrize(
    ("context", "jobs"),
    [
        (pr_context(), {"cpu"}),
        (pr_context(labels=["gpu"]), {"gpu-self-hosted"}),
        (pr_context(labels=["gpu"], gpu_runner="cml-cloud"), {"gpu-launch", "gpu-cloud"}),
        (pr_context(labels=["gpu"], fork=True), {"cpu"}),  # no GPU runner for fork code
        (pr_context(labels=["gpu", "docs"], action="labeled", label="docs"), set()),
        (pr_context(labels=["gpu"], action="labeled", label="gpu"), {"gpu-self-hosted"}),
        (pr_context(dispatch_gpu=True), {"gpu-self-hosted"}),
        (pr_context(dispatch_gpu=False), {"cpu"}),
    ],
)
def test_pr_training_routes_to_cpu_or_gpu_runners(context, jobs):
    workflow = load(PR)
    chosen = set()
    for name, job in workflow["jobs"].items():
        needs = job.get("needs")
        runs = (needs in chosen) if needs else condition(job.get("if"), context, "success")
        if runs:
            chosen.add(name)
    assert chosen == jobs


def test_gpu_jobs_get_gpu_runners_and_the_comment_skips_forks():
    jobs = load(PR)["jobs"]
    assert jobs["cpu"]["with"]["runs-on"] == '["ubuntu-latest"]'
    assert "gpu" in json.loads(jobs["gpu-self-hosted"]["with"]["runs-on"])
    assert json.loads(jobs["gpu-cloud"]["with"]["runs-on"]) == ["self-hosted", "cml-gpu"]
    assert all(jobs[j]["with"]["gpu"] is True for j in ("gpu-self-hosted", "gpu-cloud"))
    comment = load(PR_LOOP)["jobs"]["comment"]["if"]
    ctx = {"inputs": {"post-comment": True}}
    assert condition(comment, {**pr_context(), **ctx}, "failure")  # posts even if the gate failed
    assert not condition(comment, {**pr_context(fork=True), **ctx}, "success")


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


# ------------------------------------------------- the PR workflow's steps, run for real

RECORDER = """#!{python}
import json, os, pathlib, sys, time
out = pathlib.Path(os.environ["RECORD_DIR"])
out.mkdir(parents=True, exist_ok=True)
args = sys.argv[1:]
md = pathlib.Path(args[-1]) if args and args[-1].endswith(".md") else None
record = {{"tool": "{tool}", "argv": args, "cwd": os.getcwd(),
          "markdown": md.read_text() if md and md.is_file() else None}}
(out / f"{tool}-{{time.time_ns()}}.json").write_text(json.dumps(record))
print("https://github.com/acme/mlproject/pull/7#issuecomment-1")
"""


def recorders(folder: Path) -> Path:
    """`cml` and `gh` that record what they would have sent instead of reaching GitHub."""
    folder.mkdir(parents=True)
    for tool in ("cml", "gh"):
        path = folder / tool
        path.write_text(RECORDER.format(python=sys.executable, tool=tool))
        path.chmod(0o755)
    return folder


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


def run_pr_loop(repo: Path, tmp: Path, *, visibility: str, images: str):
    head = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    summary = tmp / "step-summary.md"
    record = tmp / "record"
    env = {
        **ENV,
        "PATH": f"{recorders(tmp / 'bin')}:{ENV['PATH']}",
        "RECORD_DIR": str(record),
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_BASE_REF": "main",
        "GITHUB_SHA": head,
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "acme/mlproject",
        "GITHUB_RUN_ID": "4242",
        "GITHUB_STEP_SUMMARY": str(summary),
    }
    env.pop("BASE", None)
    context = {
        "github": {
            "event_name": "pull_request",
            "repository": "acme/mlproject",
            "base_ref": "main",
            "token": "ghs_test",
            "sha": head,
            "event": {
                "pull_request": {
                    "number": 7,
                    "head": {"sha": head, "repo": {"full_name": "acme/mlproject"}},
                },
                "repository": {"visibility": visibility},
            },
        },
        "inputs": {"report-images": images},
        "secrets": {},
        "vars": {},
    }
    results = run_workflow(PR_LOOP, context, cwd=repo, env=env, echo=False)
    posted = [json.loads(p.read_text()) for p in sorted(record.glob("*.json"))]
    return results, posted, summary


def step(results, name):
    return next(r for r in results if r.name.startswith(name))


@pytest.mark.slow
def test_pr_workflow_steps_post_params_metric_deltas_verdict_and_images(pipeline_repo, tmp_path):
    repo = pr_repo(
        pipeline_repo, tmp_path / "repo", {"epochs: 40": "epochs: 8", "T_max: 40": "T_max: 8"}
    )
    results, posted, summary = run_pr_loop(repo, tmp_path, visibility="public", images="cml")

    ran = [r for r in results if not r.skipped]
    assert [r.name for r in ran] == [
        "Reproduce the pipeline (pull cached outputs from the DVC remote, else rebuild)",
        "Build the report (base vs head)",
        "Write the report to the job summary",
        "Quality gate",
        "Install CML",
        "Post or update the report comment",
    ]
    assert step(results, "GPU tests").skipped  # a CPU run
    assert all(r.returncode == 0 for r in ran if r.name != "Quality gate")

    report = json.loads((repo / "reports/pr/report.json").read_text())
    assert (step(results, "Quality gate").returncode == 0) == report["gate"]["passed"]
    assert json.loads((repo / "reports/eval/metrics.json").read_text())  # retrained

    (cml,) = [p for p in posted if p["tool"] == "cml"]
    assert cml["argv"][:5] == [
        "comment",
        "update",
        "--target=pr/7",
        "--watermark-title=mlproject-pr-report",
        "--publish",
    ]
    md = cml["markdown"]
    verdict = "✅ Quality gate: passed" if report["gate"]["passed"] else "❌ Quality gate: FAILED"
    assert md.startswith(f"### {verdict}")
    assert "| `train.epochs` | 40 | 8 |" in md
    assert "| `train.scheduler.T_max` | 40 | 8 |" in md
    accuracy = next(r for r in report["metrics"][0]["rows"] if r["name"] == "accuracy")
    assert accuracy["old"] is not None and accuracy["delta"] is not None
    assert f"| `accuracy` | {accuracy['old']:.4f}".rstrip("0") in md
    assert "[CI run](https://github.com/acme/mlproject/actions/runs/4242)" in md
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(images) >= 3
    markdown_dir = Path(cml["argv"][-1]).parent
    for image in images:
        assert (repo / markdown_dir / image).is_file(), image
    # The base's model is in the DVC cache, so both sides are timed.
    assert all(v > 0 for v in report["model"]["latency_ms"].values())
    assert "| latency (onnxruntime, batch 1, 1 thread, median) | n/a" not in md
    assert summary.read_text().startswith(f"### {verdict}")
    assert not [p for p in posted if p["tool"] == "gh"]


@pytest.mark.slow
@pytest.mark.parametrize(("floor", "passes"), [("0.5", True), ("0.999", False)])
def test_a_failing_gate_fails_the_gate_step_but_the_report_is_still_posted(
    pipeline_repo, tmp_path, floor, passes
):
    repo = pr_repo(pipeline_repo, tmp_path / "repo", {"accuracy: 0.95": f"accuracy: {floor}"})
    results, posted, summary = run_pr_loop(repo, tmp_path, visibility="private", images="artifact")
    assert (step(results, "Quality gate").returncode == 0) is passes
    assert step(results, "Build the report").returncode == 0
    (cml,) = [p for p in posted if p["tool"] == "cml"]
    assert "--no-publish" in cml["argv"]  # a private repo's plots stay in its artifacts
    md = cml["markdown"]
    assert "![" not in md
    assert "artifact of [this run](https://github.com/acme/mlproject/actions/runs/4242" in md
    assert "| `gate.min.accuracy` | 0.95 | " in md
    assert "edits the gate's own thresholds" in md
    if passes:
        assert md.startswith("### ✅ Quality gate: passed")
    else:
        assert md.startswith("### ❌ Quality gate: FAILED")
        assert "accuracy" in md.splitlines()[0] and "< 0.999" in md.splitlines()[0]
    assert summary.read_text().startswith(md.splitlines()[0])


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
