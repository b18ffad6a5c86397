"""The scheduled retraining workflow's steps (.github/workflows/retrain.yml), runnable here.

    python -m mlproject.ops.retrain data     the newest data version (dvc update for an imported
                                         dataset, else the version data.dvc records)
    python -m mlproject.ops.retrain report   the PR report against the model in production: BASE is
                                         the commit of the current `#prod` tag, else main
    python -m mlproject.ops.retrain pr       if the quality gate passed: push the outputs to the DVC
                                         remote and open (or update) a pull request with CML

Between `report` and `pr` the workflow runs the quality gate (`make ci-pr-gate`); a retrained
model worse than production fails it, so no pull request is opened. `pr` checks the verdict again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from ..core.cli import entry_point, subcommands
from ..core.errors import ProjectError
from ..core.io import atomic_write_text
from ..core.lineage import dvc_outs, dvc_tracked_hash
from ..core.paths import DATA_DVC, PR_REPORTS, RETRAIN_REPORTS
from ..core.proc import dvc_remote_configured, run
from . import registry

REPORT_JSON = PR_REPORTS / "report.json"
OUT_DIR = RETRAIN_REPORTS
# What a retraining pull request commits: the data version, the lock, and the git-tracked outputs.
PR_PATHS = ("data.dvc", "dvc.lock", "models", "reports/train", "reports/eval", "reports/explain")
WATERMARK = "mlproject-retrain-report"
# GitHub refuses pull-request bodies above 65,536 characters.
MAX_BODY = 60_000


class RetrainError(ProjectError, RuntimeError):
    """A retraining step cannot go on; the message says why."""


def _run(args: list[str], check: bool = True):
    """A step's command, echoed as `+ <command>`, its output written through to the job's log."""
    return run(args, check=check, echo=True, tee=True)


def _dvc(*args: str, check: bool = True):
    return _run([sys.executable, "-m", "dvc", *args], check=check)


def newest_data(dvc_file: str | Path = DATA_DVC) -> dict[str, Any]:
    """Bring data/ to the newest version: `dvc update` follows an imported dataset's source
    repository; a dataset tracked here is at the version data.dvc records on this branch."""
    before = dvc_tracked_hash(dvc_file)
    deps = dvc_outs(Path(dvc_file).read_text())[1]
    if any(dep.get("repo") for dep in deps):
        _dvc("update", str(dvc_file))
    else:
        from ..pipeline.data import ensure_data

        print(f"data: {ensure_data(dvc_file=str(dvc_file))}")
    after = dvc_tracked_hash(dvc_file)
    print(f"data version: {before} -> {after}" if before != after else f"data version: {after}")
    return {"before": before, "after": after, "changed": before != after}


def build_report() -> dict[str, Any]:
    """The PR report of the workspace against the production model's commit."""
    name, _ = registry.artifact()
    base = registry.base_revision(name)
    try:
        prod = registry.resolve(name, stage="prod")
    except ProjectError:  # nothing in prod yet
        prod = None
    label = f"{prod['tag']} (prod)" if prod else "the default branch (no prod model yet)"
    print(f"retrain: comparing with {label} at {base[:8]}")
    _run([sys.executable, "-m", "mlproject.report", "build", "--base", base])
    atomic_write_text(OUT_DIR / "base.json", json.dumps({"commit": base, "prod": prod}) + "\n")
    return {"base": base, "prod": prod}


def changed_paths() -> list[str]:
    out = _run(["git", "status", "--porcelain", "--untracked-files=all", "--", *PR_PATHS]).stdout
    return sorted({line[3:].split(" -> ")[-1] for line in out.splitlines() if line.strip()})


def branch_name(report: dict[str, Any]) -> str:
    """One branch per (trigger commit, data version, outputs): a rerun finds its PR again."""
    lock = Path("dvc.lock").read_bytes() if Path("dvc.lock").exists() else b""
    digest = hashlib.sha256(lock).hexdigest()[:8]
    return f"retrain/{report['head']['short']}-{digest}"


def pr_body(report: dict[str, Any], base: dict[str, Any], reason: str) -> str:
    from ..report.render import render

    prod = base.get("prod")
    lines = [
        "## Retrained model",
        "",
        f"- Trigger: {reason}",
        f"- Compared with: `{prod['tag']}` in production (commit `{prod['commit'][:8]}`)"
        if prod
        else "- Compared with: the default branch (no model in production yet)",
        f"- Data version: `{(report.get('data') or {}).get('new')}`",
        "",
        "The quality gate passed: the retrained model is at least as good as the one in "
        "production. Merge, then `make register` and `make promote STAGE=prod` to deploy it.",
        "",
        "---",
        "",
    ]
    body = "\n".join(lines) + render(report, images="none")
    return body if len(body) <= MAX_BODY else body[:MAX_BODY] + "\n\n(report truncated)\n"


def _token() -> str | None:
    """The token the PR step was given (CML reads REPO_TOKEN); GitHub's own names otherwise."""
    for name in ("REPO_TOKEN", "GH_TOKEN", "GITHUB_TOKEN"):
        if os.environ.get(name):
            return os.environ[name]
    return None


def git_auth_env(token: str | None = None) -> dict[str, str]:
    """The environment for a git call to an HTTPS origin with the token, as actions/checkout
    sends it (an Authorization header). It goes through GIT_CONFIG_* variables: never in the
    command line (visible to `ps`) nor in any output. The checkout keeps no credentials
    (`persist-credentials: false`), so without this a private repository answers 401."""
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    token = token or _token()
    if token:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        n = int(env.get("GIT_CONFIG_COUNT") or 0)
        env.update(
            {
                "GIT_CONFIG_COUNT": str(n + 1),
                f"GIT_CONFIG_KEY_{n}": "http.extraheader",
                f"GIT_CONFIG_VALUE_{n}": f"AUTHORIZATION: basic {basic}",
            }
        )
    return env


