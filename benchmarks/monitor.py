"""Benchmark: drift check over 10,000 logged records, against the 5 s target (2 cores).

Writes 10,000 prediction-log records in the server's JSONL format (split over a file and two
rotations) from the prepared validation and test images, then times `python -m
mlproject.monitor.drift --logs` end to end (interpreter start, imports, parsing, statistics,
markdown, JSON and both plots) and its parts in-process.

    make bench-monitor      (brings models/ and outputs/prepared/ up to date first)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mlproject.core.io import read_json
from mlproject.kinds.images.monitoring import features_dict, image_features, predict_classes
from mlproject.monitor.drift import detect, read_logs, write_report
from mlproject.monitor.profile import load_profile, onnx_session
from mlproject.monitor.settings import load_settings

N_RECORDS = 10_000
TARGET_S = 5.0
REPEATS = 3


def write_logs(folder: Path) -> None:
    x = np.concatenate([np.load(f"outputs/prepared/{s}.npz")["x"] for s in ("val", "test")])
    x = x[np.arange(N_RECORDS) % len(x)]
    card = read_json("models/model_card.json")
    feats = image_features(x)
    predicted = predict_classes(onnx_session(Path("models/model.onnx")), card, x)
    lines = [
        json.dumps(
            {
                "ts": 1.7e9 + i,
                "model": card["name"],
                "model_sha256": card["sha256"],
                "route": "predict",
                "features": features_dict(feats[i]),
                "predicted": card["classes"][predicted[i]],
                "confidence": 0.97,
            }
        )
        for i in range(N_RECORDS)
    ]
    parts = np.array_split(np.arange(N_RECORDS), 3)
    for name, part in zip(
        ("predictions.jsonl.2", "predictions.jsonl.1", "predictions.jsonl"), parts, strict=True
    ):
        (folder / name).write_text("".join(lines[i] + "\n" for i in part))


def main() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        logs, out = Path(tmp) / "logs", Path(tmp) / "report"
        logs.mkdir()
        write_logs(logs)
        size = sum(p.stat().st_size for p in logs.iterdir()) / 1e6
        cli = [
            sys.executable,
            "-m",
            "mlproject.monitor.drift",
            "--logs",
            str(logs),
            "--out",
            str(out),
        ]
        walls, bare = [], []
        for _ in range(REPEATS):
            for args, times in ((cli, walls), ([*cli, "--no-plots"], bare)):
                start = time.perf_counter()
                code = subprocess.run(args, capture_output=True).returncode
                times.append(time.perf_counter() - start)
                assert code in (0, 1), f"drift check failed with exit {code}"
        settings, profile = load_settings().drift, load_profile()
        t0 = time.perf_counter()
        window = read_logs(logs, settings.window)
        t1 = time.perf_counter()
        result = detect(profile, window, settings)
        t2 = time.perf_counter()
        write_report(result, profile, window, out)
        t3 = time.perf_counter()
    wall = statistics.median(walls)
    print(
        f"drift check over {N_RECORDS:,} logged records ({size:.1f} MB JSONL, 3 files), "
        f"{cores} cores, median of {REPEATS}:"
    )
    print(
        f"  {'end to end (python -m mlproject.monitor.drift --logs)':<58} {wall:6.2f} s   "
        f"target <= {TARGET_S:.0f} s   ratio {wall / TARGET_S:.2f}   "
        f"{'OK' if wall <= TARGET_S else 'OVER'}"
    )
    print(f"  {'end to end without the plots (--no-plots)':<58} {statistics.median(bare):6.2f} s")
    print("  in-process parts (imports already done):")
    print(f"  {'  read and parse the logs':<58} {t1 - t0:6.2f} s")
    print(f"  {'  KS + PSI on 5 features, chi-square on classes':<58} {t2 - t1:6.2f} s")
    print(f"  {'  markdown, JSON and two plots':<58} {t3 - t2:6.2f} s")
    print(f"  verdict on same-distribution logs: {'drift' if result['drift'] else 'no drift'}")
    return 0 if wall <= TARGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
