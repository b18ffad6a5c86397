"""MLflow tracking as an option, against a real `mlflow server` on loopback (SQLite store, proxied
artifacts): the export stage logs params, per-epoch metrics, the ONNX model and the card; `make
register` registers the version in MLflow's registry too; off, mlflow is never imported."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlproject.pipeline.tracking import epoch_metrics

from conftest import ENV, ROOT, run
from tooling import free_port, wait_for_http

OFF = {k: v for k, v in ENV.items() if not k.startswith("MLFLOW_")}


@pytest.mark.slow  # runs the stages in new interpreters: seconds
def test_off_by_default_mlflow_is_never_imported():
    code = (
        "import sys, mlproject.pipeline.export, mlproject.ops.registry, mlproject.pipeline.tracking as t;"
        "assert t.log_run() is None and t.register('v1') is None;"
        "assert 'mlflow' not in sys.modules, 'mlflow imported'"
    )
    run([sys.executable, "-c", code], ROOT, env=OFF)


def test_on_without_mlflow_installed_says_how_to_install(tmp_path):
    (tmp_path / "mlflow.py").write_text("raise ImportError('not here')\n")  # shadows the package
    code = "import mlproject.pipeline.tracking as t; t._mlflow()"
    result = run(
        [sys.executable, "-c", code],
        ROOT,
        env={**OFF, "PYTHONPATH": str(tmp_path), "MLFLOW_TRACKING_URI": "http://127.0.0.1:1"},
        check=False,
    )
    assert "mlflow is not installed" in result.stderr and "EXTRAS=" in result.stderr


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    work = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    with open(work / "server.log", "w") as log:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{work / 'mlflow.db'}",
                "--artifacts-destination",
                str(work / "artifacts"),
            ],  # fmt: skip
            env={**OFF, "MLFLOW_DISABLE_TELEMETRY": "true"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{uri}/health", proc, work / "server.log", timeout=90)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def trained(pipeline_repo, tmp_path_factory):
    """A clone of the pipeline repo with its results committed and checked out from the
    pipeline repo's DVC cache (read in place): export can run again without training."""
    repo = tmp_path_factory.mktemp("tracked") / "repo"
    run(["git", "clone", "--quiet", str(pipeline_repo), str(repo)], repo.parent)
    for line in run(["git", "status", "--porcelain"], pipeline_repo).stdout.splitlines():
        if (pipeline_repo / line[3:]).is_file():
            shutil.copy2(pipeline_repo / line[3:], repo / line[3:])
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "--allow-empty", "-m", "results"], repo)
    run(["dvc", "cache", "dir", "--local", str(pipeline_repo / ".dvc/cache")], repo)
    run(["dvc", "checkout", "--quiet"], repo)
    return repo


def client(uri: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.mark.slow
def test_export_logs_params_epochs_metrics_and_model(trained, mlflow_uri, tmp_path):
    env = {**OFF, "MLFLOW_TRACKING_URI": mlflow_uri, "MLFLOW_EXPERIMENT_NAME": "export-test"}
    result = run([sys.executable, "-m", "mlproject.pipeline.export"], trained, env=env)
    run_id = result.stdout.split("mlflow: run ")[1].split()[0]
    mlf = client(mlflow_uri)
    logged = mlf.get_run(run_id)
    assert logged.data.params["train.epochs"] == "40"
    assert logged.data.params["model._target_"] == "mlproject.pipeline.models.SmallCNN"
    test = json.loads((trained / "reports/eval/metrics.json").read_text())
    assert logged.data.metrics["test/accuracy"] == pytest.approx(test["accuracy"])
    expected = epoch_metrics(trained)
    history = mlf.get_metric_history(run_id, "val/loss")
    assert [m.step for m in history] == [step for step, _ in expected["val/loss"]]
    assert [m.value for m in history] == pytest.approx([v for _, v in expected["val/loss"]])
    assert len(history) > 1
    assert {a.path for a in mlf.list_artifacts(run_id, "model")} == {
        "model/model.onnx",
        "model/model_card.json",
    }
    local = mlf.download_artifacts(run_id, "model/model.onnx", str(tmp_path))
    assert Path(local).read_bytes() == (trained / "models/model.onnx").read_bytes()
    assert (
        logged.data.tags["model.sha256"]
        == json.loads((trained / "models/model_card.json").read_text())["sha256"]
    )


@pytest.mark.slow
def test_register_tags_git_and_registers_in_mlflow(trained, mlflow_uri):
    env = {**OFF, "MLFLOW_TRACKING_URI": mlflow_uri, "MLFLOW_EXPERIMENT_NAME": "register-test"}
    before = run([sys.executable, "-m", "mlproject.ops.registry", "register"], trained, env=env, check=False)  # fmt: skip
    assert (
        before.returncode == 1
        and "run `python -m mlproject.pipeline.tracking log` first" in before.stderr
    )
    run(["git", "tag", "-d", before.stderr.split("registered ")[1].split(" in git")[0]], trained)
    run([sys.executable, "-m", "mlproject.pipeline.tracking", "log"], trained, env=env)
    result = run([sys.executable, "-m", "mlproject.ops.registry", "register"], trained, env=env)
    assert "registered classifier@v0.1.0" in result.stdout  # the git registry's artifact name
    card = json.loads((trained / "models/model_card.json").read_text())
    (version,) = client(mlflow_uri).search_model_versions("name = 'classifier'")
    assert version.tags == {"version": "v0.1.0", "model.sha256": card["sha256"]}
    assert version.source.endswith("/model")
