"""A DVC remote on a real S3 API (moto's server on 127.0.0.1, credentials checked): push from a
pipeline repo, then fresh clones get the outputs from it instead of training, through `make
repro` and the PR loop's `python -m mlproject.report.ci repro`; a wrong key or a dead endpoint
gives a clear error, and the pipeline falls back to rebuilding."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ENV, ROOT, run
from tooling import free_port, wait_for_http

pytestmark = pytest.mark.slow

BUCKET = "mlproject"
OUTPUTS = (
    "models/model.onnx",
    "outputs/model.pt",
    "reports/eval/metrics.json",
    "data/digits/0/0000.png",
)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 with authentication on: the first three calls (free) create an IAM user, its
    key and an allow-S3 policy; every later call must be signed with that key."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            env={**ENV, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_http(f"{endpoint}/moto-api/", proc, log, timeout=30)
        import boto3

        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
        )
        iam.create_user(UserName="dvc")
        key = iam.create_access_key(UserName="dvc")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}  # fmt: skip
        iam.put_user_policy(UserName="dvc", PolicyName="s3", PolicyDocument=json.dumps(policy))
        creds = {
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **{
            k.lower(): v for k, v in creds.items() if k != "AWS_DEFAULT_REGION"
        }).create_bucket(Bucket=BUCKET)  # fmt: skip
        yield {"endpoint": endpoint, "env": {**ENV, **creds}}
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def pushed(pipeline_repo, s3, tmp_path_factory):
    """A clone of the pipeline repo with its results committed and the S3 remote set as
    default, after `dvc push` (the pipeline repo's cache is read in place, not modified)."""
    repo = tmp_path_factory.mktemp("pushed") / "repo"
    run(["git", "clone", "--quiet", str(pipeline_repo), str(repo)], repo.parent)
    changed = run(["git", "status", "--porcelain"], pipeline_repo).stdout.splitlines()
    for line in changed:  # results of the run (dvc.lock, cards) that the fixture left uncommitted
        rel = line[3:]
        if (pipeline_repo / rel).is_file():
            shutil.copy2(pipeline_repo / rel, repo / rel)
    env = s3["env"]
    run(["dvc", "cache", "dir", "--local", str(pipeline_repo / ".dvc/cache")], repo)
    run(["dvc", "remote", "add", "-d", "storage", f"s3://{BUCKET}/dvc"], repo)
    run(["dvc", "remote", "modify", "storage", "endpointurl", s3["endpoint"]], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "--allow-empty", "-m", "results and the S3 remote"], repo)
    start = time.perf_counter()
    push = run(["dvc", "push"], repo, env=env)
    print(f"dvc push: {time.perf_counter() - start:.1f} s ({push.stdout.strip().splitlines()[-1]})")
    return repo


def fresh_clone(pushed: Path, dest: Path) -> Path:
    run(["git", "clone", "--quiet", str(pushed), str(dest)], dest.parent)
    # The venv is this one: keep make from reinstalling it for the clone's newer files.
    for rel in ("pyproject.toml", "requirements/lock.txt"):
        os.utime(dest / rel, (946684800, 946684800))
    return dest


def assert_same_outputs(clone: Path, pipeline_repo: Path) -> None:
    for rel in OUTPUTS:
        assert (clone / rel).read_bytes() == (pipeline_repo / rel).read_bytes(), rel


def test_make_repro_in_a_fresh_clone_pulls_instead_of_training(pushed, s3, pipeline_repo, tmp_path):
    clone = fresh_clone(pushed, tmp_path / "clone")
    venv = Path(sys.executable).parent.parent
    start = time.perf_counter()
    result = run(["make", "repro", f"VENV={venv}"], clone, env=s3["env"])
    print(f"make repro from the remote: {time.perf_counter() - start:.1f} s")
    assert "data/ pulled from the DVC remote" in result.stdout
    assert "Running stage" not in result.stdout, result.stdout
    summary = result.stdout.split("repro: ran: none · from the DVC remote: ")[1].splitlines()[0]
    assert "train" in summary.split(" · ")[0], result.stdout
    assert "accuracy" in result.stdout
    assert_same_outputs(clone, pipeline_repo)


