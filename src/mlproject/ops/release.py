"""The release workflow's steps (.github/workflows/release.yml), runnable here.

    python -m mlproject.ops.release info      what the registry tag in $TAG releases (-> $GITHUB_OUTPUT)
    python -m mlproject.ops.release assets    model, card, profile, notes, checksums -> dist/release/
                                          (DVC remote, else local DVC cache, else rebuilt at the commit)
    python -m mlproject.ops.release publish   create or update the GitHub release of the version (gh)
    python -m mlproject.ops.release image     docker build the serving image with that model
    python -m mlproject.ops.release smoke     run the image: health, one OIP inference, one /predict
    python -m mlproject.ops.release push      docker push the image (ghcr.io/<owner>/<repo>:<version>)
    python -m mlproject.ops.release pull      docker pull it (the deploy job)
    python -m mlproject.ops.release deploy    promotion to prod: tag the image :prod and push it,
                                          then `kubectl apply -k` deploy/k8s/overlays/prod when
                                          $KUBE_CONFIG is set, else call $DEPLOY_WEBHOOK_URL

A release is per version (`classifier@v1.2.0`); a promotion (`classifier#prod#3`) updates that
version's release and, for prod, deploys. Roll-back = `make promote STAGE=prod VERSION=<previous>`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from ..core.cli import entry_point, subcommands
from ..core.errors import ProjectError
from ..core.io import atomic_write_text, read_json, write_json
from ..core.lineage import file_sha256 as sha256
from ..core.paths import MODELS
from ..core.proc import git, run
from . import registry
from .smoke import SmokeError, http, smoke

DIST = Path("dist/release")
DEPLOY_STAGE = "prod"
CONTAINER_PORT = 8000


class ReleaseError(ProjectError, RuntimeError):
    """A release step cannot go on; the message says why."""


def _run(args: list[str], check: bool = True, capture: bool = False):
    """A release step's command, echoed as `+ <command>` with its output in the job's log."""
    return run(args, check=check, capture=capture, echo=True)


def tag_from_env() -> str:
    tag = os.environ.get("TAG") or os.environ.get("GITHUB_REF_NAME") or ""
    if not tag:
        raise ReleaseError("TAG is not set: the registry tag to release, e.g. classifier@v1.2.0.")
    return tag


def image_name(env: dict[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    if env.get("RELEASE_IMAGE"):
        return env["RELEASE_IMAGE"]
    repo = env.get("GITHUB_REPOSITORY") or Path.cwd().name
    return f"ghcr.io/{repo.lower()}"  # registries want lower-case names


def info(tag: str) -> dict[str, Any]:
    """The tag's meaning: which version and commit, whether to release and whether to deploy."""
    parsed = registry.parse_tag(tag)
    releasable = parsed["event"] in ("register", "assign")
    result = {
        **parsed,
        "release": releasable,
        "deploy": releasable and parsed["event"] == "assign" and parsed["stage"] == DEPLOY_STAGE,
        "version_tag": f"{parsed['artifact']}@{parsed['version']}" if parsed["version"] else None,
        "image": image_name(),
    }
    out = os.environ.get("GITHUB_OUTPUT")
    if out:
        with open(out, "a", encoding="utf-8") as fh:
            for key in ("event", "version", "stage", "commit", "image"):
                fh.write(f"{key}={result[key] or ''}\n")
            fh.write(f"release={str(result['release']).lower()}\n")
            fh.write(f"deploy={str(result['deploy']).lower()}\n")
    return result


def rebuild(meta: dict[str, Any], model_path: str, out: Path) -> None:
    """No remote copy: rebuild the model at the tagged commit (the checkout must be there)."""
    head = git("rev-parse", "HEAD")
    if head != meta["commit"]:
        raise ReleaseError(
            f"the checkout is at {head[:8]}, not at {meta['tag']}'s commit "
            f"{meta['commit'][:8]}; check out the tag to rebuild its model."
        )
    # Without a remote the data is not in the checkout either: make it present first.
    _run([sys.executable, "-m", "mlproject.pipeline.data"])
    _run([sys.executable, "-m", "dvc", "repro"])
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(model_path, out / Path(model_path).name)
    for name in registry.COMPANIONS:
        source = Path(model_path).parent / name
        if source.is_file():
            shutil.copy2(source, out / name)
    card = read_json(out / "model_card.json")
    card.setdefault("lineage", {})["registry"] = {
        "artifact": meta["artifact"],
        "version": meta["version"],
        "stage": meta["stage"],
        "tag": meta["version_tag"],
        "commit": meta["commit"],
        "repo": ".",
        "rebuilt": True,
    }
    write_json(out / "model_card.json", card)


