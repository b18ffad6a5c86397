"""The model registry in a temporary git repository with a local DVC remote: register, promote,
roll back, fetch the prod model elsewhere, and follow its lineage back to the tagged commit."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlproject.ops.registry import RegistryError, parse_tag
from mlproject.ops.release import smoke

from conftest import ENV, run
from tooling import free_port, recorded, write_recorder

pytestmark = pytest.mark.slow  # needs the pipeline_repo fixture (one `dvc repro`)

VENV = Path(sys.executable).parent.parent


def make(target: str, cwd: Path, *assignments: str, check: bool = True):
    """`make <target>` with this environment's venv, never reinstalling it."""
    return run(
        ["make", "-o", f"{VENV}/bin/.installed", f"VENV={VENV}", target, *assignments],
        cwd,
        check=check,
    )


def tag_commit(repo: Path, tag: str) -> str:
    return run(["git", "rev-list", "-n", "1", tag], repo).stdout.strip()


@pytest.fixture(scope="module")
def registry_repo(pipeline_repo, tmp_path_factory) -> Path:
    """A copy of the trained project, committed, with a local DVC remote holding its outputs."""
    root = tmp_path_factory.mktemp("registry")
    repo = root / "repo"
    shutil.copytree(pipeline_repo, repo, symlinks=True)
    run(["dvc", "remote", "add", "-d", "local", str(root / "dvc-remote")], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "--allow-empty", "-m", "trained model"], repo)
    run(["dvc", "push", "-q"], repo)
    return repo


def test_register_promote_fetch_and_roll_back(registry_repo, tmp_path):
    repo = registry_repo
    first = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    assert "registered classifier@v0.1.0" in make("register", repo).stdout
    assert tag_commit(repo, "classifier@v0.1.0") == first

    # A second version on a later commit; BUMP chooses which part of the version grows.
    (repo / "NOTES.md").write_text("second version\n")
    run(["git", "add", "NOTES.md"], repo)
    run(["git", "commit", "-q", "--allow-empty", "-m", "notes"], repo)
    second = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    make("register", repo, "BUMP=minor")
    assert tag_commit(repo, "classifier@v0.2.0") == second

    assert "classifier#prod#1" in make("promote", repo, "STAGE=prod", "VERSION=v0.1.0").stdout
    assert "classifier#prod#2" in make("promote", repo, "STAGE=prod").stdout  # the latest
    assert (
        run([sys.executable, "-m", "mlproject.ops.registry", "base"], repo).stdout.strip() == second
    )
    # Roll-back: promote the previous version again; the newest assignment wins.
    make("promote", repo, "STAGE=prod", "VERSION=v0.1.0")
    assert tag_commit(repo, "classifier#prod#3") == first
    shown = make("registry", repo).stdout
    assert "v0.2.0" in shown
    assert "v0.1.0" in shown

    # Fetch the prod model from the repository and its DVC remote into an unrelated folder.
    elsewhere = tmp_path / "deploy"
    elsewhere.mkdir()
    out = elsewhere / "model"
    result = run(
        [
            sys.executable,
            "-m",
            "mlproject.ops.registry",
            "fetch",
            "--stage",
            "prod",
            "--repo",
            str(repo),
            "--out",
            str(out),
        ],
        repo,
    )
    assert "classifier@v0.1.0" in result.stdout
    card = json.loads((out / "model_card.json").read_text())
    assert hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest() == card["sha256"]
    assert (out / "reference_profile.json").is_file()
    registry = card["lineage"]["registry"]
    assert registry["commit"] == tag_commit(repo, "classifier@v0.1.0") == first
    assert registry["version"] == "v0.1.0"
    assert registry["stage"] == "prod"
    assert registry["source"] == "remote"
    assert "from the DVC remote" in result.stdout
    # The registered commit holds the outputs: its committed card is the one fetched.
    committed = run(["git", "show", f"{first}:models/model_card.json"], repo).stdout
    assert json.loads(committed)["sha256"] == card["sha256"]

    # REV fetches a version by name through make; a bad request names the problem.
    make("fetch-model", repo, "REV=v0.2.0", f"MODEL_OUT={tmp_path / 'v2'}")
    card2 = json.loads((tmp_path / "v2" / "model_card.json").read_text())
    assert card2["lineage"]["registry"]["commit"] == second
    bad = make("fetch-model", repo, "REV=v9.9.9", f"MODEL_OUT={tmp_path / 'v9'}", check=False)
    assert bad.returncode != 0
    assert "v9.9.9" in bad.stderr
    assert not (tmp_path / "v9").exists()
    bad = make("promote", repo, "STAGE=", check=False)
    assert "STAGE must be" in bad.stderr