def test_pr_loop_repro_pulls_instead_of_training(pushed, s3, pipeline_repo, tmp_path):
    clone = fresh_clone(pushed, tmp_path / "clone")
    run([sys.executable, "-m", "mlproject.pipeline.data"], clone, env=s3["env"])
    result = run([sys.executable, "-m", "mlproject.report.ci", "repro"], clone, env=s3["env"])
    assert "Running stage" not in result.stdout, result.stdout
    assert "Pulling data for stage: 'train'" in result.stdout
    assert_same_outputs(clone, pipeline_repo)


def test_remote_check_says_which_remote_and_whether_it_answers(pushed, s3):
    ok = run([sys.executable, "-m", "mlproject.ops.remote", "check"], pushed, env=s3["env"])
    assert f"'storage' -> s3://{BUCKET}/dvc at {s3['endpoint']}" in ok.stdout
    assert "answers: everything pushed" in ok.stdout

    wrong = {**s3["env"], "AWS_SECRET_ACCESS_KEY": "wrong"}
    bad = run(
        [sys.executable, "-m", "mlproject.ops.remote", "check"], pushed, env=wrong, check=False
    )
    assert bad.returncode == 1
    assert "refused the credentials" in bad.stderr and "rebuild the outputs locally" in bad.stderr

    run(["dvc", "remote", "modify", "--local", "storage", "endpointurl",
         f"http://127.0.0.1:{free_port()}"], pushed)  # fmt: skip
    try:
        dead = run([sys.executable, "-m", "mlproject.ops.remote", "check"], pushed, env=s3["env"], check=False)  # fmt: skip
    finally:
        run(["dvc", "remote", "modify", "--local", "--unset", "storage", "endpointurl"], pushed)
    assert dead.returncode == 1
    assert "endpoint does not answer" in dead.stderr, dead.stderr


def test_no_remote_is_not_an_error(tmp_path):
    run(["git", "init", "-q"], tmp_path)
    run(["dvc", "init", "-q"], tmp_path)
    result = run([sys.executable, "-m", "mlproject.ops.remote", "check"], tmp_path)
    assert "none configured" in result.stdout


def test_unreachable_remote_warns_and_rebuilds_what_is_missing(pushed, s3, pipeline_repo, tmp_path):
    """The documented fall-back: a failed pull rebuilds locally. Here the local cache holds
    everything but the ONNX model, so the rebuild is the export stage (and the stage after it)."""
    import yaml

    clone = fresh_clone(pushed, tmp_path / "clone")
    shutil.copytree(pipeline_repo / ".dvc/cache", clone / ".dvc/cache")
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    (onnx,) = [o for o in lock["stages"]["export"]["outs"] if o["path"] == "models/model.onnx"]
    (clone / ".dvc/cache/files/md5" / onnx["md5"][:2] / onnx["md5"][2:]).unlink()
    run(["dvc", "checkout", "--quiet"], clone, check=False)  # all but the model
    dead = f"http://127.0.0.1:{free_port()}"
    run(["dvc", "remote", "modify", "--local", "storage", "endpointurl", dead], clone)
    result = run([sys.executable, "-m", "mlproject.report.ci", "repro"], clone, env=s3["env"])
    assert "endpoint does not answer" in result.stderr, result.stderr
    assert "rebuilding instead" in result.stderr
    assert "Running stage 'export'" in result.stdout
    assert "Running stage 'train'" not in result.stdout
    assert (clone / "models/model.onnx").stat().st_size > 0


def test_remote_config_is_in_the_docs():
    page = (ROOT / "docs" / "data.md").read_text()
    for word in ("MinIO", "R2", "endpointurl", "make remote-check"):
        assert word in page, word