def release_notes(meta: dict[str, Any], card: dict[str, Any]) -> str:
    test = (card.get("metrics") or {}).get("test") or {}
    data = (card.get("lineage") or {}).get("data") or {}
    lines = [f"## {meta['artifact']} {meta['version']}", ""]
    if meta["event"] == "assign":
        lines += [f"Promoted to **{meta['stage']}** by `{meta['tag']}`.", ""]
    lines += [
        f"- Commit: `{meta['commit']}`",
        f"- Model: `{card.get('name')}` ({card.get('format')}, {card.get('size_bytes')} bytes, "
        f"sha256 `{card.get('sha256')}`)",
        f"- Data: `{data.get('md5')}` ({data.get('nfiles')} files)",
        f"- Serving image: `{meta['image']}:{meta['version']}`",
        "",
        "| test metric | value |",
        "|---|---:|",
        *[
            f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
            for k, v in test.items()
        ],
        "",
        "Assets: `model.onnx`, `model_card.json` (lineage, input spec, classes), "
        "`reference_profile.json` (what monitoring compares production data with), `SHA256SUMS`.",
        "",
    ]
    return "\n".join(lines)


def assets(tag: str, out: Path = DIST) -> dict[str, Any]:
    meta = info(tag)
    if not meta["release"]:
        raise ReleaseError(f"{tag}: a {meta['event']} tag; nothing to release.")
    from .fetch import SOURCE_TEXT, fetch

    name, model_path = registry.artifact(name=meta["artifact"])
    if out.exists():
        shutil.rmtree(out)
    try:
        # The checkout is at the tag: a rebuild happens here, in place (below), not in a clone.
        card = fetch(name, model_path, rev=meta["version"], out=out, sources=("remote", "cache"))
        source = f"fetched from {SOURCE_TEXT[card['lineage']['registry']['source']]}"
    except ProjectError as exc:  # no source has it, or a command failed
        print(f"release: cannot fetch ({exc}); rebuilding at {meta['commit'][:8]}", flush=True)
        rebuild(meta, model_path, out)
        source = "rebuilt at the tagged commit"
    card = read_json(out / "model_card.json")
    if sha256(out / Path(model_path).name) != card["sha256"]:
        raise ReleaseError(f"{out}: the model's sha256 differs from its card's.")
    atomic_write_text(out / "RELEASE.md", release_notes(meta, card) + f"\nModel {source}.\n")
    files = sorted(p for p in out.iterdir() if p.is_file() and p.name != "SHA256SUMS")
    atomic_write_text(out / "SHA256SUMS", "".join(f"{sha256(p)}  {p.name}\n" for p in files))
    # The image is built from the checkout: put the released model where the server looks.
    MODELS.mkdir(exist_ok=True)
    shutil.copy2(out / Path(model_path).name, Path(model_path))
    shutil.copy2(out / "model_card.json", MODELS / "model_card.json")
    if (out / "reference_profile.json").is_file():  # a regression model's histogram buckets
        shutil.copy2(out / "reference_profile.json", MODELS / "reference_profile.json")
    print(f"release: {out}/ ({', '.join(p.name for p in sorted(out.iterdir()))}); model {source}")
    return meta


def publish(tag: str, out: Path = DIST) -> None:
    meta = info(tag)
    if not (out / "RELEASE.md").is_file():
        raise ReleaseError(f"{out}/RELEASE.md: no assets; run `make release-assets` first.")
    files = [str(p) for p in sorted(out.iterdir()) if p.is_file() and p.name != "RELEASE.md"]
    vtag = meta["version_tag"]
    exists = run(["gh", "release", "view", vtag], check=False).returncode == 0
    if exists:
        _run(["gh", "release", "upload", vtag, *files, "--clobber"])
        _run(["gh", "release", "edit", vtag, "--notes-file", str(out / "RELEASE.md")])
    else:
        _run(
            [
                "gh",
                "release",
                "create",
                vtag,
                *files,
                "--title",
                f"{meta['artifact']} {meta['version']}",
                "--notes-file",
                str(out / "RELEASE.md"),
                "--verify-tag",
            ]
        )


