"""Kubernetes and KServe manifests: offline schema checks (kubernetes-validate, the rendered
Kustomize overlays, a derived schema for the InferenceService), the promises docs/deployment.md
makes about the Deployment, and the release's `kubectl apply -k` with a recording kubectl on PATH."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import stat
from pathlib import Path

import pytest
import yaml

from mlproject.ops import deploy

from conftest import ROOT, require_tool

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
  - name: test
    cluster: {server: "https://127.0.0.1:1"}
contexts:
  - name: test
    context: {cluster: test, user: test}
current-context: test
users:
  - name: test
    user: {token: not-a-secret}
"""


@pytest.fixture
def kubectl():
    return require_tool("kubectl", "https://kubernetes.io/docs/tasks/tools/")


@pytest.fixture
def in_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def copy_deploy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    return tmp_path


def rendered(stage: str) -> dict[str, dict]:
    return {d["kind"]: d for d in deploy.render(ROOT / deploy.K8S / "overlays" / stage)}


def test_manifests_validate_offline(kubectl):
    assert deploy.validate(ROOT) == []


@pytest.mark.parametrize(
    ("file", "edit", "words"),
    [
        (
            "k8s/base/deployment.yaml",
            lambda d: d["spec"]["template"]["spec"]["containers"][0].update(
                readinessprobe={"httpGet": {"path": "/"}}
            ),
            ["deployment.yaml", "readinessprobe"],
        ),
        (
            "k8s/base/hpa.yaml",
            lambda d: d["spec"].update(minReplicas="two"),
            ["hpa.yaml", "minReplicas"],
        ),
        (
            "kserve/inferenceservice.yaml",
            lambda d: d["spec"]["predictor"]["containers"][0]["env"].pop(2),
            ["inferenceservice.yaml", "PROTOCOL"],
        ),
        (
            "kserve/inferenceservice.yaml",
            lambda d: d["spec"]["predictor"]["containers"][0]["ports"][0].update(
                containerPort="8000"
            ),
            ["inferenceservice.yaml", "containerPort"],
        ),
    ],
)
def test_validation_names_the_file_and_field_of_a_mistake(kubectl, tmp_path, file, edit, words):
    root = copy_deploy(tmp_path)
    path = root / "deploy" / file
    document = yaml.safe_load(path.read_text())
    edit(document)
    path.write_text(yaml.safe_dump(document))
    problems = "\n".join(deploy.validate(root))
    assert problems, f"a broken {file} passed validation"
    for word in words:
        assert word in problems, problems


def test_overlay_that_drops_security_settings_is_caught(kubectl, tmp_path):
    root = copy_deploy(tmp_path)
    path = root / "deploy/k8s/overlays/prod/kustomization.yaml"
    path.write_text(
        path.read_text() + "patches:\n  - target: {kind: Deployment, name: mlserve}\n    patch: |\n"
        "      - op: remove\n"
        "        path: /spec/template/spec/containers/0/securityContext/readOnlyRootFilesystem\n"
    )
    problems = deploy.validate(root)
    assert any("overlays/prod" in p and "read-only root" in p for p in problems), problems


