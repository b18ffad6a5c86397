"""Prediction log: one JSON line per predicted item, for drift monitoring (off by default).

The request path only appends a tuple referring to its arrays to a deque: no lock, no event,
no thread wake-up per record. A background thread wakes on a timer (FLUSH_INTERVAL, or sooner
when the deque passes HIGH_WATER), computes the input summaries of the whole batch at once
(`mlproject.monitor.features`, vectorized), formats every line with one string operation,
writes them with one call and rotates the files. Beyond `queue_size` pending requests, records
are dropped and counted. `close()` drains the deque: a clean shutdown loses no record.

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
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import chain
from pathlib import Path

import numpy as np

from ..monitor.features import FEATURES, image_features

FILE_NAME = "predictions.jsonl"
CHUNK = 512  # requests turned into lines per pass; the GIL is offered back between passes
FLUSH_INTERVAL = 0.2  # seconds between the writer's wake-ups
HIGH_WATER = 8192  # pending requests that wake the writer before its timer


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

    def write_text(self, text: str) -> None:
        """Whole lines of ASCII text (JSON escapes everything else): one write call unless the
        file must rotate inside them."""
        if self.size + len(text) <= self.max_bytes:
            self.fh.write(text.encode())
            self.fh.flush()
            self.size += len(text)
            return
        self.write_lines([line.encode() for line in text.splitlines(keepends=True)])

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
        # deque.append is atomic under the GIL and wakes nobody; the writer polls on a timer.
        self.pending: deque = deque()
        self.wake = threading.Event()  # set only at HIGH_WATER and by close()
        self.closing = False
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
        # The same line with the confidence formatted in place (it is finite but for a broken
        # model): '%.6g' % c is f"{c:.6g}".
        self.template_finite = self.template.replace('"confidence": %s}', '"confidence": %.6g}')
        self.class_json = np.array([json.dumps(c) for c in classes], dtype=object)

    def start(self) -> None:
        self.appender = RotatingAppender(self.directory, self.max_bytes, self.keep)
        self.thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self.thread.start()

    def submit(
        self, route: str, x: np.ndarray, normalized: bool, results: list[np.ndarray]
    ) -> None:
        """Called on the request path: O(1), never blocks, wakes no thread; drops (and counts)
        beyond queue_size pending requests."""
        pending = self.pending
        n = len(pending)
        if n >= self.queue_size:
            self.on_dropped(len(x))
            return
        pending.append((time.time(), route, x, normalized, results))
        if n == HIGH_WATER:  # once per crossing, not per record
            self.wake.set()

    def close(self, timeout: float = 30.0) -> None:
        """Write everything submitted so far, then stop the writer."""
        if self.thread is None:
            return
        self.closing = True
        self.wake.set()
        self.thread.join(timeout)
        self.thread = None
        self.appender.close()

    # --- writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self.wake.wait(FLUSH_INTERVAL)
            self.wake.clear()
            closing = self.closing  # read before draining: whatever came before close() is in
            self._drain()
            if closing:
                return

    def _drain(self) -> None:
        pending = self.pending
        while pending:
            n = min(len(pending), CHUNK)
            self._write([pending.popleft() for _ in range(n)])
            if pending:
                time.sleep(0)  # let the event loop's thread take the GIL between passes

    def _write(self, entries: list[tuple]) -> None:
        try:
            text, n = self.text(entries)
            self.appender.write_text(text)
            self.written += n
            self.on_written(n)
        except Exception as exc:  # a full disk must not take the server down
            print(f"prediction log: {len(entries)} requests not written ({exc})", file=sys.stderr)
            self.on_dropped(sum(len(e[2]) for e in entries))

    def pixels(self, x: np.ndarray, normalized: bool) -> np.ndarray:
        if not normalized:
            return x
        return np.clip(np.rint((x * self.std + self.mean) * 255.0), 0, 255).astype(np.uint8)

    def features(self, entries: list[tuple]) -> np.ndarray:
        """image_features of every item, in entry order, computed in as few calls as possible."""
        arrays = [e[2] for e in entries]
        kinds = {(e[3], e[2].shape[1:]) for e in entries}
        if len(kinds) == 1:  # the usual case: one route, one image size
            ((normalized, _),) = kinds
            return image_features(self.pixels(np.concatenate(arrays), normalized))
        out: list[np.ndarray | None] = [None] * len(entries)
        groups: dict[tuple, list[int]] = {}
        for i, e in enumerate(entries):
            groups.setdefault((e[3], e[2].shape[1:]), []).append(i)
        for (normalized, _), idx in groups.items():
            feats = image_features(
                self.pixels(np.concatenate([arrays[i] for i in idx]), normalized)
            )
            bounds = np.cumsum([0] + [len(arrays[i]) for i in idx])
            for j, i in enumerate(idx):
                out[i] = feats[bounds[j] : bounds[j + 1]]
        return np.concatenate(out)

    def text(self, entries: list[tuple]) -> tuple[str, int]:
        """The JSON lines of every item of these requests, as one string, and their count."""
        features = self.features(entries)
        outputs = [np.concatenate(r) for r in zip(*(e[4] for e in entries), strict=True)]
        probs = self.probabilities(outputs)
        n = len(probs)
        predicted = probs.argmax(axis=1)
        confidence = probs[np.arange(n), predicted].astype(np.float64)
        counts = [len(e[2]) for e in entries]
        if n == len(entries):  # one item per request
            ts, routes = [e[0] for e in entries], [e[1] for e in entries]
        else:
            ts = np.repeat([e[0] for e in entries], counts).tolist()
            routes = np.repeat(np.array([e[1] for e in entries], dtype=object), counts).tolist()
        conf: list = confidence.tolist()
        template = self.template_finite
        if not np.isfinite(confidence).all():
            conf = [f"{c:.6g}" if np.isfinite(c) else "null" for c in conf]
            template = self.template
        # One %-format over every line's values at once: the per-line cost is the number
        # formatting alone, not a Python loop iteration per record.
        columns = [ts, routes, *features.T.tolist(), self.class_json[predicted].tolist(), conf]
        return (template * n) % tuple(chain.from_iterable(zip(*columns, strict=True))), n

    def lines(self, entries: list[tuple]) -> list[bytes]:
        text, _ = self.text(entries)
        return [line.encode() for line in text.splitlines(keepends=True)]
