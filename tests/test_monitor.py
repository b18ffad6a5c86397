"""Reference profile and drift detection on the demo pipeline's real model and splits.

Held-out images from the training distribution must not drift; images made brighter, noisier or
drawn from a few classes only must. The windows are generated here from the prepared splits.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from mlproject.core.io import read_json
from mlproject.kinds.images.monitoring import (
    FEATURES,
    columns,
    features_dict,
    image_features,
    predict_classes,
)
from mlproject.monitor.drift import Window, detect, read_logs
from mlproject.monitor.profile import build_profile, onnx_session
from mlproject.monitor.settings import SettingsError, from_dict, load_settings
from mlproject.pipeline.data import png_bytes

from conftest import ENV, run

pytestmark = pytest.mark.slow  # needs the pipeline_repo fixture (one `dvc repro`)


@pytest.fixture(scope="module")
def ref(pipeline_repo):
    """The real settings, model, splits and a profile built from them."""
    prepared = pipeline_repo / "outputs" / "prepared"
    splits = {}
    for split in ("train", "val", "test"):
        with np.load(prepared / f"{split}.npz") as npz:
            splits[split] = (npz["x"], npz["y"])
    card = read_json(pipeline_repo / "models" / "model_card.json")
    session = onnx_session(pipeline_repo / "models" / "model.onnx")
    settings = load_settings(pipeline_repo / "params.yaml")
    predicted = predict_classes(session, card, splits["test"][0])
    profile = build_profile(card, columns(splits["train"][0]), predicted, settings)
    return {
        "splits": splits,
        "card": card,
        "session": session,
        "settings": settings,
        "profile": profile,
        "repo": pipeline_repo,
    }


def window(ref, pixels: np.ndarray) -> Window:
    classes = ref["card"]["classes"]
    predicted = predict_classes(ref["session"], ref["card"], pixels)
    return Window("test", image_features(pixels), [classes[i] for i in predicted])


def held_out(ref) -> tuple[np.ndarray, np.ndarray]:
    (xv, yv), (xt, yt) = ref["splits"]["val"], ref["splits"]["test"]
    return np.concatenate([xv, xt]), np.concatenate([yv, yt])


def write_log(folder: Path, ref, pixels: np.ndarray, files: int = 2) -> Path:
    """Prediction logs in the server's format, split over predictions.jsonl and its rotations."""
    folder.mkdir(parents=True, exist_ok=True)
    w = window(ref, pixels)
    lines = [
        json.dumps(
            {
                "ts": 1_700_000_000.0 + i,
                "model": ref["card"]["name"],
                "model_sha256": ref["card"]["sha256"],
                "route": "predict",
                "features": features_dict(w.features[i]),
                "predicted": w.predicted[i],
                "confidence": 0.9,
            }
        )
        for i in range(len(pixels))
    ]
    chunks = np.array_split(np.arange(len(lines)), files)
    names = ["predictions.jsonl"] + [f"predictions.jsonl.{k}" for k in range(1, files)]
    for name, chunk in zip(
        names, reversed(chunks), strict=True
    ):  # .1 is older than the current file
        (folder / name).write_text("".join(lines[i] + "\n" for i in chunk))
    return folder


def brighter(pixels: np.ndarray) -> np.ndarray:
    return np.clip(pixels.astype(np.int16) + 60, 0, 255).astype(np.uint8)


def test_profile_stage_writes_the_reference_with_the_model(pipeline_repo):
    profile = read_json(pipeline_repo / "models" / "reference_profile.json")
    card = read_json(pipeline_repo / "models" / "model_card.json")
    assert profile["model"]["sha256"] == card["sha256"]
    assert list(profile["features"]) == list(FEATURES)
    with np.load(pipeline_repo / "outputs" / "prepared" / "train.npz") as npz:
        n_train = len(npz["y"])
    for summary in profile["features"].values():
        assert summary["n"] == n_train
        assert len(summary["bin_shares"]) == len(summary["bin_edges"]) + 1
        assert sum(summary["bin_shares"]) == pytest.approx(1.0)
        assert len(summary["sample"]) == min(n_train, 5000)
    assert profile["predicted"]["classes"] == card["classes"]
    assert profile["predicted"]["n"] == card["metrics"]["test"]["n_test"]


@pytest.mark.parametrize("split", ["val", "test"])
def test_no_drift_on_held_out_data(ref, split):
    result = detect(ref["profile"], window(ref, ref["splits"][split][0]), ref["settings"].drift)
    assert result["drift"] is False, result["drifted_features"]
    assert result["predictions"]["drift"] is False


@pytest.mark.parametrize(
    ("name", "shift", "expected"),
    [
        ("brightness", brighter, "brightness"),
        (
            "noise",
            lambda px: np.clip(
                px + np.random.default_rng(0).normal(0, 40, px.shape), 0, 255
            ).astype(np.uint8),
            "edge_energy",
        ),
    ],
)
def test_input_drift_is_detected(ref, name, shift, expected):
    x, _ = held_out(ref)
    result = detect(ref["profile"], window(ref, shift(x)), ref["settings"].drift)
    assert result["drift"] is True
    assert result["input_drift"] is True
    assert expected in result["drifted_features"], (name, result["features"][expected])


def test_class_imbalance_is_detected_on_predicted_classes(ref):
    x, y = held_out(ref)
    keep = np.flatnonzero(np.isin(y, [0, 1]))
    keep = np.concatenate([keep, np.flatnonzero(~np.isin(y, [0, 1]))[:40]])
    result = detect(ref["profile"], window(ref, x[keep]), ref["settings"].drift)
    assert result["prediction_drift"] is True
    assert result["predictions"]["chi2_pvalue"] < 1e-6
    assert result["predictions"]["total_variation"] > 0.3


