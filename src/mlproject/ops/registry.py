"""The model registry: versions and stages as git tags in the GTO convention, tied to dvc.yaml.

    python -m mlproject.ops.registry register [--version v1.2.0 | --bump minor] [--push]
    python -m mlproject.ops.registry promote --stage prod [--version v1.2.0] [--push]
    python -m mlproject.ops.registry fetch (--stage prod | --rev v1.2.0) [--repo URL] [--out DIR]
    python -m mlproject.ops.registry show | base | parse-tag TAG

A version is the tag `<artifact>@v1.2.3` on the commit whose dvc.lock records the model (GTO's
`gto register`); a stage is the tag `<artifact>#<stage>#<n>` (`gto assign`), the newest one wins,
so a roll-back is promoting the previous version again. The artifact's name and path come from
the `artifacts:` section of dvc.yaml. `fetch` gets the model with `dvc artifacts get` from the
DVC remote, else from the repository's local DVC cache, else by rebuilding it at its commit (a
clone with that commit's code and data, `dvc repro`); the card and reference profile come with
it. It checks the model's sha256 against the card and adds `lineage.registry` (artifact, version,
stage, tag, commit, and `source`: remote, cache or rebuild) to the card.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ..core.io import atomic_dir, write_json

DEFAULT_BRANCH = "main"
SEMVER = re.compile(r"^v?\d+\.\d+\.\d+$")
FIRST_VERSION = "v0.1.0"
# Files fetched from git next to the model (same folder as the artifact in the repository).
COMPANIONS = ("model_card.json", "reference_profile.json")


class RegistryError(RuntimeError):
    """A registry operation cannot be done; the message says why and what to do."""


def _bin(name: str) -> str:
    """A tool from this Python's environment (venv), else from PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def _run(args: list[str], cwd: str | Path = ".", check: bool = True) -> str:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise RegistryError(
            f"`{' '.join(args)}` failed: {detail[-1] if detail else proc.returncode}"
        )
    return proc.stdout.strip()


def gto(*args: str, repo: str | Path = ".") -> str:
    return _run([_bin("gto"), *args, "--repo", str(repo)])


def git(*args: str, cwd: str | Path = ".", check: bool = True) -> str:
    return _run(["git", *args], cwd=cwd, check=check)


# ----------------------------------------------------------------------------- the artifact


def artifact(dvc_yaml: str | Path = "dvc.yaml", name: str | None = None) -> tuple[str, str]:
    """(name, path) of the model artifact declared under `artifacts:` in dvc.yaml."""
    path = Path(dvc_yaml)
    if not path.is_file():
        raise RegistryError(f"{path}: not found; the registry needs its `artifacts:` section.")
    entries = (yaml.safe_load(path.read_text()) or {}).get("artifacts") or {}
    models = {k: v for k, v in entries.items() if (v or {}).get("type") == "model"}
    if name:
        if name not in entries:
            raise RegistryError(
                f"{path}: no artifact '{name}' under `artifacts:` "
                f"(declared: {', '.join(entries) or 'none'})."
            )
        return name, entries[name]["path"]
    if len(models) != 1:
        raise RegistryError(
            f"{path}: expected one artifact of type model under `artifacts:`, "
            f"found {len(models)}; pass --name."
        )
    ((only, entry),) = models.items()
    return only, entry["path"]


def check_commit_has_model(rev: str, model_path: str, repo: str | Path = ".") -> str:
    """The commit of `rev`, after checking that it records the model (dvc.lock) and its card."""
    commit = git("rev-parse", "--verify", f"{rev}^{{commit}}", cwd=repo)
    lock = git("show", f"{commit}:dvc.lock", cwd=repo, check=False)
    outs = [
        o.get("path")
        for stage in (yaml.safe_load(lock or "{}") or {}).get("stages", {}).values()
        for o in stage.get("outs", [])
    ]
    if model_path not in outs:
        raise RegistryError(
            f"{rev} ({commit[:8]}): dvc.lock records no '{model_path}'; run "
            "`dvc repro` and commit dvc.lock and the outputs first."
        )
    card = str(Path(model_path).parent / "model_card.json")
    if not git("ls-tree", commit, "--", card, cwd=repo):
        raise RegistryError(f"{rev} ({commit[:8]}): '{card}' is not committed.")
    return commit


