"""The template tests itself as a new user would: clone, `make repro`, from nothing else."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from conftest import ROOT, run

pytestmark = pytest.mark.slow


def test_make_repro_in_a_fresh_clone_builds_everything_and_reruns_as_a_no_op(tmp_path):
    clone = tmp_path / "clone"
    run(["git", "clone", "--quiet", str(ROOT), str(clone)], tmp_path)
    # A new user's shell: no virtual environment active, only the system Python on PATH.
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT))
    )
    env["DVC_NO_ANALYTICS"] = "1"

    first = run(["make", "repro"], clone, env=env, timeout=900)
    assert "creating .venv" in first.stdout
    assert "+ uv pip install" in first.stdout  # uv, not the slow pip fallback
    assert "Running stage 'export'" in first.stdout
    assert "accuracy" in first.stdout  # the metrics table
    metrics = json.loads((clone / "reports/eval/metrics.json").read_text())
    assert metrics["accuracy"] >= 0.97
    assert (clone / "models/model.onnx").stat().st_size > 0
    assert "repro: ran: prepare, train," in first.stdout  # the one-line stage summary

    # Same commit, same numbers: the retrained model and its metrics are the committed ones,
    # whatever x86-64 machine made them (the pinning in mlproject/pipeline/determinism.py).
    for rel in ("reports/eval/metrics.json", "reports/train/metrics.json"):
        committed = run(["git", "show", f"HEAD:{rel}"], clone).stdout
        assert (clone / rel).read_text() == committed, rel
    committed_lock = yaml.safe_load(run(["git", "show", "HEAD:dvc.lock"], clone).stdout)
    new_lock = yaml.safe_load((clone / "dvc.lock").read_text())
    for stage, path in (("train", "outputs/model.pt"), ("export", "models/model.onnx")):
        md5 = {o["path"]: o["md5"] for o in new_lock["stages"][stage]["outs"]}[path]
        assert md5 == {o["path"]: o["md5"] for o in committed_lock["stages"][stage]["outs"]}[path]

    second = run(["make", "repro"], clone, env=env)
    assert "Data and pipelines are up to date." in second.stdout
    assert "repro: ran: none · from the cache: none · up to date: prepare, train" in second.stdout
    assert "creating .venv" not in second.stdout and "installing" not in second.stdout
    status = run(["git", "status", "--porcelain", "--", "data.dvc", "params.yaml"], clone)
    assert status.stdout == ""
