"""sweep.yml's shards push their experiments with the token (`make ci-sweep-shard` ends with
`dvc exp push origin`) to a private origin: git's smart HTTP on 127.0.0.1, which answers 401
without the token's Authorization header, as GitHub does. `dvc exp push` goes through dulwich,
which reads git's config files but not GIT_CONFIG_COUNT variables."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlproject.experiments import ci

from actlib import git, private_git_server
from conftest import ENV, run

TOKEN = "ghs_s3cret"


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A DVC project with one experiment on its commit (a ref under refs/exps, as `dvc exp run`
    leaves it), and an empty private origin."""
    repo = tmp_path / "repo"
    run(["git", "init", "-q", "-b", "main", str(repo)], tmp_path)
    run(["dvc", "init", "-q"], repo)
    git(repo, "commit", "-q", "-m", "init")
    base = git(repo, "rev-parse", "HEAD")
    (repo / "params.yaml").write_text("train:\n  lr: 0.01\n")
    git(repo, "add", "params.yaml")
    tree = git(repo, "write-tree")
    exp = git(repo, "commit-tree", tree, "-p", base, "-m", "exp")
    git(repo, "update-ref", f"refs/exps/{base[:2]}/{base[2:]}/exp-lr", exp)
    git(repo, "reset", "-q", "--hard")
    served = tmp_path / "served"
    run(["git", "init", "-q", "--bare", str(served / "acme/mlproject.git")], tmp_path)
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    for name in ("REPO_TOKEN", "GH_TOKEN", "GITHUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(repo)
    return repo, served / "acme/mlproject.git"


@pytest.mark.slow  # DVC experiments pushed over HTTP: seconds
def test_a_shard_pushes_its_experiments_to_a_private_origin_with_the_token(project, capfd):
    repo, origin = project
    with private_git_server(origin.parent.parent, TOKEN) as (url, seen):
        git(repo, "remote", "add", "origin", f"{url}/acme/mlproject.git")
        # Without the token the push is refused (the server is private) ...
        with pytest.raises(Exception, match="(?i)401|auth|credential"):
            ci.push("origin")
        assert not git(origin, "for-each-ref", "refs/exps")
        # ... with it, the experiment's ref arrives, and the token is in no output or file left.
        os.environ["REPO_TOKEN"] = TOKEN
        ci.push("origin")
    refs = git(origin, "for-each-ref", "--format=%(refname)", "refs/exps")
    assert refs.endswith("/exp-lr"), refs
    assert any(s and s.startswith("basic ") for s in seen)
    out, err = capfd.readouterr()
    assert TOKEN not in out + err
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("git-auth-*.config"))
