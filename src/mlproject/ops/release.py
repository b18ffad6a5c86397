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

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ..core.io import atomic_write_text, read_json, write_json
from . import registry

DIST = Path("dist/release")
MODELS = Path("models")
DEPLOY_STAGE = "prod"
CONTAINER_PORT = 8000


class ReleaseError(RuntimeError):
    """A release step cannot go on; the message says why."""


def _run(args: list[str], check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    print("+ " + " ".join(args), flush=True)
    proc = subprocess.run(args, capture_output=capture, text=True)
    if check and proc.returncode != 0:
        detail = (proc.stderr or "").strip().splitlines()[-1:] if capture else []
        raise ReleaseError(f"`{' '.join(args[:3])} ...` exited {proc.returncode} {detail}")
    return proc


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


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rebuild(meta: dict[str, Any], model_path: str, out: Path) -> None:
    """No remote copy: rebuild the model at the tagged commit (the checkout must be there)."""
    head = registry.git("rev-parse", "HEAD")
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
    name, model_path = registry.artifact(name=meta["artifact"])
    if out.exists():
        shutil.rmtree(out)
    try:
        # The checkout is at the tag: a rebuild happens here, in place (below), not in a clone.
        card = registry.fetch(
            name, model_path, rev=meta["version"], out=out, sources=("remote", "cache")
        )
        source = f"fetched from {registry.SOURCE_TEXT[card['lineage']['registry']['source']]}"
    except registry.RegistryError as exc:
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
    print(f"release: {out}/ ({', '.join(p.name for p in sorted(out.iterdir()))}); model {source}")
    return meta


def publish(tag: str, out: Path = DIST) -> None:
    meta = info(tag)
    if not (out / "RELEASE.md").is_file():
        raise ReleaseError(f"{out}/RELEASE.md: no assets; run `make release-assets` first.")
    files = [str(p) for p in sorted(out.iterdir()) if p.is_file() and p.name != "RELEASE.md"]
    vtag = meta["version_tag"]
    exists = subprocess.run(["gh", "release", "view", vtag], capture_output=True).returncode == 0
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


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict | None = None,
    timeout: float = 10,
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def png(height: int, width: int, channels: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new({1: "L", 3: "RGB"}[channels], (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def smoke(base_url: str, card: dict[str, Any], wait_s: float = 60) -> dict[str, Any]:
    """Health, one Open Inference Protocol inference and one /predict against a running server."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if http("GET", f"{base_url}/v2/health/ready", timeout=2)[0] == 200:
                break
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise ReleaseError(f"{base_url}/v2/health/ready: not ready after {wait_s:.0f} s.")
        time.sleep(0.5)
    spec, classes = card["input"], card["classes"]
    shape = [1, spec["channels"], spec["height"], spec["width"]]
    payload = {
        "inputs": [
            {
                "name": spec["name"],
                "shape": shape,
                "datatype": "FP32",
                "data": [0.0] * (shape[1] * shape[2] * shape[3]),
            }
        ]
    }
    status, body = http(
        "POST",
        f"{base_url}/v2/models/{card['name']}/infer",
        json.dumps(payload).encode(),
        {"Content-Type": "application/json"},
    )
    if status != 200:
        raise ReleaseError(f"infer: HTTP {status}: {body[:300]!r}")
    outputs = json.loads(body)["outputs"]
    logits = next((o for o in outputs if o["name"] == card["output"]["name"]), outputs[0])
    if logits["shape"] != [1, len(classes)]:
        raise ReleaseError(f"infer: output shape {logits['shape']}, expected [1, {len(classes)}]")
    boundary = "mlprojectsmoke"
    form = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
        f'filename="blank.png"\r\nContent-Type: image/png\r\n\r\n'
    ).encode()
    form += (
        png(spec["height"], spec["width"], spec["channels"]) + f"\r\n--{boundary}--\r\n".encode()
    )
    status, body = http(
        "POST",
        f"{base_url}/predict",
        form,
        {"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    if status != 200:
        raise ReleaseError(f"predict: HTTP {status}: {body[:300]!r}")
    text = body.decode()
    if not any(f'"{c}"' in text for c in classes):
        raise ReleaseError(f"predict: no class name of the card in the answer: {text[:300]}")
    print(f"smoke: {base_url} ready; infer -> {logits['shape']}; predict -> {text[:120]}")
    return {"infer": logits, "predict": json.loads(text)}


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
    except ReleaseError:
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


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        print(__doc__)
        return 2
    try:
        COMMANDS[args[0]](tag_from_env())
    except (ReleaseError, registry.RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
