"""ONNX model figures for the report: onnxruntime latency at batch 1 (median of repeated runs)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

ONNX_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


def _session(path: str | Path):
    import onnxruntime as ort

    # One thread so that base and head are timed alike whatever else the machine is doing.
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {}
    # Every input (an image tensor, or one per table column: numbers, or strings for categories).
    for inp in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        if inp.type == "tensor(string)":
            feed[inp.name] = np.full(shape, "", dtype=object)
        else:
            dtype = ONNX_DTYPES.get(inp.type, np.float32)
            feed[inp.name] = rng.standard_normal(shape).astype(dtype)
    return session, feed


def latencies(
    files: dict[str, str | None], runs: int = 200, warmup: int = 20
) -> dict[str, float | None]:
    """{"old": ms, "new": ms}: median batch-1 inference time of the base and head models.

    Runs alternate between the two so that both see the same machine load; a side whose file
    is missing (base model not in the local DVC cache) is None.
    """
    sessions = {side: _session(path) for side, path in files.items() if path}
    times: dict[str, list[float]] = {side: [] for side in sessions}
    for i in range(warmup + runs):
        for side, (session, feed) in sessions.items():
            start = time.perf_counter()
            session.run(None, feed)
            if i >= warmup:
                times[side].append(time.perf_counter() - start)
    return {
        side: (statistics.median(times[side]) * 1000.0 if side in times else None) for side in files
    }
