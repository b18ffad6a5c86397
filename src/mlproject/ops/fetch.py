"""Fetching a registered model: its ONNX file, card and reference profile, from the first source
that has it (the DVC remote, the repository's local DVC cache, or a rebuild at its commit).

    python -m mlproject.ops.registry fetch (--stage prod | --rev v1.2.0) [--repo URL] [--out DIR]

The model's sha256 is checked against its card, and `lineage.registry` (artifact, version, stage,
tag, commit, and `source`: remote, cache or rebuild) is added to the card.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import ProjectError
from ..core.io import atomic_dir, write_json
from ..core.lineage import file_sha256
from ..core.paths import DATA_DVC
from ..core.proc import dvc_remote_configured, git, run, tool
from ..report.diff import locked_md5
from .registry import COMPANIONS, RegistryError, resolve

SOURCES = ("remote", "cache", "rebuild")
SOURCE_TEXT = {
    "remote": "the DVC remote",
    "cache": "the local DVC cache",
    "rebuild": "a rebuild at the commit",
}


def _dvc_cache_dir(repo: str | Path) -> str:
    """The repository's DVC cache folder as `dvc cache dir` prints it ('' when it fails)."""
    proc = run([tool("dvc"), "cache", "dir"], cwd=repo, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def _is_local(repo: str | Path) -> bool:
    return Path(repo).is_dir()


def _from_remote(info: dict[str, Any], model_path: str, repo: str, dest: Path) -> None:
    """`dvc artifacts get` / `dvc get`: DVC resolves the revision and reads the DVC remote."""
    if _is_local(repo) and not dvc_remote_configured(repo):
        raise RegistryError("no DVC remote is configured")
    if info["version"]:
        args = ["artifacts", "get", str(repo), info["artifact"], "--rev", info["version"]]
    else:
        args = ["get", str(repo), model_path, "--rev", info["commit"]]
    run([tool("dvc"), *args, "-o", str(dest / Path(model_path).name), "--force"])
    for companion in COMPANIONS:
        source = str(Path(model_path).parent / companion)
        get = [tool("dvc"), "get", str(repo), source, "--rev", info["commit"]]
        proc = run([*get, "-o", str(dest / companion), "--force"], check=False)
        if proc.returncode != 0 and companion == "model_card.json":
            raise RegistryError(
                f"{source} at {info['commit'][:8]}: cannot fetch "
                f"({proc.stderr.strip().splitlines()[-1:]})."
            )


def _from_cache(info: dict[str, Any], model_path: str, repo: str, dest: Path) -> None:
    """The file dvc.lock recorded, from the repository's own DVC cache (no remote needed)."""
    if not _is_local(repo):
        raise RegistryError(f"{repo} is not a local repository; its DVC cache is not here.")
    md5 = locked_md5(info["commit"], model_path, repo)
    if not md5:
        raise RegistryError(f"dvc.lock at {info['commit'][:8]} records no '{model_path}'.")
    cache_dir = Path(_dvc_cache_dir(repo))
    if not cache_dir.is_absolute():
        cache_dir = Path(repo) / ".dvc" / "cache"
    blob = cache_dir / "files" / "md5" / md5[:2] / md5[2:]
    if not blob.is_file():
        raise RegistryError(f"{model_path} ({md5[:8]}) is not in the local DVC cache {cache_dir}")
    shutil.copyfile(blob, dest / Path(model_path).name)
    for companion in COMPANIONS:
        source = str(Path(model_path).parent / companion)
        text = git("show", f"{info['commit']}:{source}", cwd=repo, check=False)
        if text:
            (dest / companion).write_text(text + "\n")
        elif companion == "model_card.json":
            raise RegistryError(f"{source} is not committed at {info['commit'][:8]}.")


def _stages_writing(dvc_yaml: Path, model_path: str) -> list[str]:
    """The stages whose outputs are the model or its companions (their upstream runs too)."""
    wanted = {model_path, *(str(Path(model_path).parent / c) for c in COMPANIONS)}
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages") or {}
    return [
        name
        for name, stage in stages.items()
        if any(
            (next(iter(o)) if isinstance(o, dict) else o) in wanted for o in stage.get("outs", [])
        )
    ]


def _rebuild(info: dict[str, Any], model_path: str, repo: str, dest: Path) -> None:
    """Clone the repository at the commit, make its data present and run `dvc repro` there with
    that commit's own code; the card and profile are the rebuilt ones."""
    with tempfile.TemporaryDirectory(prefix="mlproject-rebuild-") as tmp:
        clone = Path(tmp) / "repo"
        origin = str(Path(repo).resolve()) if _is_local(repo) else str(repo)
        git("clone", "--quiet", "--no-checkout", origin, str(clone), cwd=tmp)
        git("checkout", "--quiet", "--detach", info["commit"], cwd=clone)
        env = {**os.environ, "PYTHONPATH": str(clone / "src"), "DVC_NO_ANALYTICS": "1"}
        if _is_local(repo):
            # Share the repository's cache: its data version is there even without a remote
            # (the rebuilt outputs land there too, as after any `dvc repro`).
            cache = _dvc_cache_dir(repo)
            if cache:
                run([tool("dvc"), "cache", "dir", "--local", cache], cwd=clone)
            run(
                [tool("dvc"), "checkout", "--quiet", str(DATA_DVC)], cwd=clone, env=env, check=False
            )
        stages = _stages_writing(clone / "dvc.yaml", model_path)
        steps = ([sys.executable, "-m", "mlproject.pipeline.data"], [tool("dvc"), "repro", *stages])
        for step in steps:
            print(
                f"rebuild at {info['commit'][:8]}: {' '.join(step[1:])}",
                file=sys.stderr,
                flush=True,
            )
            proc = run(step, cwd=clone, env=env, check=False)
            if proc.returncode != 0:
                detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                raise RegistryError(
                    f"rebuild at {info['commit'][:8]}: `{' '.join(step[1:])}` failed: {detail}"
                )
        shutil.copyfile(clone / model_path, dest / Path(model_path).name)
        for companion in COMPANIONS:
            source = clone / Path(model_path).parent / companion
            if source.is_file():
                shutil.copyfile(source, dest / companion)


def fetch(
    name: str,
    model_path: str,
    rev: str | None = None,
    stage: str | None = None,
    repo: str = ".",
    out: str | Path = "dist/model",
    sources: tuple[str, ...] = SOURCES,
) -> dict[str, Any]:
    """A registered model, its card and profile into `out`, from the first source that has it:
    the DVC remote, the repository's local DVC cache, or a rebuild at its commit. The card's
    `lineage.registry.source` says which; returns the card."""
    info = resolve(name, rev=rev, stage=stage, repo=repo)
    out = Path(out)
    model_file = Path(model_path).name
    getters = {"remote": _from_remote, "cache": _from_cache, "rebuild": _rebuild}
    failures = []
    with atomic_dir(out) as tmp:
        for source in sources:
            try:
                getters[source](info, model_path, repo, tmp)
            except ProjectError as exc:  # a RegistryError, or a command that failed
                failures.append(f"{SOURCE_TEXT[source]}: {exc}")
                print(f"fetch: not from {SOURCE_TEXT[source]} ({exc})", file=sys.stderr, flush=True)
                continue
            break
        else:
            raise RegistryError(
                f"cannot get {info['tag'] or info['commit'][:8]}'s model from any source: "
                + "; ".join(failures)
            )
        card = json.loads((tmp / "model_card.json").read_text())
        actual = file_sha256(tmp / model_file)
        if card.get("sha256") != actual:
            raise RegistryError(
                f"{model_file} from {SOURCE_TEXT[source]} for {info['rev']} has sha256 "
                f"{actual[:12]}, but its card says {str(card.get('sha256'))[:12]}; that source "
                "does not hold the model this commit recorded."
            )
        card.setdefault("lineage", {})["registry"] = {
            k: info[k] for k in ("artifact", "version", "stage", "tag", "commit")
        }
        card["lineage"]["registry"]["repo"] = str(repo)
        card["lineage"]["registry"]["source"] = source
        write_json(tmp / "model_card.json", card)
    return card
