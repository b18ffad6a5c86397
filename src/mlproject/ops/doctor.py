"""`make doctor`: this machine's set-up and the repository's CI settings, one line per check.

    make doctor                                   # python -m mlproject.ops.doctor
    python -m mlproject.ops.doctor gpu-route      # pr.yml: refuse an unsafe self-hosted GPU route
    python -m mlproject.ops.doctor pages-off      # docs.yml: how to turn GitHub Pages on

The repository's settings (variables GPU_RUNNER, SELF_HOSTED_ACK, PAGES_ENABLED, its visibility)
are read from the environment (as the workflows pass them, or REPO_VISIBILITY=public|private
set by hand), else asked of GitHub with `gh` when it is installed and logged in.
Standard library only: the workflows run it without the project's environment.
Exit 1 when a check fails; a warning names something optional that is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ..core.cli import entry_point

OK, WARN, FAIL = "ok", "warn", "FAIL"

SELF_HOSTED_SETTINGS = """\
A self-hosted runner in a public repository can be reached by code from forks: a fork's pull
request runs the fork's copy of pr.yml, so the workflow's `if:` cannot keep it off the runner.
Before setting SELF_HOSTED_ACK=true, set in GitHub:
  - Settings > Actions > General > Fork pull request workflows from outside collaborators:
    "Require approval for all outside collaborators";
  - Settings > Actions > Runner groups (organization): the GPU runner in a group limited to
    this repository, with "Allow public repositories" only if needed, and to selected
    workflows: this repository's pr.yml on refs/heads/main;
  - run the runner ephemeral (`./config.sh --ephemeral`, or CML's --single): one job each,
    so nothing a job leaves behind reaches the next.
Then Settings > Secrets and variables > Actions > Variables: SELF_HOSTED_ACK=true
(docs/ci.md#gpu-runners). Until then the CPU job runs the PR."""

PAGES_OFF = (
    "GitHub Pages is off for this repository: the site was built, not deployed. To publish it: "
    "Settings > Pages > Build and deployment > Source: GitHub Actions, then Settings > Secrets "
    "and variables > Actions > Variables: PAGES_ENABLED=true. Private repositories on GitHub's "
    "free plan have no Pages."
)


def gpu_route(env: dict[str, str]) -> tuple[str, str]:
    """(status, message) for the GPU route that GPU_RUNNER asks for in this repository."""
    runner = env.get("GPU_RUNNER", "")
    visibility = env.get("REPO_VISIBILITY", "")
    acknowledged = env.get("SELF_HOSTED_ACK", "") == "true"
    if runner in ("", "cml-cloud"):
        route = "cloud GPU runners launched by CML" if runner else "no GPU runner (CPU only)"
        return OK, f"GPU route: {route}"
    if runner != "self-hosted":
        return FAIL, f"GPU route: GPU_RUNNER={runner!r} is not self-hosted, cml-cloud or unset"
    if visibility == "private" or visibility == "internal":
        return OK, f"GPU route: self-hosted in a {visibility} repository"
    if acknowledged:
        return OK, "GPU route: self-hosted in a public repository, SELF_HOSTED_ACK=true"
    if not visibility:
        return WARN, (
            "GPU route: self-hosted, but the repository's visibility is unknown "
            "(set REPO_VISIBILITY, or install and log in gh); public needs SELF_HOSTED_ACK=true"
        )
    return FAIL, (
        "GPU route: GPU_RUNNER=self-hosted in a public repository without SELF_HOSTED_ACK=true: "
        "refused (fork code could reach the runner; see docs/ci.md#gpu-runners)"
    )


def _gh(*args: str) -> str | None:
    if not shutil.which("gh"):
        return None
    try:
        proc = subprocess.run(["gh", *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def repository_settings(env: dict[str, str]) -> dict[str, str]:
    """The variables the checks read: the environment's, else GitHub's through `gh`."""
    settings = {
        k: env[k]
        for k in ("GPU_RUNNER", "SELF_HOSTED_ACK", "PAGES_ENABLED", "REPO_VISIBILITY")
        if k in env
    }
    if "REPO_VISIBILITY" not in settings:
        out = _gh("repo", "view", "--json", "visibility")
        if out:
            settings["REPO_VISIBILITY"] = json.loads(out)["visibility"].lower()
    if not {"GPU_RUNNER", "SELF_HOSTED_ACK", "PAGES_ENABLED"} <= settings.keys():
        out = _gh("variable", "list", "--json", "name,value")
        for item in json.loads(out) if out else []:
            settings.setdefault(item["name"], item["value"])
    return settings


def local_checks(root: Path) -> list[tuple[str, str]]:
    checks: list[tuple[str, str]] = []
    ok = sys.version_info >= (3, 10)
    checks.append((OK if ok else FAIL, f"python: {sys.version.split()[0]} (3.10+ needed)"))
    stamp = root / ".venv/bin/.installed"
    lock = root / "requirements/lock.txt"
    if not stamp.exists():
        checks.append((FAIL, "environment: .venv is not installed (make install)"))
    elif lock.exists() and lock.stat().st_mtime > stamp.stat().st_mtime:
        checks.append(
            (WARN, "environment: requirements/lock.txt is newer than .venv (make install)")
        )
    else:
        checks.append((OK, "environment: .venv installed from requirements/lock.txt"))
    email = subprocess.run(
        ["git", "config", "user.email"], capture_output=True, text=True, cwd=root
    ).stdout.strip()
    checks.append(
        (OK, f"git identity: {email}")
        if email
        else (
            WARN,
            "git identity: none (git config --global user.email ...; DVC experiments commit)",
        )
    )
    act = root / ".venv/bin/act"
    checks.append(
        (OK, "act: installed (make act, make pr-local)")
        if act.exists() or shutil.which("act")
        else (WARN, "act: missing (make install; needed by make act and make pr-local)")
    )
    if os.geteuid() == 0:
        sudo = shutil.which("sudo")
        checks.append(
            (OK, "root: make act runs the jobs as user runner (sudo present)")
            if sudo
            else (
                WARN,
                "root: make act needs sudo to run jobs as user runner (apt-get install sudo)",
            )
        )
    docker = shutil.which("docker")
    engine = bool(docker) and (
        subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0
    )
    checks.append(
        (
            OK,
            "docker: "
            + ("engine running" if engine else "no engine (release images are built on GitHub)")
            + "; jobs under make act see none unless DOCKER=1",
        )
    )
    for tool, why in (("kubectl", "make lint renders deploy/k8s"), ("promtool", "make lint")):
        checks.append(
            (OK, f"{tool}: {shutil.which(tool)}")
            if shutil.which(tool)
            else (WARN, f"{tool}: missing ({why}; .ci/run installs what it can)")
        )
    return checks


def ci_checks(root: Path, env: dict[str, str]) -> list[tuple[str, str]]:
    checks: list[tuple[str, str]] = []
    floating = [
        p.name
        for p in sorted((root / ".github/workflows").glob("*.yml"))
        if re.search(r"ubuntu-latest", p.read_text())
    ]
    checks.append(
        (FAIL, f"runner images: ubuntu-latest in {', '.join(floating)} (pin ubuntu-24.04)")
        if floating
        else (OK, "runner images: pinned (ubuntu-24.04)")
    )
    settings = repository_settings(env)
    checks.append(gpu_route(settings))
    pages = settings.get("PAGES_ENABLED") == "true"
    checks.append(
        (OK, "docs site: deployed to GitHub Pages (PAGES_ENABLED=true)")
        if pages
        else (WARN, "docs site: built, not deployed (PAGES_ENABLED unset; see make ci-pages-off)")
    )
    return checks


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlproject.ops.doctor", description=__doc__)
    parser.add_argument("command", nargs="?", choices=["all", "gpu-route", "pages-off"])
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if args.command == "gpu-route":
        status, message = gpu_route(env)
        if status == FAIL:
            print(f"::error title=GPU route refused::{message}")
            print(SELF_HOSTED_SETTINGS)
            return 1
        print(message)
        return 0
    if args.command == "pages-off":
        print(f"::notice title=GitHub Pages is off::{PAGES_OFF}")
        return 0
    root = Path.cwd()
    checks = local_checks(root) + ci_checks(root, env)
    for status, message in checks:
        print(f"{status:<4}  {message}")
    failed = [m for s, m in checks if s == FAIL]
    if any("GPU route" in m for m in failed):
        print(SELF_HOSTED_SETTINGS)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