def test_register_refuses_a_commit_without_the_model(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(Path(__file__).parents[1] / "dvc.yaml", repo / "dvc.yaml")
    run(["git", "init", "-q", "-b", "main"], repo)
    run(["git", "add", "dvc.yaml"], repo)
    run(["git", "commit", "-q", "--allow-empty", "-m", "pipeline, not run"], repo)
    result = run([sys.executable, "-m", "mlproject.ops.registry", "register"], repo, check=False)
    assert result.returncode == 1
    assert "dvc.lock records no 'models/model.onnx'" in result.stderr
    assert run(["git", "tag"], repo).stdout == ""


def test_parse_tag_knows_the_gto_convention():
    with pytest.raises(RegistryError, match="not a registry tag"):
        parse_tag("release-1")
    assert parse_tag("classifier@v1.2.3!")["event"] == "deregister"
    assert parse_tag("classifier#prod!#4")["event"] == "unassign"


def test_release_steps_for_a_promotion_tag_and_smoke_test_of_a_server(registry_repo, tmp_path):
    """The release workflow's non-docker steps, run here; the smoke test against a real server
    started from the released model (docker build/push cannot run on this machine)."""
    repo = registry_repo
    if "classifier@v0.1.0" not in run(["git", "tag"], repo).stdout:
        make("register", repo)
    promoted = make("promote", repo, "STAGE=staging", "VERSION=v0.1.0").stdout
    tag = promoted.split("promoted: ")[1].split(";")[0]
    shims = tmp_path / "bin"
    write_recorder(shims, "gh", fail=["release", "view"])  # no release yet
    outputs = tmp_path / "github_output"
    env = {
        **ENV,
        "PATH": f"{shims}:{ENV['PATH']}",
        "RECORD_DIR": str(tmp_path / "record"),
        "TAG": tag,
        "GITHUB_OUTPUT": str(outputs),
        "GITHUB_REPOSITORY": "Acme/MLProject",
    }

    def step(target):
        return run(["make", target], repo, env=env)

    step("release-info")
    out = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    assert out["event"] == "assign"
    assert out["version"] == "v0.1.0"
    assert out["stage"] == "staging"
    assert out["deploy"] == "false"  # only prod deploys
    assert out["image"] == "ghcr.io/acme/mlproject"
    assert out["commit"] == tag_commit(repo, "classifier@v0.1.0")

    step("release-assets")
    dist = repo / "dist" / "release"
    names = sorted(p.name for p in dist.iterdir())
    assert names == [
        "RELEASE.md",
        "SHA256SUMS",
        "model.onnx",
        "model_card.json",
        "reference_profile.json",
    ]
    card = json.loads((dist / "model_card.json").read_text())
    assert card["lineage"]["registry"]["commit"] == out["commit"]
    sums = dict(
        reversed(line.split("  ")) for line in (dist / "SHA256SUMS").read_text().splitlines()
    )
    assert sums["model.onnx"] == card["sha256"]
    assert "Promoted to **staging**" in (dist / "RELEASE.md").read_text()

    step("release-publish")
    calls = [c["argv"] for c in recorded(tmp_path / "record", "gh")]
    create = next(c for c in calls if c[:2] == ["release", "create"])
    assert create[2] == "classifier@v0.1.0"
    assert "dist/release/model.onnx" in create
    assert "dist/release/model_card.json" in create
    assert "dist/release/reference_profile.json" in create

    # The image's smoke test, against the server run from the released files.
    port = free_port()
    server_env = {
        **ENV,
        "MODEL_PATH": str(dist / "model.onnx"),
        "MODEL_CARD": str(dist / "model_card.json"),
        "PORT": str(port),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "mlproject.serve"],
        cwd=tmp_path,
        env=server_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        result = smoke(f"http://127.0.0.1:{port}", card, wait_s=60)
    finally:
        server.terminate()
        server.wait(timeout=20)
    assert result["infer"]["shape"] == [1, len(card["classes"])]


# --- no DVC remote (the template's default): the local cache, then a rebuild -------------------


@pytest.fixture(scope="module")
def local_repo(pipeline_repo, tmp_path_factory) -> Path:
    """The trained project, committed, registered as v0.1.0 and in prod, with no DVC remote:
    its model is only in the repository's own DVC cache."""
    repo = tmp_path_factory.mktemp("local-registry") / "repo"
    shutil.copytree(pipeline_repo, repo, symlinks=True)
    shutil.rmtree(repo / ".dvc" / "tmp", ignore_errors=True)  # DVC's inode-keyed state
    # Short training, so that the rebuild below takes seconds, not minutes.
    for rel in ("params.yaml", "conf/config.yaml"):
        text = (repo / rel).read_text()
        (repo / rel).write_text(
            text.replace("epochs: 40", "epochs: 2").replace("T_max: 40", "T_max: 2")
        )
    run(["dvc", "repro", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "--allow-empty", "-m", "trained model"], repo)
    assert run(["dvc", "remote", "list"], repo).stdout.strip() == ""
    make("register", repo)
    make("promote", repo, "STAGE=prod")
    return repo


def model_blob(repo: Path) -> Path:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    (md5,) = [
        o["md5"]
        for stage in lock["stages"].values()
        for o in stage.get("outs", [])
        if o["path"] == "models/model.onnx"
    ]
    return repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def test_fetch_model_without_a_remote_uses_the_local_cache_then_a_rebuild(local_repo, tmp_path):
    repo = local_repo
    commit = tag_commit(repo, "classifier@v0.1.0")
    cached = make("fetch-model", repo, "STAGE=prod", f"MODEL_OUT={tmp_path / 'cached'}")
    assert "from the local DVC cache" in cached.stdout
    card = json.loads((tmp_path / "cached" / "model_card.json").read_text())
    assert card["lineage"]["registry"]["source"] == "cache"
    assert card["lineage"]["registry"]["commit"] == commit
    model = tmp_path / "cached" / "model.onnx"
    assert hashlib.sha256(model.read_bytes()).hexdigest() == card["sha256"]
    assert (tmp_path / "cached" / "reference_profile.json").is_file()

    # Not in the cache either (another machine, a cleaned cache): rebuilt at the tagged commit.
    blob = model_blob(repo)
    hidden = blob.with_name(blob.name + ".hidden")
    blob.rename(hidden)
    try:
        rebuilt = make("fetch-model", repo, "STAGE=prod", f"MODEL_OUT={tmp_path / 'rebuilt'}")
    finally:
        hidden.rename(blob)
    assert "from a rebuild at the commit" in rebuilt.stdout
    assert "not in the local DVC cache" in rebuilt.stderr
    card = json.loads((tmp_path / "rebuilt" / "model_card.json").read_text())
    assert card["lineage"]["registry"]["source"] == "rebuild"
    assert card["lineage"]["registry"]["commit"] == commit  # rebuilt from the tagged commit
    rebuilt_model = (tmp_path / "rebuilt" / "model.onnx").read_bytes()
    assert hashlib.sha256(rebuilt_model).hexdigest() == card["sha256"]
    assert run(["git", "status", "--porcelain"], repo).stdout == ""  # the repository untouched


def test_release_assets_without_a_remote_or_data_rebuilds_in_the_checkout(local_repo, tmp_path):
    repo = local_repo
    shutil.rmtree(repo / "data")  # a fresh CI checkout: data.dvc, but no data/
    blob = model_blob(repo)
    hidden = blob.with_name(blob.name + ".hidden")
    blob.rename(hidden)
    env = {**ENV, "TAG": "classifier@v0.1.0", "GITHUB_REPOSITORY": "acme/mlproject"}
    try:
        result = run(["make", "release-assets"], repo, env=env, check=False)
    finally:
        hidden.rename(blob)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "rebuilt at the tagged commit" in (repo / "dist/release/RELEASE.md").read_text()
    assert (repo / "data").is_dir()
    card = json.loads((repo / "dist/release/model_card.json").read_text())
    assert card["lineage"]["registry"]["rebuilt"] is True
