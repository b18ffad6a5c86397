"""The whole pipeline through DVC, in temporary git + DVC repositories, on the demo data."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ENV, run

pytestmark = pytest.mark.slow


def _json(path: Path):
    return json.loads(path.read_text())


def _copy(repo: Path, dest: Path) -> Path:
    shutil.copytree(repo, dest, symlinks=True)
    return dest


def test_pipeline_reaches_the_accuracy_target_and_declares_its_outputs(pipeline_repo):
    metrics = _json(pipeline_repo / "reports/eval/metrics.json")
    assert metrics["accuracy"] >= 0.97
    assert metrics["f1_macro"] >= 0.97

    shown = json.loads(run(["dvc", "metrics", "show", "--json"], pipeline_repo).stdout)
    eval_metrics = shown[""]["data"]["reports/eval/metrics.json"]["data"]
    assert set(eval_metrics) >= {"accuracy", "f1_macro"}
    assert "val" in shown[""]["data"]["reports/train/metrics.json"]["data"]

    plots = json.loads(run(["dvc", "plots", "show", "--json"], pipeline_repo).stdout)
    assert {"Loss", "Accuracy", "Confusion matrix", "Per-class F1"} <= set(plots["data"])

    artifacts = yaml.safe_load((pipeline_repo / "dvc.yaml").read_text())["artifacts"]
    assert artifacts["classifier"] == {
        **artifacts["classifier"],
        "path": "models/model.onnx",
        "type": "model",
    }
    card = _json(pipeline_repo / "models/model_card.json")
    # No git commit in the card (a fresh clone's repro would rewrite it); the numerics it was
    # made with instead, as the checkpoint recorded them on this machine.
    assert "git" not in card["lineage"]
    assert set(card["numerics"]) >= {"torch", "device", "arch", "isa", "pinning"}
    assert card["numerics"]["device"] == "cpu"
    data_dvc = yaml.safe_load((pipeline_repo / "data.dvc").read_text())["outs"][0]
    assert card["lineage"]["data"]["md5"] == data_dvc["md5"]
    assert card["metrics"]["test"]["accuracy"] == metrics["accuracy"]
    assert card["classes"] == [str(d) for d in range(10)]


def test_second_run_does_no_work_and_says_so(pipeline_repo):
    out = run(["dvc", "repro"], pipeline_repo).stdout
    assert "Data and pipelines are up to date." in out
    assert "Running stage" not in out
    assert "up to date" in run(["dvc", "status"], pipeline_repo).stdout


def test_forced_reruns_give_identical_metrics_and_weights(pipeline_repo, tmp_path):
    again = _copy(pipeline_repo, tmp_path / "again")
    run(["dvc", "repro", "--force"], again)
    # Every output, the checkpoint and the ONNX file included, has the same bytes: same lock.
    assert (again / "dvc.lock").read_text() == (pipeline_repo / "dvc.lock").read_text()
    for rel in (
        "outputs/model.pt",
        "models/model.onnx",
        "models/model_card.json",
        "reports/explain/attributions.png",
        "reports/eval/metrics.json",
        "reports/train/metrics.json",
        "reports/eval/predictions.csv",
        "reports/train/plots/metrics/val/loss.tsv",
    ):
        assert (again / rel).read_bytes() == (pipeline_repo / rel).read_bytes(), rel
    a = torch.load(pipeline_repo / "outputs/model.pt", weights_only=True)["model_state"]
    b = torch.load(again / "outputs/model.pt", weights_only=True)["model_state"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (
        _json(again / "models/model_card.json")["sha256"]
        == _json(pipeline_repo / "models/model_card.json")["sha256"]
    )


def _train_stage(repo: Path, env: dict[str, str], one_core: bool = False) -> str:
    """Run the train stage as dvc.yaml does, under extra env; hash of checkpoint and metrics."""
    first_cpu = min(os.sched_getaffinity(0))
    result = subprocess.run(
        [sys.executable, "-m", "mlproject.pipeline.run", "train"],
        cwd=repo,
        env={**ENV, **env},
        capture_output=True,
        text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, {first_cpu})) if one_core else None,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    digest = hashlib.sha256()
    for rel in ("outputs/model.pt", "reports/train/metrics.json"):
        digest.update((repo / rel).read_bytes())
    return digest.hexdigest()


def test_pinned_training_gives_the_same_bytes_whatever_the_machine_offers(pipeline_repo, tmp_path):
    """What differs between machines (instruction sets, thread counts, cores) varied on this one:
    the pinning neutralizes it. Unpinned (train.fast: true), the same variation changes the bits."""
    repo = _copy(pipeline_repo, tmp_path / "pinned")
    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("epochs: 40", "epochs: 3"))
    cores = str(len(os.sched_getaffinity(0)))
    # Varied together where they cannot interact (the instruction sets each library may use), so
    # that a change any one of them made would still show in the combined run.
    variants = {
        "ATen scalar kernels, oneDNN capped at SSE4.1, numpy all features": {
            "ATEN_CPU_CAPABILITY": "default",
            "ONEDNN_MAX_CPU_ISA": "SSE41",
            "NPY_DISABLE_CPU_FEATURES": "",
        },
        "all cores, MKL free": {"OMP_NUM_THREADS": cores, "MKL_CBWR": "AUTO"},
    }
    # The reference runs in a child of the preload server, the variants each in their own
    # process (a server per environment would import the exporter for nothing): same bytes too.
    reference = _train_stage(repo, {})
    alone = {"MLPROJECT_PRELOAD": "0"}
    assert _train_stage(repo, alone) == reference, "in its own process"
    for name, env in variants.items():
        assert _train_stage(repo, {**alone, **env}) == reference, name
    assert _train_stage(repo, alone, one_core=True) == reference, "one core (sched_setaffinity)"

    params.write_text(params.read_text().replace("fast: false", "fast: true"))
    unpinned = _train_stage(repo, {**alone, "ATEN_CPU_CAPABILITY": "avx2"})
    assert _train_stage(repo, {**alone, "ATEN_CPU_CAPABILITY": "default"}) != unpinned


def test_experiment_swaps_the_model_group(pipeline_repo, tmp_path):
    repo = _copy(pipeline_repo, tmp_path / "exp")
    run("git add -A && git commit -q --allow-empty -m baseline", repo)
    run(["dvc", "exp", "run", "-S", "model=mlp", "-S", "train.epochs=8"], repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["model"]["_target_"] == "mlproject.pipeline.models.MLP"
    assert params["train"]["epochs"] == 8
    card = _json(repo / "models/model_card.json")
    assert card["model"]["target"] == "mlproject.pipeline.models.MLP"
    assert _json(repo / "reports/eval/metrics.json")["accuracy"] > 0.9
    shown = run(["dvc", "exp", "show", "--json"], repo)
    assert "mlproject.pipeline.models.MLP" in shown.stdout


def test_torchrun_trains_with_ddp_on_cpu(pipeline_repo, tmp_path):
    """What DDP must do, proved from each rank's debug dump (MLPROJECT_DEBUG_DUMP): every rank
    trained on its own shard, all ranks end with the same weights (the DDP wrapper's gradient
    all-reduce), and the metrics logged are the global ones (the metric all-reduce). Without
    either all-reduce this test fails (checked by removing each)."""
    repo = _copy(pipeline_repo, tmp_path / "ddp")
    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("epochs: 40", "epochs: 2"))
    (repo / "outputs/model.pt").unlink()
    dump = tmp_path / "dump"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = {**ENV, "MLPROJECT_DEBUG_DUMP": str(dump)}
    out = run([*torchrun, "-m", "mlproject.pipeline.train"], repo, env=env).stdout
    assert "(2 processes)" in out
    assert out.count("epoch   1/2") == 1  # only rank 0 reports
    payload = torch.load(repo / "outputs/model.pt", weights_only=True)
    assert payload["config"]["train"]["epochs"] == 2

    ranks = [_json(dump / f"rank{r}.json") for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]  # identical weights
    n_train = sum(_json(repo / "outputs/prepared/meta.json")["counts"]["train"])
    for epoch in range(2):
        shards = [r["epochs"][epoch]["indices"] for r in ranks]
        assert all(len(s) == len(set(s)) for s in shards)  # no sample twice on a rank
        assert set(shards[0]).isdisjoint(shards[1])  # each rank its own shard...
        assert set(shards[0]) | set(shards[1]) == set(range(n_train))  # ...together all of it
        assert abs(len(shards[0]) - len(shards[1])) <= 1
        # Logged = sums over both ranks' local (loss sum, correct, count); not a rank's own.
        local = [r["epochs"][epoch]["local"] for r in ranks]
        loss_sum, correct, count = (a + b for a, b in zip(*local, strict=True))
        assert count == n_train
        for r in ranks:
            logged = r["epochs"][epoch]["logged"]
            assert logged["train/loss"] == pytest.approx(loss_sum / count, rel=1e-5)
            assert logged["train/accuracy"] == pytest.approx(correct / count, rel=1e-5)
        own = [loss / n for loss, _, n in local]
        assert own[0] != pytest.approx(own[1], rel=1e-6)  # the shards differ: the check bites
    written = _json(repo / "reports/train/metrics.json")  # what DVCLive wrote on rank 0
    assert written["train"]["loss"] == ranks[0]["epochs"][-1]["logged"]["train/loss"]


def test_unknown_group_option_fails_the_experiment_naming_it(pipeline_repo, tmp_path):
    repo = _copy(pipeline_repo, tmp_path / "bad-exp")
    run("git add -A && git commit -q --allow-empty -m baseline", repo)
    result = run(["dvc", "exp", "run", "-S", "model=resnet"], repo, check=False)
    assert result.returncode != 0
    assert "model/resnet" in result.stdout + result.stderr


def _break_png(repo: Path) -> str:
    (repo / "data/digits/3/0003.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    return "data/digits/3/0003.png: cannot read image"


def _empty_png(repo: Path) -> str:
    (repo / "data/digits/5/0005.png").write_bytes(b"")
    return "data/digits/5/0005.png: empty file"


def _empty_class(repo: Path) -> str:
    (repo / "data/digits/ten").mkdir()
    return "data/digits/ten/: class folder is empty"


def _stray_file(repo: Path) -> str:
    (repo / "data/digits/7/README.txt").write_text("notes")
    return "data/digits/7/README.txt: not an image file"


def _missing_data(repo: Path) -> str:
    shutil.rmtree(repo / "data")
    return "missing data 'source': data"  # DVC's check of data.dvc comes before the stage


def _unknown_key(repo: Path) -> str:
    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("  batch_size:", "  batchsize: 64\n  batch_size:"))
    return "train.batchsize"


def _bad_choice(repo: Path) -> str:
    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("resize: stretch", "resize: crop"))
    return "data.resize"


@pytest.mark.parametrize(
    "damage",
    [_break_png, _empty_png, _empty_class, _stray_file, _missing_data, _unknown_key, _bad_choice],
)
def test_bad_input_fails_naming_it_and_leaves_no_outputs(project, damage):
    expected = damage(project)
    result = run(["dvc", "repro"], project, check=False)
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr
    assert not (project / "outputs").exists() or not any((project / "outputs").iterdir())
    assert not (project / "models/model.onnx").exists()
    leftovers = [p for p in project.rglob(".*.tmp")] + list(project.glob("outputs/.prepared*"))
    assert leftovers == []


def test_data_comes_from_a_reachable_remote_else_the_embedded_demo(project, tmp_path):
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "store", str(remote)], project)
    run(["dvc", "push", "data.dvc"], project)
    shutil.rmtree(project / "data")
    shutil.rmtree(project / ".dvc/cache")
    out = run([sys.executable, "-m", "mlproject.pipeline.data"], project).stdout
    assert "pulled from the DVC remote" in out
    assert "up to date" in run(["dvc", "status", "data.dvc"], project).stdout

    shutil.rmtree(project / "data")
    shutil.rmtree(project / ".dvc/cache")
    shutil.rmtree(remote)  # configured but unreachable: fall back to the demo bytes
    result = run([sys.executable, "-m", "mlproject.pipeline.data"], project)
    assert "embedded demo dataset" in result.stdout
    assert "dvc pull failed" in result.stderr
    assert "up to date" in run(["dvc", "status", "data.dvc"], project).stdout
    assert "present" in run([sys.executable, "-m", "mlproject.pipeline.data"], project).stdout