def test_overlays_set_namespace_and_stage_image_tag(kubectl):
    for stage in deploy.STAGES:
        docs = rendered(stage)
        assert {d["metadata"].get("namespace") for k, d in docs.items() if k != "Namespace"} == {
            f"mlserve-{stage}"
        }
        image = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image.endswith(f":{stage}")
    assert rendered("staging")["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] == 3
    assert rendered("prod")["PodDisruptionBudget"]["spec"]["minAvailable"] == 1


def test_deployment_matches_the_server(kubectl):
    """Probes, shutdown and volumes agree with src/mlproject/serve (settings and timeouts)."""
    from mlproject.serve.settings import ENV

    pod = rendered("prod")["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert set(env) <= {var for var, _ in ENV.values()}, "an env var the server does not read"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert env["PREDICTION_LOG"] in mounts and "/tmp" in mounts
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    # The grace period covers preStop + uvicorn's graceful shutdown + the log writer's drain.
    main = (ROOT / "src/mlproject/serve/__main__.py").read_text()
    uvicorn_grace = int(re.search(r"timeout_graceful_shutdown=(\d+)", main).group(1))
    predlog = (ROOT / "src/mlproject/serve/predlog/queue.py").read_text()
    drain = float(re.search(r"def close\(self, timeout: float = ([\d.]+)\)", predlog).group(1))
    pre_stop = 5  # the preStop sleep
    assert "time.sleep(5)" in " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + uvicorn_grace + drain
    limits = container["resources"]["limits"]["memory"]
    assert int(limits.removesuffix("Mi")) >= 2 * 100, "limit below twice the measured RSS"


def write_recorder(bin_dir: Path, record: Path, real: str) -> None:
    """A kubectl that records each call (args, KUBECONFIG's text, the kustomization) and hands
    `kustomize` to the real one, so rendering is real and nothing reaches a cluster."""
    bin_dir.mkdir()
    script = bin_dir / "kubectl"
    script.write_text(
        f"""#!/usr/bin/env python3
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
if args[:1] == ["kustomize"]:
    os.execv({real!r}, [{real!r}, *args])
entry = {{"args": args, "kubeconfig": Path(os.environ["KUBECONFIG"]).read_text()}}
if args[:2] == ["apply", "-k"]:
    entry["kustomization"] = (Path(args[2]) / "kustomization.yaml").read_text()
    entry["rendered"] = os.popen({real!r} + " kustomize " + args[2]).read()
with open({str(record)!r}, "a") as fh:
    fh.write(json.dumps(entry) + "\\n")
"""
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize("encode", [False, True])
def test_apply_pins_the_image_and_waits_for_the_rollout(
    kubectl, in_root, tmp_path, monkeypatch, encode
):
    record = tmp_path / "calls.jsonl"
    write_recorder(tmp_path / "bin", record, kubectl)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    value = base64.b64encode(KUBECONFIG.encode()).decode() if encode else KUBECONFIG
    deploy.apply("prod", "ghcr.io/acme/digits:v1.4.0", env={**os.environ, "KUBE_CONFIG": value})
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert [c["args"][:2] for c in calls] == [["apply", "-k"], ["rollout", "status"]]
    assert calls[1]["args"][2:] == ["deployment/mlserve", "--timeout=300s", "-n", "mlserve-prod"]
    assert all(c["kubeconfig"].strip() == KUBECONFIG.strip() for c in calls)
    docs = {d["kind"]: d for d in yaml.safe_load_all(calls[0]["rendered"]) if d}
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/acme/digits:v1.4.0"
    assert docs["Deployment"]["metadata"]["namespace"] == "mlserve-prod"


@pytest.mark.parametrize(
    ("env", "image", "words"),
    [
        ({}, "ghcr.io/a/b:v1", "KUBE_CONFIG is not set"),
        ({"KUBE_CONFIG": "%%%"}, "ghcr.io/a/b:v1", "KUBE_CONFIG: neither"),
        ({"KUBE_CONFIG": "apiVersion: v1\nkind: Config\n"}, "ghcr.io/a/b:v1", "no `clusters:`"),
        ({"KUBE_CONFIG": KUBECONFIG}, "ghcr.io/a/b", "expected name:tag"),
    ],
)
def test_apply_refuses_bad_settings_before_calling_kubectl(kubectl, in_root, env, image, words):
    with pytest.raises(deploy.DeployError, match=re.escape(words)):
        deploy.apply("prod", image, env=env)


def test_unknown_stage_lists_the_known_ones(in_root):
    with pytest.raises(deploy.DeployError, match="stages: prod, staging"):
        deploy.overlay("qa")


def test_release_deploy_applies_the_overlay_instead_of_the_webhook(
    kubectl, in_root, tmp_path, monkeypatch
):
    """`make release-deploy` with KUBE_CONFIG: docker moves :prod, kubectl applies the prod
    overlay with the version's image, and the webhook (a dead port here) is not called."""
    from mlproject.ops import release

    from tooling import free_port

    record = tmp_path / "calls.jsonl"
    write_recorder(tmp_path / "bin", record, kubectl)
    docker = tmp_path / "bin/docker"
    docker.write_text(f'#!/bin/sh\necho "docker $*" >> {tmp_path / "docker.txt"}\n')
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("KUBE_CONFIG", KUBECONFIG)
    monkeypatch.setenv("DEPLOY_WEBHOOK_URL", f"http://127.0.0.1:{free_port()}/hook")
    meta = {"deploy": True, "image": "ghcr.io/acme/digits", "version": "v1.4.0", "commit": "c"}
    monkeypatch.setattr(release, "info", lambda tag: meta)  # the tag's meaning: test_registry
    release.deploy("classifier#prod#3")
    assert (tmp_path / "docker.txt").read_text().splitlines() == [
        "docker tag ghcr.io/acme/digits:v1.4.0 ghcr.io/acme/digits:prod",
        "docker push ghcr.io/acme/digits:prod",
    ]
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert calls[0]["args"][:2] == ["apply", "-k"]
    assert "image: ghcr.io/acme/digits:v1.4.0" in calls[0]["rendered"]
