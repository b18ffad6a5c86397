"""Like with like: which outputs of the base the report compares head with.

    committed   the base's committed outputs were made with the same numerics as head's (the
                fingerprints in the two model cards agree: determinism.comparable) and its model
                (its dvc.lock entry) is in the local DVC cache: they belong to outputs at hand
    pulled      the numerics agree but the model was not at hand, and `dvc repro --pull` at the
                base fetched the outputs from the remote
    rebuilt     otherwise: the base was reproduced here, on this runner, like head. Outputs made
                with other numerics (another torch build, architecture or pinning) are never
                compared with head's: everything the report shows of the base then comes from
                the rebuild (metrics, per-class, curves, predictions, model hash, latency).

Pulled and rebuilt bases live in a git worktree at the base commit,
`.dvc/tmp/base/<hash of the base's dvc.lock>` (ignored by git and DVC), which shares the DVC
cache: a second report against the same base reuses it (its outputs are in the worktree and the
cache). DVC's run cache restores only `prepare` there: DVC keeps no run cache for a stage with an
uncached output that is neither a metric nor a plot (train's plots folder, evaluate's
reports/eval, export's card), so those stages rerun when their inputs change. The worktree runs
the base's own code (PYTHONPATH=<worktree>/src).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..core.numerics import card_numerics, comparable
from ..core.paths import CHECKPOINT, MODEL_CARD
from ..core.proc import dvc_remote_configured, run, tool
from .diff import cache_file, flatten, git, git_show, git_show_bytes, locked_md5

BASE_MODEL = CHECKPOINT.as_posix()
WORKTREES = Path(".dvc/tmp/base")
DONE = ".mlproject-base-done"
MODES = ("auto", "committed", "rebuild")


def _dvc_cache_dir(cwd: Path) -> Path:
    result = run([tool("dvc"), "cache", "dir"], cwd=cwd, check=False)
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


def _reproduce(folder: Path, cache: Path, log, force: bool = False) -> dict[str, str]:
    """Data, then `dvc repro` (with --pull when a remote is set) in the worktree; stage states.
    force: every stage runs here, nothing is pulled or taken from the cache (the committed
    outputs were made with other numerics, and the remote and the cache may hold them)."""
    from .ci import _run_dvc_repro

    env = {**os.environ, "PYTHONPATH": str(folder / "src"), "DVC_NO_ANALYTICS": "1"}
    for step in (
        ["dvc", "config", "--local", "cache.dir", str(cache)],
        ["python", "-m", "mlproject.pipeline.data"],
    ):
        run(step, cwd=folder, env=env, capture=False, check=False)
    stages: dict[str, str] = {}
    code = 1
    if force:
        code = _run_dvc_repro(["dvc", "repro", "--force"], stages, str(folder), env)
    elif dvc_remote_configured(folder):
        code = _run_dvc_repro(["dvc", "repro", "--pull"], stages, str(folder), env)
    if code != 0 and not force:
        code = _run_dvc_repro(["dvc", "repro"], stages, str(folder), env)
    if code != 0:
        raise RuntimeError(f"base: dvc repro failed in {folder} (exit {code})")
    return stages


def base_outputs(base_sha: str, cwd: str | Path = ".", mode: str = "auto", log=print) -> dict:
    """Where the base's outputs come from: {"source": committed|pulled|rebuilt, "dir", "why",
    "numerics": {"base", "head"}}."""
    if mode not in MODES:
        raise ValueError(f"base outputs mode {mode!r}: expected one of {', '.join(MODES)}")
    cwd = Path(cwd).resolve()
    card = MODEL_CARD.as_posix()
    head_card = cwd / card
    base_card = git_show(base_sha, card, cwd)
    fingerprints = {
        "base": card_numerics(base_card),
        "head": card_numerics(head_card.read_text() if head_card.is_file() else None),
    }
    lock_text = git_show(base_sha, "dvc.lock", cwd)
    md5 = locked_md5(base_sha, BASE_MODEL, cwd)
    if mode == "committed" or lock_text is None or md5 is None or base_card is None:
        why = "as asked" if mode == "committed" else "the base has no pipeline outputs to compare"
        return {"source": "committed", "dir": None, "why": why, "numerics": fingerprints}
    done = _folder(lock_text, cwd) / DONE
    if done.is_file():  # built before, by an earlier report against this base
        return {**json.loads(done.read_text()), "dir": str(done.parent), "reused": True}
    same, difference = comparable(fingerprints["base"], fingerprints["head"], ("base", "head"))
    if mode == "auto" and same and cache_file(md5, cwd):
        why = "same numerics as head, and the base's model is in the DVC cache"
        return {"source": "committed", "dir": None, "why": why, "numerics": fingerprints}
    if same or mode == "rebuild":
        why = "as asked" if mode == "rebuild" else "the base's model was not in the DVC cache"
    else:
        why = f"its committed outputs were made with other numerics: {difference}"
    folder = _worktree(base_sha, lock_text, cwd, log)
    stages = _reproduce(folder, _dvc_cache_dir(cwd), log, force=not same)
    ran = sorted(s for s, what in stages.items() if what == "ran")
    rebuilt_card = folder / card
    fingerprints["base"] = card_numerics(
        rebuilt_card.read_text() if rebuilt_card.is_file() else None
    )
    info = {
        "source": "rebuilt" if ran else "pulled",
        "why": why,
        "stages_run": ran,
        "numerics": fingerprints,
    }
    (folder / DONE).write_text(json.dumps(info) + "\n")
    return {**info, "dir": str(folder), "reused": False}


def read_base_file(outputs: dict[str, Any], base_sha: str, path: str, cwd: Path) -> str | None:
    """A file of the base: from its worktree when rebuilt or pulled, else from git."""
    data = read_base_bytes(outputs, base_sha, path, cwd)
    return data.decode("utf-8") if data is not None else None


def read_base_bytes(outputs: dict[str, Any], base_sha: str, path: str, cwd: Path) -> bytes | None:
    """read_base_file, as bytes (images)."""
    if outputs.get("dir"):
        file = Path(outputs["dir"]) / path
        return file.read_bytes() if file.is_file() else None
    return git_show_bytes(base_sha, path, cwd)


def base_model_file(outputs: dict[str, Any], base_sha: str, path: str, cwd: Path) -> Path | None:
    """The base's ONNX model file: in its worktree when rebuilt or pulled, else in the DVC cache
    (by the md5 its dvc.lock records)."""
    if outputs.get("dir"):
        file = Path(outputs["dir"]) / path
        return file if file.is_file() else None
    md5 = locked_md5(base_sha, path, cwd)
    return cache_file(md5, cwd) if md5 else None


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
