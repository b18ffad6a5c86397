"""Where a result came from: the git commit and the data version (no PyTorch, no DVC import)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import yaml

# Files the pipeline itself rewrites; changes to them do not make the source "dirty".
PIPELINE_OUTPUTS = ("dvc.lock", "reports", "models")


def git_commit(cwd: str | Path = ".") -> dict[str, object]:
    """The HEAD commit and whether tracked sources (not pipeline outputs) have changes."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git(
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ".",
        *(f":(exclude){p}" for p in PIPELINE_OUTPUTS),
    )
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def dvc_tracked_hash(dvc_file: str | Path = "data.dvc") -> str | None:
    """The md5 that a `.dvc` file records for its output, e.g. '3f1c….dir'."""
    return dvc_tracked_info(dvc_file)["md5"]


def dvc_tracked_info(dvc_file: str | Path = "data.dvc") -> dict[str, object]:
    """What a `.dvc` file records of its (first) output: path, md5, file count, size."""
    path = Path(dvc_file)
    if not path.is_file():
        return {"dvc_file": str(dvc_file), "md5": None}
    out = ((yaml.safe_load(path.read_text()) or {}).get("outs") or [{}])[0]
    return {
        "dvc_file": str(dvc_file),
        "path": out.get("path"),
        "md5": out.get("md5"),
        "nfiles": out.get("nfiles"),
        "size": out.get("size"),
    }


def file_md5(path: str | Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def workspace_dir_hash(root: str | Path) -> str:
    """DVC 3's hash of a directory: md5 of the sorted JSON list of {md5, relpath}, plus '.dir'.

    Computed here so `make data` can verify the bytes without loading DVC; a test checks that
    it agrees with `dvc status`.
    """
    root = Path(root)
    entries = [
        {"md5": file_md5(p), "relpath": p.relative_to(root).as_posix()}
        for p in root.rglob("*")
        if p.is_file()
    ]
    entries.sort(key=lambda e: e["relpath"])
    blob = json.dumps(entries, sort_keys=True).encode("utf-8")
    return hashlib.md5(blob).hexdigest() + ".dir"
