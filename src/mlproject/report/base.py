"""Like with like: which outputs of the base the report compares head with.

    committed   the base's model (its dvc.lock entry) is in the local DVC cache: the base's
                committed metrics and predictions belong to outputs at hand
    pulled      they were not, and `dvc repro --pull` at the base fetched them from the remote
    rebuilt     neither: the base was reproduced here, on this runner, like head

Pulled and rebuilt bases live in a git worktree at the base commit,
`.dvc/tmp/base/<hash of the base's dvc.lock>` (ignored by git and DVC), which shares the DVC
cache: a second report against the same base reuses it, and DVC's run cache restores stages it
has run before. The worktree runs the base's own code (PYTHONPATH=<worktree>/src).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .diff import cache_file, flatten, git, git_show, locked_md5

BASE_MODEL = "outputs/model.pt"
WORKTREES = Path(".dvc/tmp/base")
DONE = ".mlproject-base-done"
MODES = ("auto", "committed", "rebuild")


def _dvc_cache_dir(cwd: Path) -> Path:
    result = subprocess.run(["dvc", "cache", "dir"], cwd=cwd, capture_output=True, text=True)
    out = result.stdout.strip()
    return Path(out) if result.returncode == 0 and out else cwd / ".dvc" / "cache"


def _folder(lock_text: str, cwd: Path) -> Path:
    return cwd / WORKTREES / hashlib.sha256(lock_text.encode()).hexdigest()[:16]


def _worktree(base_sha: str, lock_text: str, cwd: Path, log) -> Path:
    """A new worktree of the base, checked out at base_sha."""
    folder = _folder(lock_text, cwd)
    if folder.exists():  # an interrupted build: start again
        git("worktree", "remove", "--force", str(folder), cwd=cwd, check=False)
        shutil.rmtree(folder, ignore_errors=True)
    git("worktree", "prune", cwd=cwd, check=False)
    folder.parent.mkdir(parents=True, exist_ok=True)
    log(f"base: checking out {base_sha[:7]} in {folder.relative_to(cwd)}")
    git("worktree", "add", "--detach", "--quiet", str(folder), base_sha, cwd=cwd)
    return folder


def _reproduce(folder: Path, cache: Path, log) -> dict[str, str]:
    """Data, then `dvc repro` (with --pull when a remote is set) in the worktree; stage states."""
    from .ci import _run_dvc_repro, remote_configured

    env = {**os.environ, "PYTHONPATH": str(folder / "src"), "DVC_NO_ANALYTICS": "1"}

    def run(args: list[str]) -> int:
        return subprocess.run(args, cwd=folder, env=env).returncode

    run(["dvc", "config", "--local", "cache.dir", str(cache)])
    run(["python", "-m", "mlproject.pipeline.data"])
    stages: dict[str, str] = {}
    code = 1
    if remote_configured(str(folder)):
        code = _run_dvc_repro(["dvc", "repro", "--pull"], stages, str(folder), env)
    if code != 0:
        code = _run_dvc_repro(["dvc", "repro"], stages, str(folder), env)
    if code != 0:
        raise RuntimeError(f"base: dvc repro failed in {folder} (exit {code})")
    return stages


def base_outputs(base_sha: str, cwd: str | Path = ".", mode: str = "auto", log=print) -> dict:
    """Where the base's outputs come from: {"source": committed|pulled|rebuilt, "dir", ...}."""
    if mode not in MODES:
        raise ValueError(f"base outputs mode {mode!r}: expected one of {', '.join(MODES)}")
    cwd = Path(cwd).resolve()
    lock_text = git_show(base_sha, "dvc.lock", cwd)
    md5 = locked_md5(base_sha, BASE_MODEL, cwd)
    if mode == "committed" or lock_text is None or md5 is None:
        why = "as asked" if mode == "committed" else "the base has no pipeline outputs to rebuild"
        return {"source": "committed", "dir": None, "why": why}
    done = _folder(lock_text, cwd) / DONE
    if done.is_file():  # built before, by an earlier report against this base
        return {**json.loads(done.read_text()), "dir": str(done.parent), "reused": True}
    if mode == "auto" and cache_file(md5, cwd):
        return {"source": "committed", "dir": None, "why": "the base's model is in the DVC cache"}
    folder = _worktree(base_sha, lock_text, cwd, log)
    stages = _reproduce(folder, _dvc_cache_dir(cwd), log)
    ran = sorted(s for s, what in stages.items() if what == "ran")
    info = {
        "source": "rebuilt" if ran else "pulled",
        "why": "the base's model was not in the DVC cache",
        "stages_run": ran,
    }
    (folder / DONE).write_text(json.dumps(info) + "\n")
    return {**info, "dir": str(folder), "reused": False}


def read_base_file(outputs: dict[str, Any], base_sha: str, path: str, cwd: Path) -> str | None:
    """A file of the base: from its worktree when rebuilt or pulled, else from git."""
    if outputs.get("dir"):
        file = Path(outputs["dir"]) / path
        return file.read_text() if file.is_file() else None
    return git_show(base_sha, path, cwd)


def rebase_metrics(metrics_diff: dict[str, dict], outputs: dict[str, Any]) -> dict[str, dict]:
    """The `dvc metrics diff` entries with `old` taken from the base's worktree files."""
    if not outputs.get("dir"):
        return metrics_diff
    out = {}
    for file, entries in metrics_diff.items():
        path = Path(outputs["dir"]) / file
        try:
            old = flatten(json.loads(path.read_text())) if path.is_file() else {}
        except json.JSONDecodeError:
            old = {}
        names = set(entries) | set(old)
        out[file] = {
            n: {**entries.get(n, {}), "old": old.get(n), "new": entries.get(n, {}).get("new")}
            for n in names
        }
    return out
