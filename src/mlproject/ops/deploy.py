"""Operating the served model: Kubernetes manifests, their offline checks, the release deploy,
and the alert rules' reference shares.

    python -m mlproject.ops.deploy validate            schema-check deploy/k8s (base and rendered
                                                   overlays) and deploy/kserve, offline
    python -m mlproject.ops.deploy render STAGE        print the overlay STAGE as kubectl applies it
    python -m mlproject.ops.deploy apply STAGE IMAGE   kubectl apply the overlay with the image pinned
                                                   (KUBE_CONFIG: the kubeconfig's text or base64)
    python -m mlproject.ops.deploy reference-rules [--check]
                                                   deploy/prometheus/reference.rules.yml from
                                                   models/reference_profile.json

Kustomize is rendered by `kubectl kustomize` (kubectl ships kustomize; GitHub's runners have it).
Core kinds are checked by kubernetes-validate against the Kubernetes version below; the KServe
InferenceService, a custom resource, against a small JSON schema derived from KServe's Go types
(deploy/kserve/inferenceservice.schema.json), since kubernetes-validate knows no CRDs.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from ..core.cli import entry_point, subcommands
from ..core.errors import ProjectError
from ..core.paths import REFERENCE_PROFILE
from ..core.proc import run

# The reference rules are written by the `profile` stage (monitor/alert_rules.py); `make lint`
# checks them, `make alerts-reference` rewrites them.
from ..monitor.alert_rules import REFERENCE_RULES, reference_rules

K8S = Path("deploy/k8s")
KSERVE = Path("deploy/kserve")
PROMETHEUS = Path("deploy/prometheus")
PROFILE = REFERENCE_PROFILE
STAGES = ("staging", "prod")
# The image name the base Deployment uses; overlays and `apply` replace it.
BASE_IMAGE = "mlproject-serve"
KUBERNETES_VERSION = "1.32"
DEPLOYMENT = "mlserve"


class DeployError(ProjectError, RuntimeError):
    """A manifest or deploy setting is wrong; the message names the file or variable."""


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        raise DeployError(
            "kubectl is not on PATH: it renders the Kustomize overlays "
            "(https://kubernetes.io/docs/tasks/tools/; in CI, Azure/setup-kubectl)."
        )
    return path


def overlay(stage: str, root: Path = Path(".")) -> Path:
    path = root / K8S / "overlays" / stage
    if not (path / "kustomization.yaml").is_file():
        known = sorted(p.name for p in (root / K8S / "overlays").glob("*") if p.is_dir())
        raise DeployError(f"{path}: no kustomization.yaml; stages: {', '.join(known)}")
    return path


def render(path: Path) -> list[dict]:
    """The documents `kubectl apply -k path` would send."""
    proc = run([kubectl(), "kustomize", str(path)], check=False)
    if proc.returncode != 0:
        raise DeployError(f"kubectl kustomize {path}: {proc.stderr.strip()}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _load_documents(path: Path) -> list[dict]:
    try:
        return [d for d in yaml.safe_load_all(path.read_text()) if d]
    except yaml.YAMLError as exc:
        raise DeployError(f"{path}: not valid YAML: {exc}") from None


def _check_core(document: dict, where: str) -> list[str]:
    import kubernetes_validate
    from kubernetes_validate.utils import ValidationError

    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except ValidationError as exc:
        path = "/".join(str(p) for p in exc.path)
        return [f"{where}: {document.get('kind')} {path}: {exc.message}"]
    return []


def _check_kserve(document: dict, where: str, root: Path) -> list[str]:
    import jsonschema

    schema = json.loads((root / KSERVE / "inferenceservice.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for error in validator.iter_errors(document):
        path = "/".join(str(p) for p in error.path)
        why = (
            error.schema.get("description", error.message)
            if error.validator == "contains"
            else error.message
        )
        problems.append(f"{where}: InferenceService {path}: {why}")
    # The pod part of a custom predictor is a core PodSpec: check it with Kubernetes' schema.
    predictor = document.get("spec", {}).get("predictor", {})
    pod_spec = {
        k: v for k, v in predictor.items() if k in ("containers", "volumes", "securityContext")
    }
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": pod_spec}
    problems += _check_core(pod, f"{where} (spec.predictor as a PodSpec)")
    return problems


def _check_rendered(documents: list[dict], where: str) -> list[str]:
    """What a schema cannot say: the things docs/deployment.md promises about the Deployment."""
    problems = []
    kinds = {d.get("kind") for d in documents}
    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        if kind not in kinds:
            problems.append(f"{where}: no {kind}")
    for d in documents:
        if d.get("kind") != "Deployment":
            continue
        pod = d["spec"]["template"]["spec"]
        for c in pod["containers"]:
            sc = c.get("securityContext", {})
            if not (
                pod.get("securityContext", {}).get("runAsNonRoot")
                and sc.get("readOnlyRootFilesystem")
            ):
                problems.append(f"{where}: container {c['name']} must run non-root, read-only root")
            if c["image"].split(":")[0] == BASE_IMAGE:
                problems.append(f"{where}: container {c['name']} keeps the base image name")
    return problems


def validate(root: Path = Path(".")) -> list[str]:
    """Every problem found in deploy/k8s and deploy/kserve (empty: all valid)."""
    problems: list[str] = []
    for path in sorted((root / K8S).rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in _load_documents(path):
            problems += _check_core(document, str(path.relative_to(root)))
    for stage_dir in sorted((root / K8S / "overlays").glob("*")):
        where = f"kubectl kustomize {stage_dir.relative_to(root)}"
        documents = render(stage_dir)
        for document in documents:
            problems += _check_core(document, where)
        problems += _check_rendered(documents, where)
    for path in sorted((root / KSERVE).glob("*.yaml")):
        for document in _load_documents(path):
            problems += _check_kserve(document, str(path.relative_to(root)), root)
    return problems


# --- the release deploy ------------------------------------------------------------------------


def kubeconfig_text(value: str) -> str:
    """KUBE_CONFIG holds the kubeconfig itself or its base64 (what `base64 -w0` gives)."""
    text = value.strip()
    if not text.startswith(("apiVersion", "{", "clusters", "kind", "---")):
        try:
            text = base64.b64decode(text, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise DeployError("KUBE_CONFIG: neither a kubeconfig nor its base64") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError:
        config = None
    if not isinstance(config, dict) or "clusters" not in config:
        raise DeployError("KUBE_CONFIG: not a kubeconfig (no `clusters:`)")
    return text


def pinned_kustomization(stage_dir: Path, image: str, work: Path) -> str:
    """A kustomization that applies the overlay with its image replaced by `image`
    (name:tag): a new tag per version rolls the pods, a moving tag would not."""
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        raise DeployError(f"image {image!r}: expected name:tag (e.g. ghcr.io/org/repo:v1.2.0)")
    return yaml.safe_dump(
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            # Kustomize takes no absolute roots: the overlay, relative to `work`.
            "resources": [os.path.relpath(stage_dir.resolve(), work.resolve())],
            # Matched by the name the overlay gives the image, not the base's.
            "images": [{"name": _image_name(render(stage_dir)), "newName": name, "newTag": tag}],
        },
        sort_keys=False,
    )


def _image_name(documents: list[dict]) -> str:
    for d in documents:
        if d.get("kind") == "Deployment":
            image = d["spec"]["template"]["spec"]["containers"][0]["image"]
            return image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    raise DeployError("the overlay renders no Deployment")


def _namespace(documents: list[dict]) -> str | None:
    for d in documents:
        if d.get("kind") == "Deployment":
            return d["metadata"].get("namespace")
    return None


def apply(stage: str, image: str, env: dict[str, str] | None = None, wait: str = "300s") -> None:
    """`kubectl apply -k` the stage's overlay with the image pinned, then wait for the rollout.
    The kubeconfig comes from KUBE_CONFIG, written to a private temporary file."""
    env = dict(os.environ if env is None else env)
    if not env.get("KUBE_CONFIG"):
        raise DeployError("KUBE_CONFIG is not set: the kubeconfig (text or base64) to deploy with")
    config = kubeconfig_text(env["KUBE_CONFIG"])
    source = overlay(stage)
    with tempfile.TemporaryDirectory(prefix="mlserve-deploy-") as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        kubeconfig.touch(mode=0o600)
        kubeconfig.write_text(config)
        work = Path(tmp) / "kustomization"
        work.mkdir()
        (work / "kustomization.yaml").write_text(pinned_kustomization(source, image, work))
        namespace = _namespace(render(work))
        env["KUBECONFIG"] = str(kubeconfig)
        commands = [
            [kubectl(), "apply", "-k", str(work)],
            [kubectl(), "rollout", "status", f"deployment/{DEPLOYMENT}", f"--timeout={wait}"]
            + (["-n", namespace] if namespace else []),
        ]
        for args in commands:
            code = run(args, env=env, echo=True, capture=False, check=False).returncode
            if code != 0:
                raise DeployError(f"`{' '.join(args[1:3])}` exited {code}")
    print(f"deploy: {stage} runs {image}")


# --- alert rules -------------------------------------------------------------------------------


def write_reference_rules(root: Path = Path("."), check: bool = False) -> int:
    """Write (or with check, compare) the reference rules of the profile in `root`. The
    `profile` stage writes them with every new model; this is `make alerts-reference`."""
    from ..core.io import atomic_write_text

    profile_path = root / PROFILE
    if not profile_path.is_file():
        raise DeployError(f"{profile_path}: missing; run `make repro` (the profile stage) first")
    text = reference_rules(json.loads(profile_path.read_text()))
    target = root / REFERENCE_RULES
    if check:
        if not target.is_file() or target.read_text() != text:
            print(
                f"{target}: out of date with {PROFILE}; run `make repro` (or make alerts-reference)"
            )
            return 1
        print(f"{target}: up to date")
        return 0
    atomic_write_text(target, text)
    print(f"wrote {target}")
    return 0


@entry_point(error_code=2)  # exit 1 means "validate found problems"
def main(argv: list[str] | None = None) -> int:
    parser, add = subcommands("python -m mlproject.ops.deploy", __doc__)
    add("validate", "schema-check deploy/k8s and deploy/kserve, offline")
    add("render", "print the overlay STAGE as kubectl applies it").add_argument("stage")
    apply_ = add("apply", "kubectl apply the overlay STAGE with IMAGE pinned")
    apply_.add_argument("stage")
    apply_.add_argument("image")
    rules = add("reference-rules", "deploy/prometheus/reference.rules.yml from the profile")
    rules.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    if args.command == "validate":
        problems = validate()
        for p in problems:
            print(p, file=sys.stderr)
        print(f"deploy manifests: {len(problems)} problem(s)")
        return 1 if problems else 0
    if args.command == "render":
        print(yaml.safe_dump_all(render(overlay(args.stage)), sort_keys=False), end="")
        return 0
    if args.command == "apply":
        apply(args.stage, args.image)
        return 0
    return write_reference_rules(check=args.check)


if __name__ == "__main__":
    raise SystemExit(main())
