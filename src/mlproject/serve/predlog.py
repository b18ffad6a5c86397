"""Prediction log: one JSON line per predicted item, for drift monitoring (off by default).

The request path only puts a reference to its arrays on a queue; a background thread computes
the input summaries (`mlproject.monitor.features`), writes JSONL and rotates the files, so logging
costs the request almost nothing. `close()` drains the queue: a clean shutdown loses no record.

Files, in `PREDICTION_LOG=<dir>`: `predictions.jsonl` (being written), then `predictions.jsonl.1`
(the newest full one) ... `predictions.jsonl.<PREDICTION_LOG_FILES>` (the oldest kept). Each file
stays under PREDICTION_LOG_MAX_BYTES. A record:

    {"ts": 1717171717.123, "model": "digits-smallcnn", "model_sha256": "809a...",
     "route": "infer", "features": {"brightness": 0.31, "contrast": 0.38, "dark_fraction": 0.52,
     "bright_fraction": 0.2, "edge_energy": 0.21}, "predicted": "3", "confidence": 0.998}

`features` are computed on the model-sized uint8 pixels: for /predict the preprocessed image
before normalization, for /infer the tensor un-normalized with the card's mean and std.
"""

from __future__ import annotations

import json
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..monitor.features import FEATURES, image_features

FILE_NAME = "predictions.jsonl"
CHUNK = 4096  # queue entries turned into lines per write, at most
FLUSH_INTERVAL = 0.05  # seconds the writer lets records gather after a partial chunk
_STOP = object()


def rotated_names(directory: Path, keep: int) -> list[Path]:
    """Newest first: predictions.jsonl, predictions.jsonl.1, ..., .keep."""
    base = Path(directory) / FILE_NAME
    return [base] + [base.with_name(f"{FILE_NAME}.{i}") for i in range(1, keep + 1)]


class RotatingAppender:
    """Append-only writer that starts a new file before one would pass max_bytes."""

    def __init__(self, directory: Path, max_bytes: int, keep: int):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.keep = keep
        self.path = self.directory / FILE_NAME
        self.fh = open(self.path, "ab")  # noqa: SIM115 - held open for the server's life
        self.size = self.fh.tell()

    def write_lines(self, lines: list[bytes]) -> None:
        pending: list[bytes] = []
        for line in lines:
            if self.size and self.size + len(line) > self.max_bytes:
                self.fh.write(b"".join(pending))
                pending = []
                self._rotate()
            pending.append(line)
            self.size += len(line)
        self.fh.write(b"".join(pending))
        self.fh.flush()

    def _rotate(self) -> None:
        self.fh.close()
        names = rotated_names(self.directory, self.keep)
        if self.keep == 0:
            self.path.unlink()
        else:
            for older, newer in zip(names[:0:-1], names[-2::-1], strict=True):
                if newer.exists():
                    os.replace(newer, older)
        self.fh = open(self.path, "ab")  # noqa: SIM115
        self.size = 0

    def close(self) -> None:
        self.fh.close()


class PredictionLog:
    def __init__(
        self,
        directory: Path,
        model_name: str,
        model_sha256: str,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        probabilities: Callable[[list[np.ndarray]], np.ndarray],
        classes: list[str],
        max_bytes: int,
        keep: int,
        queue_size: int = 100_000,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
    ):
        self.directory = Path(directory)
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
        self.probabilities = probabilities
        self.max_bytes, self.keep = max_bytes, keep
        self.queue_size = queue_size
        # SimpleQueue: a C queue whose put is a few hundred nanoseconds; bounded by qsize().
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.on_written = on_written or (lambda n: None)
        self.on_dropped = on_dropped or (lambda n: None)
        self.thread: threading.Thread | None = None
        self.written = 0
        # Records are formatted from a template: json.dumps per record would cost more than
        # the request it describes. Strings are JSON-escaped once, here.
        head = f'"model": {json.dumps(model_name)}, "model_sha256": {json.dumps(model_sha256)}'
        self.template = (
            '{"ts": %.6f, '
            + head
            + ', "route": "%s", "features": {'
            + ", ".join(f'"{name}": %.6g' for name in FEATURES)
            + '}, "predicted": %s, "confidence": %s}\n'
        )
        self.class_json = [json.dumps(c) for c in classes]

    def start(self) -> None:
        self.appender = RotatingAppender(self.directory, self.max_bytes, self.keep)
        self.thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self.thread.start()

    def submit(
        self, route: str, x: np.ndarray, normalized: bool, results: list[np.ndarray]
    ) -> None:
        """Called on the request path: O(1), never blocks; drops (and counts) when full."""
        if self.queue.qsize() >= self.queue_size:
            self.on_dropped(len(x))
            return
        self.queue.put((time.time(), route, x, normalized, results))

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued so far, then stop the writer."""
        if self.thread is None:
            return
        self.queue.put(_STOP)
        self.thread.join(timeout)
        self.thread = None
        self.appender.close()

    # --- writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        stop = False
        while not stop:
            entries = [self.queue.get()]
            while len(entries) < CHUNK:
                try:
                    entries.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            if _STOP in entries:
                stop = True
                entries = [e for e in entries if e is not _STOP]
            if entries:
                self._write(entries)
            if not stop and len(entries) < CHUNK:
                # Let records gather: one vectorized pass over many is far cheaper than many.
                time.sleep(FLUSH_INTERVAL)

    def _write(self, entries: list[tuple]) -> None:
        try:
            lines = self.lines(entries)
            self.appender.write_lines(lines)
            self.written += len(lines)
            self.on_written(len(lines))
        except Exception as exc:  # a full disk must not take the server down
            print(f"prediction log: {len(entries)} requests not written ({exc})", file=sys.stderr)
            self.on_dropped(sum(len(e[2]) for e in entries))

    def pixels(self, x: np.ndarray, normalized: bool) -> np.ndarray:
        if not normalized:
            return x
        return np.clip(np.rint((x * self.std + self.mean) * 255.0), 0, 255).astype(np.uint8)

    def features(self, entries: list[tuple]) -> np.ndarray:
        """image_features of every item, in entry order, computed in as few calls as possible."""
        out: list[np.ndarray | None] = [None] * len(entries)
        for normalized in (True, False):
            idx = [i for i, e in enumerate(entries) if e[3] is normalized]
            arrays = [entries[i][2] for i in idx]
            if not idx:
                continue
            if len({a.shape[1:] for a in arrays}) == 1:
                feats = image_features(self.pixels(np.concatenate(arrays), normalized))
                bounds = np.cumsum([0] + [len(a) for a in arrays])
                for j, i in enumerate(idx):
                    out[i] = feats[bounds[j] : bounds[j + 1]]
            else:
                for i, a in zip(idx, arrays, strict=True):
                    out[i] = image_features(self.pixels(a, normalized))
        return np.concatenate(out)

    def lines(self, entries: list[tuple]) -> list[bytes]:
        features = self.features(entries).tolist()
        outputs = [np.concatenate(r) for r in zip(*(e[4] for e in entries), strict=True)]
        probs = self.probabilities(outputs)
        predicted = probs.argmax(axis=1)
        confidence = probs[np.arange(len(probs)), predicted].tolist()
        template, class_json = self.template, self.class_json
        lines, row = [], 0
        for ts, route, x, _, _ in entries:
            for _ in range(len(x)):
                c = confidence[row]
                lines.append(
                    (
                        template
                        % (
                            ts,
                            route,
                            *features[row],
                            class_json[predicted[row]],
                            f"{c:.6g}" if math.isfinite(c) else "null",
                        )
                    ).encode()
                )
                row += 1
        return lines
