"""The model registry in a temporary git repository with a local DVC remote: register, promote,
roll back, fetch the prod model elsewhere, and follow its lineage back to the tagged commit."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest

from mlproject.registry import RegistryError, parse_tag

from conftest import run

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
    run(["git", "commit", "-q", "-m", "trained model"], repo)
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
    run(["git", "commit", "-q", "-m", "notes"], repo)
    second = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    make("register", repo, "BUMP=minor")
    assert tag_commit(repo, "classifier@v0.2.0") == second

    assert "classifier#prod#1" in make("promote", repo, "STAGE=prod", "VERSION=v0.1.0").stdout
    assert "classifier#prod#2" in make("promote", repo, "STAGE=prod").stdout  # the latest
    assert run([sys.executable, "-m", "mlproject.registry", "base"], repo).stdout.strip() == second
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
            "mlproject.registry",
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
    # The pipeline ran on the card's commit; the registered commit holds its outputs.
    run(["git", "merge-base", "--is-ancestor", card["lineage"]["git"]["commit"], first], repo)

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
    run(["git", "commit", "-q", "-m", "pipeline, not run"], repo)
    result = run([sys.executable, "-m", "mlproject.registry", "register"], repo, check=False)
    assert result.returncode == 1
    assert "dvc.lock records no 'models/model.onnx'" in result.stderr
    assert run(["git", "tag"], repo).stdout == ""


def test_parse_tag_knows_the_gto_convention():
    with pytest.raises(RegistryError, match="not a registry tag"):
        parse_tag("release-1")
    assert parse_tag("classifier@v1.2.3!")["event"] == "deregister"
    assert parse_tag("classifier#prod!#4")["event"] == "unassign"