def docker_image(tag: str) -> None:
    meta = info(tag)
    _run(
        [
            "docker",
            "build",
            "-t",
            f"{meta['image']}:{meta['version']}",
            "-t",
            f"{meta['image']}:{meta['commit'][:12]}",
            ".",
        ]
    )


def docker_smoke(tag: str) -> None:
    meta = info(tag)
    image = f"{meta['image']}:{meta['version']}"
    name = f"smoke-{meta['commit'][:12]}"
    _run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            name,
            "-e",
            "HOST=0.0.0.0",
            "-e",
            f"PORT={CONTAINER_PORT}",
            "-p",
            f"127.0.0.1::{CONTAINER_PORT}",
            image,
        ]
    )
    try:
        port = _run(["docker", "port", name, str(CONTAINER_PORT)], capture=True).stdout
        host_port = port.strip().splitlines()[0].rsplit(":", 1)[-1]
        smoke(f"http://127.0.0.1:{host_port}", read_json(DIST / "model_card.json"))
    except SmokeError:
        _run(["docker", "logs", name], check=False)
        raise
    finally:
        _run(["docker", "rm", "-f", name], check=False)


def docker_push(tag: str) -> None:
    meta = info(tag)
    for ref in (meta["version"], meta["commit"][:12]):
        _run(["docker", "push", f"{meta['image']}:{ref}"])


def docker_pull(tag: str) -> None:
    meta = info(tag)
    _run(["docker", "pull", f"{meta['image']}:{meta['version']}"])


def deploy(tag: str) -> None:
    meta = info(tag)
    if not meta["deploy"]:
        print(f"deploy: {tag} is not a promotion to {DEPLOY_STAGE}; nothing to deploy.")
        return
    source, target = f"{meta['image']}:{meta['version']}", f"{meta['image']}:{DEPLOY_STAGE}"
    _run(["docker", "tag", source, target])
    _run(["docker", "push", target])
    hook = os.environ.get("DEPLOY_WEBHOOK_URL")
    if os.environ.get("KUBE_CONFIG"):  # a cluster: apply deploy/k8s/overlays/prod, image pinned
        from .deploy import DeployError, apply

        try:
            apply(DEPLOY_STAGE, source)
        except DeployError as exc:
            raise ReleaseError(f"kubectl deploy: {exc}") from None
        hook = None
    if hook:
        body = json.dumps(
            {
                "image": source,
                "stage": DEPLOY_STAGE,
                "version": meta["version"],
                "tag": tag,
                "commit": meta["commit"],
            }
        ).encode()
        status, answer = http("POST", hook, body, {"Content-Type": "application/json"}, 30)
        if status >= 300:
            raise ReleaseError(f"DEPLOY_WEBHOOK_URL answered HTTP {status}: {answer[:200]!r}")
    print(f"deploy: {target} -> {meta['version']}" + (" (webhook called)" if hook else ""))


HELP = {
    "info": "what the registry tag in $TAG releases (-> $GITHUB_OUTPUT)",
    "assets": "model, card, profile, notes, checksums -> dist/release/",
    "publish": "create or update the GitHub release of the version (gh)",
    "image": "docker build the serving image with that model",
    "smoke": "run the image: health, one OIP inference, one /predict",
    "push": "docker push the image",
    "pull": "docker pull it (the deploy job)",
    "deploy": "promotion to prod: tag the image :prod, push it, apply or call the webhook",
}
COMMANDS = {
    "info": lambda t: print(json.dumps(info(t), indent=2)),
    "assets": assets,
    "publish": publish,
    "image": docker_image,
    "smoke": docker_smoke,
    "push": docker_push,
    "pull": docker_pull,
    "deploy": deploy,
}


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser, add = subcommands("python -m mlproject.ops.release", __doc__)
    for name in COMMANDS:
        add(name, HELP[name])
    COMMANDS[parser.parse_args(argv).command](tag_from_env())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