def branch_exists(branch: str, remote: str = "origin") -> bool:
    """Whether the PR branch is on the remote already; an unreachable remote is an error, not
    a "no" (a private repository without credentials used to look like a missing branch)."""
    proc = run(
        ["git", "ls-remote", "--exit-code", remote, f"refs/heads/{branch}"],
        env=git_auth_env(),
        check=False,
    )
    if proc.returncode in (0, 2):  # 2: the remote answered and has no such branch
        return proc.returncode == 0
    detail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    raise RetrainError(
        f"cannot list the branches of '{remote}' ({detail}); the step needs REPO_TOKEN "
        "(RETRAIN_TOKEN or GITHUB_TOKEN) with read access to the repository."
    )


# GitHub's answer to pulls.create when workflows may not open pull requests (the default), as
# CML (Octokit) prints it; or any 403 from the API.
PR_FORBIDDEN = re.compile(
    r"not permitted to create or approve pull requests|\b403\b.*(forbidden|httperror)"
    r"|(forbidden|httperror).*\b403\b",
    re.IGNORECASE,
)
PR_FORBIDDEN_HELP = """\
GitHub refused to open the pull request (HTTP 403). By default a workflow's GITHUB_TOKEN may
not create pull requests. Either:
  - store a fine-grained token (or a GitHub App token) with `contents: write` and
    `pull-requests: write` on this repository as the secret RETRAIN_TOKEN (recommended:
    pull requests it opens also trigger CI), or
  - allow GITHUB_TOKEN to: Settings > Actions > General > Workflow permissions >
    "Allow GitHub Actions to create and approve pull requests"
    (in an organization, the organization's settings must allow it first).
If RETRAIN_TOKEN is set already, it lacks `pull-requests: write` on this repository."""


def pr_create_args(
    branch: str, title: str, body: str, message: str, bot: str, paths: list[str]
) -> list[str]:
    """`cml pr create` arguments: commit `paths` to `branch` as `<bot>[bot]`, open a PR."""
    return [
        "pr",
        "create",
        "--branch",
        branch,
        "--title",
        title,
        "--body",
        body,
        "--message",
        message,
        "--user-name",
        f"{bot}[bot]",
        "--user-email",
        f"{bot}@users.noreply.github.com",
        *paths,
    ]


def create_pr(args: list[str]) -> str:
    """`cml pr create ...`; returns the PR's URL. A 403 becomes the fix to apply."""
    print("+ cml " + " ".join(a if len(a) < 200 else a[:40] + "..." for a in args), flush=True)
    proc = run(["cml", *args], check=False, tee=True)
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        if PR_FORBIDDEN.search(output):
            raise RetrainError(PR_FORBIDDEN_HELP)
        raise RetrainError(f"`cml pr create` exited {proc.returncode}")
    return (proc.stdout.strip().splitlines() or [""])[-1]


def open_pr(reason: str) -> str | None:
    """Open or update the retraining PR; returns its URL, or None when there is nothing to do."""
    if not REPORT_JSON.is_file():
        raise RetrainError(f"{REPORT_JSON}: no report; run `make retrain-report` first.")
    report = json.loads(REPORT_JSON.read_text())
    if not (report.get("gate") or {}).get("passed"):
        print("retrain: the quality gate failed; the retrained model is worse, no pull request.")
        return None
    paths = changed_paths()
    if not paths:
        print("retrain: nothing changed (same data, same outputs); no pull request.")
        return None
    base_file = OUT_DIR / "base.json"
    base = json.loads(base_file.read_text()) if base_file.is_file() else {}
    if dvc_remote_configured():
        _dvc("push")  # the PR's dvc.lock must point at outputs others can pull
    else:
        print("retrain: no DVC remote; the PR's model files exist only in this run's cache.")
    branch = branch_name(report)
    existed = branch_exists(branch)
    body = pr_body(report, base, reason)
    atomic_write_text(OUT_DIR / "pr-body.md", body)
    version = (base.get("prod") or {}).get("version") or "main"
    url = create_pr(
        pr_create_args(
            branch,
            f"Retrained model (vs {version}): {reason}",
            body,
            f"Retrain: {reason}",
            "mlproject-retrain",
            paths,
        )
    )
    if existed and "/pull/" in url:
        # CML leaves an existing branch alone; refresh the report on its PR instead.
        number = url.rstrip("/").split("/pull/")[-1].split("#")[0]
        _run(
            [
                "cml",
                "comment",
                "update",
                f"--target=pr/{number}",
                f"--watermark-title={WATERMARK}",
                "--no-publish",
                str(OUT_DIR / "pr-body.md"),
            ]
        )
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(f"\nRetraining pull request: {url}\n")
    print(f"retrain: pull request {url}")
    return url


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser, add = subcommands("python -m mlproject.ops.retrain", __doc__)
    add("data", "the newest data version")
    add("report", "the PR report against the model in production")
    add("pr", "push the outputs and open (or update) the pull request, if the gate passed")
    command = parser.parse_args(argv).command
    if command == "data":
        newest_data()
    elif command == "report":
        build_report()
    else:
        open_pr(os.environ.get("RETRAIN_REASON") or "scheduled retraining")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