def test_thresholds_come_from_the_config(ref):
    x, _ = held_out(ref)
    mild = window(ref, np.clip(x.astype(np.int16) + 8, 0, 255).astype(np.uint8))
    assert detect(ref["profile"], mild, ref["settings"].drift)["input_drift"] is True
    lax = from_dict({"drift": {"ks_statistic": 0.5, "psi": 2.0}}).drift
    assert detect(ref["profile"], mild, lax)["input_drift"] is False
    all_five = from_dict({"drift": {"min_drifted_features": 5}}).drift
    assert detect(ref["profile"], mild, all_five)["input_drift"] is False
    strict = from_dict({"drift": {"min_records": 10_000}}).drift
    with pytest.raises(ValueError, match="min_records"):
        detect(ref["profile"], window(ref, x), strict)
    with pytest.raises(SettingsError, match="monitor.drift.psy"):
        from_dict({"drift": {"psy": 0.1}})
    with pytest.raises(SettingsError, match="monitor.drift.ks_pvalue"):
        from_dict({"drift": {"ks_pvalue": 2}})


def drift_cli(args, cwd):
    return run([sys.executable, "-m", "mlproject.monitor.drift", *args], cwd, check=False)


def test_monitor_cli_on_logs_writes_the_report_and_exit_code(ref, tmp_path):
    repo = ref["repo"]
    x, _ = held_out(ref)
    same = write_log(tmp_path / "same", ref, x, files=3)
    out = tmp_path / "report"
    result = drift_cli(["--logs", str(same), "--out", str(out)], repo)
    assert result.returncode == 0, result.stderr
    report = read_json(out / "drift.json")
    assert report["drift"] is False
    assert report["window"]["n"] == len(x)
    assert (out / "features.png").stat().st_size > 0
    assert (out / "classes.png").is_file()
    assert "No drift" in (out / "drift.md").read_text()

    shifted = write_log(tmp_path / "shifted", ref, brighter(x))
    result = drift_cli(["--logs", str(shifted), "--out", str(out)], repo)
    assert result.returncode == 1, result.stderr
    assert "brightness" in read_json(out / "drift.json")["drifted_features"]
    assert "Drift detected" in (out / "drift.md").read_text()

    # Only the newest `window` records count: the older (shifted) half is left out.
    mixed = tmp_path / "mixed"
    write_log(mixed / "a", ref, brighter(x), files=1)
    write_log(mixed / "b", ref, x, files=1)
    old = [json.loads(s) for s in (mixed / "a" / "predictions.jsonl").read_text().splitlines()]
    new = [json.loads(s) for s in (mixed / "b" / "predictions.jsonl").read_text().splitlines()]
    for i, rec in enumerate(new):
        rec["ts"] = 1_800_000_000.0 + i
    (mixed / "predictions.jsonl.1").write_text("".join(json.dumps(r) + "\n" for r in old))
    (mixed / "predictions.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in new) + '{"ts": 1'
    )  # a record still being written
    win = read_logs(mixed, window=len(new))
    assert win.info["skipped_partial_lines"] == 1
    assert detect(ref["profile"], win, ref["settings"].drift)["drift"] is False


def test_monitor_cli_rejects_bad_logs_naming_the_line(ref, tmp_path):
    logs = write_log(tmp_path / "bad", ref, ref["splits"]["val"][0], files=1)
    lines = (logs / "predictions.jsonl").read_text().splitlines()
    lines[4] = json.dumps({"ts": 1.0, "predicted": "3"})
    (logs / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "report"
    result = drift_cli(["--logs", str(logs), "--out", str(out)], ref["repo"])
    assert result.returncode == 2
    assert "predictions.jsonl:5" in result.stderr
    assert "'features'" in result.stderr
    assert not out.exists()  # nothing half-written
    result = drift_cli(["--logs", str(tmp_path / "missing"), "--out", str(out)], ref["repo"])
    assert result.returncode == 2
    assert "missing" in result.stderr


def test_monitor_cli_on_an_image_folder_and_retraining_trigger(ref, tmp_path):
    x, y = held_out(ref)
    folder = tmp_path / "images"
    for i, (pixels, label) in enumerate(zip(brighter(x), y, strict=True)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        (folder / str(label) / f"{i}.png").write_bytes(png_bytes(pixels[0]))
    shims = tmp_path / "bin"
    shims.mkdir()
    record = tmp_path / "gh.log"
    (shims / "gh").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {record}\n')
    (shims / "gh").chmod(0o755)
    env = {**ENV, "PATH": f"{shims}{os.pathsep}{ENV['PATH']}"}
    out = tmp_path / "report"
    result = run(
        [
            sys.executable,
            "-m",
            "mlproject.monitor.drift",
            "--data",
            str(folder),
            "--out",
            str(out),
            "--no-plots",
            "--trigger-retrain",
        ],
        ref["repo"],
        check=False,
        env=env,
    )
    assert result.returncode == 1, result.stderr
    report = read_json(out / "drift.json")
    assert report["window"]["n"] == len(x)
    assert "brightness" in report["drifted_features"]
    argv = record.read_text().splitlines()
    assert argv[:3] == ["workflow", "run", "retrain.yml"]
    assert any(a.startswith("reason=drift: ") and "brightness" in a for a in argv)