# ----------------------------------------------------------------------------- reading


def versions(name: str, repo: str | Path = ".") -> list[dict[str, Any]]:
    """Registered versions (GTO's JSON: version, commit_hexsha, ref, stages...); [] if none."""
    proc = subprocess.run(
        [_bin("gto"), "show", name, "--json", "--repo", str(repo)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        if "Cannot find artifact" in proc.stdout + proc.stderr:
            return []
        raise RegistryError(f"`gto show {name}` failed: {(proc.stderr or proc.stdout).strip()}")
    return json.loads(proc.stdout or "[]")


def version_of_stage(name: str, stage: str, repo: str | Path = ".") -> str | None:
    out = gto("show", f"{name}#{stage}", "--version", repo=repo)
    return out or None


def latest_version(name: str, repo: str | Path = ".") -> str | None:
    return (
        (gto("show", f"{name}@greatest", "--version", repo=repo) or None)
        if versions(name, repo)
        else None
    )


def resolve(
    name: str, rev: str | None = None, stage: str | None = None, repo: str | Path = "."
) -> dict[str, Any]:
    """What a stage or a version (or any git revision) points to: version, tag and commit."""
    if stage:
        version = version_of_stage(name, stage, repo)
        if not version:
            raise RegistryError(
                f"no version of '{name}' is in stage '{stage}'; promote one "
                f"with `make promote STAGE={stage}`."
            )
    elif rev and (SEMVER.match(rev) or rev.startswith(f"{name}@")):
        version = rev.split("@", 1)[-1]
        version = version if version.startswith("v") else f"v{version}"
    elif rev:
        commit = git("rev-parse", "--verify", f"{rev}^{{commit}}", cwd=repo)
        return {
            "artifact": name,
            "version": None,
            "stage": None,
            "tag": None,
            "commit": commit,
            "rev": rev,
        }
    else:
        raise RegistryError("say which model: a stage (STAGE=prod) or a revision (REV=v1.2.0).")
    match = [v for v in versions(name, repo) if v["version"] == version]
    if not match:
        raise RegistryError(
            f"version '{version}' of '{name}' is not registered "
            f"(registered: {', '.join(v['version'] for v in versions(name, repo))})."
        )
    return {
        "artifact": name,
        "version": version,
        "stage": stage,
        "tag": f"{name}@{version}",
        "commit": match[0]["commit_hexsha"],
        "rev": rev or f"{name}#{stage}",
    }


def base_revision(
    name: str, repo: str | Path = ".", stage: str = "prod", default_branch: str = DEFAULT_BRANCH
) -> str:
    """What a retrained model is compared with: the prod model's commit, else the default branch."""
    try:
        return resolve(name, stage=stage, repo=repo)["commit"]
    except RegistryError:
        pass
    for candidate in (f"origin/{default_branch}", default_branch):
        if git("rev-parse", "--verify", "--quiet", candidate, cwd=repo, check=False):
            return git("rev-parse", candidate, cwd=repo)
    return git("rev-parse", "HEAD", cwd=repo)


def parse_tag(tag: str, repo: str | Path = ".") -> dict[str, Any]:
    """A registry tag -> {artifact, event, version, stage, commit} (GTO's own parser)."""
    from gto.tag import parse_name

    try:
        parsed = parse_name(tag)
    except Exception as exc:  # GTO raises its own InvalidTagName
        raise RegistryError(
            f"'{tag}' is not a registry tag (<artifact>@v1.2.3 or <artifact>#<stage>#<n>): {exc}"
        ) from exc
    event = parsed["action"].value
    info = {
        "artifact": parsed["name"],
        "event": event,
        "version": parsed.get("version"),
        "stage": parsed.get("stage"),
        "tag": tag,
        "commit": None,
    }
    if event in ("register", "assign"):
        ref = json.loads(gto("check-ref", tag, "--json", repo=repo) or "{}")
        if not ref:
            raise RegistryError(f"tag '{tag}' is not in the repository; fetch tags first.")
        info.update(version=ref["version"], commit=ref["commit_hexsha"])
    return info


# ----------------------------------------------------------------------------- writing


def register(
    name: str,
    model_path: str,
    version: str | None = None,
    bump: str = "patch",
    ref: str = "HEAD",
    push: bool = False,
    repo: str | Path = ".",
) -> str:
    """Tag `ref` as a new version; the first version is v0.1.0 unless one is given."""
    commit = check_commit_has_model(ref, model_path, repo)
    args = ["register", name, commit]
    if version:
        args += ["--version", version if version.startswith("v") else f"v{version}"]
    elif not versions(name, repo):
        args += ["--version", FIRST_VERSION]
    else:
        if bump not in ("patch", "minor", "major"):
            raise RegistryError(f"BUMP must be patch, minor or major, not '{bump}'.")
        args.append(f"--bump-{bump}")
    if push:
        _run([_bin("dvc"), "push", model_path], cwd=repo)
        args.append("--push")
    gto(*args, repo=repo)
    registered = [v for v in versions(name, repo) if v["commit_hexsha"] == commit]
    return registered[-1]["ref"]


def promote(
    name: str, stage: str, version: str | None = None, push: bool = False, repo: str | Path = "."
) -> str:
    """Assign `stage` to a version (default: the greatest registered); returns the new tag."""
    if not stage or not re.fullmatch(r"[a-z][a-z0-9-]*", stage):
        raise RegistryError(f"STAGE must be a name like prod or staging, got '{stage}'.")
    version = version or latest_version(name, repo)
    if not version:
        raise RegistryError(f"no version of '{name}' is registered; run `make register` first.")
    version = version if version.startswith("v") else f"v{version}"
    resolve(name, rev=version, repo=repo)  # fails clearly on an unknown version
    if version_of_stage(name, stage, repo) == version:
        raise RegistryError(f"{name} {version} is already the version in '{stage}'.")
    before = set(git("tag", "--list", f"{name}#{stage}#*", cwd=repo).split())
    # --force: GTO refuses a version that held the stage before, which is what a roll-back is.
    args = ["assign", name, f"{name}@{version}", "--stage", stage, "--simple", "false", "--force"]
    gto(*(args + (["--push"] if push else [])), repo=repo)
    new = set(git("tag", "--list", f"{name}#{stage}#*", cwd=repo).split()) - before
    return new.pop() if new else f"{name}#{stage}"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


SOURCES = ("remote", "cache", "rebuild")
SOURCE_TEXT = {
    "remote": "the DVC remote",
    "cache": "the local DVC cache",
    "rebuild": "a rebuild at the commit",
}


def _is_local(repo: str | Path) -> bool:
    return Path(repo).is_dir()


def _recorded_md5(commit: str, model_path: str, repo: str | Path) -> str | None:
    """The model's md5 as dvc.lock at `commit` records it."""
    lock = yaml.safe_load(git("show", f"{commit}:dvc.lock", cwd=repo, check=False) or "{}") or {}
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs", []):
            if out.get("path") == model_path:
                return out.get("md5")
    return None


def _from_remote(info: dict[str, Any], model_path: str, repo: str, dest: Path) -> None:
    """`dvc artifacts get` / `dvc get`: DVC resolves the revision and reads the DVC remote."""
    if _is_local(repo) and not _run([_bin("dvc"), "remote", "list"], cwd=repo, check=False):
        raise RegistryError("no DVC remote is configured")
    if info["version"]:
        args = ["artifacts", "get", str(repo), info["artifact"], "--rev", info["version"]]
    else:
        args = ["get", str(repo), model_path, "--rev", info["commit"]]
    _run([_bin("dvc"), *args, "-o", str(dest / Path(model_path).name), "--force"])
    for companion in COMPANIONS:
        source = str(Path(model_path).parent / companion)
        proc = subprocess.run(
            [
                _bin("dvc"),
                "get",
                str(repo),
                source,
                "--rev",
                info["commit"],
                "-o",
                str(dest / companion),
                "--force",
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0 and companion == "model_card.json":
            raise RegistryError(
                f"{source} at {info['commit'][:8]}: cannot fetch "
                f"({proc.stderr.strip().splitlines()[-1:]})."
            )


def _from_cache(info: dict[str, Any], model_path: str, repo: str, dest: Path) -> None:
    """The file dvc.lock recorded, from the repository's own DVC cache (no remote needed)."""
    if not _is_local(repo):
        raise RegistryError(f"{repo} is not a local repository; its DVC cache is not here.")
    md5 = _recorded_md5(info["commit"], model_path, repo)
    if not md5:
        raise RegistryError(f"dvc.lock at {info['commit'][:8]} records no '{model_path}'.")
    cache_dir = Path(_run([_bin("dvc"), "cache", "dir"], cwd=repo, check=False) or "")
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
            cache = _run([_bin("dvc"), "cache", "dir"], cwd=repo, check=False)
            if cache:
                _run([_bin("dvc"), "cache", "dir", "--local", cache], cwd=clone)
            subprocess.run(
                [_bin("dvc"), "checkout", "--quiet", "data.dvc"],
                cwd=clone,
                env=env,
                capture_output=True,
            )
        stages = _stages_writing(clone / "dvc.yaml", model_path)
        steps = ([sys.executable, "-m", "mlproject.pipeline.data"], [_bin("dvc"), "repro", *stages])
        for step in steps:
            print(
                f"rebuild at {info['commit'][:8]}: {' '.join(step[1:])}",
                file=sys.stderr,
                flush=True,
            )
            proc = subprocess.run(step, cwd=clone, env=env, capture_output=True, text=True)
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
            except RegistryError as exc:
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
        actual = sha256(tmp / model_file)
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


# ----------------------------------------------------------------------------- entry point


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mlproject.ops.registry", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--name", default=None, help="artifact name (default: dvc.yaml's model)")
    sub = parser.add_subparsers(dest="command", required=True)
    reg = sub.add_parser("register", help="tag a commit as a new model version")
    reg.add_argument("--version", default=None)
    reg.add_argument("--bump", default="patch", choices=("patch", "minor", "major"))
    reg.add_argument("--ref", default="HEAD")
    reg.add_argument("--push", action="store_true", help="dvc push the model, git push the tag")
    pro = sub.add_parser("promote", help="assign a stage to a version")
    pro.add_argument("--stage", required=True)
    pro.add_argument("--version", default=None)
    pro.add_argument("--push", action="store_true")
    fet = sub.add_parser("fetch", help="download a registered model, card and profile")
    which = fet.add_mutually_exclusive_group(required=True)
    which.add_argument("--stage")
    which.add_argument("--rev")
    fet.add_argument("--repo", default=".")
    fet.add_argument("--out", default="dist/model")
    sub.add_parser("show", help="versions and stages (gto show)")
    base = sub.add_parser("base", help="print the revision a retrained model is compared with")
    base.add_argument("--stage", default="prod")
    tag = sub.add_parser("parse-tag", help="print a registry tag's parts as JSON")
    tag.add_argument("tag")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "parse-tag":
            print(json.dumps(parse_tag(args.tag)))
            return 0
        name, path = artifact(name=args.name)
        if args.command == "register":
            tag = register(name, path, args.version, args.bump, args.ref, args.push)
            from ..pipeline.tracking import TrackingError
            from ..pipeline.tracking import (
                register as mlflow_register,  # when MLflow tracking is on
            )

            try:
                mlflow_register(tag.rpartition("@")[2], name)
            except TrackingError as exc:
                raise RegistryError(f"registered {tag} in git, not in MLflow: {exc}") from None
            print(
                f"registered {tag}" + ("" if args.push else f"; publish it: git push origin {tag}")
            )
        elif args.command == "promote":
            tag = promote(name, args.stage, args.version, args.push)
            print(
                f"promoted: {tag}" + ("" if args.push else f"; publish it: git push origin '{tag}'")
            )
        elif args.command == "fetch":
            card = fetch(name, path, args.rev, args.stage, args.repo, args.out)
            reg = card["lineage"]["registry"]
            print(
                f"fetched {reg['tag'] or reg['commit'][:8]} ({card['name']}, sha256 "
                f"{card['sha256'][:12]}) into {args.out}/ from {SOURCE_TEXT[reg['source']]}"
            )
        elif args.command == "show":
            print(gto("show", name))
        elif args.command == "base":
            print(base_revision(name, stage=args.stage))
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
