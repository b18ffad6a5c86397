"""Prediction log: one JSON line per predicted item, for drift monitoring (off by default).

The work is split so that almost none of it runs under the server's GIL:

* the request path appends a tuple referring to its arrays to a deque: no lock, no event, no
  thread wake-up per record;
* a hand-off thread wakes on a timer (FLUSH_INTERVAL, or sooner when the deque passes
  HIGH_WATER), turns what is queued into one binary chunk per image size with a few vectorized
  NumPy calls (un-normalized uint8 pixels, class probabilities, timestamps, routes) and writes it
  to a pipe; the write itself releases the GIL;
* a writer process (`python -m mlproject.serve.predlog`, started by the server, NumPy only)
  reads the chunks, computes the input summaries (`mlproject.monitor.features`), formats the
  lines and appends them to rotating files.

Formatting thousands of lines a second in the server's own process would hold the GIL the event
loop needs: measured in the server, the in-process writer cost about 9 us of GIL time per record
against about 1 us for the hand-off.

Beyond `queue_size` pending requests, records are dropped and counted, as they are if the writer
process dies. `close()` sends everything queued, closes the pipe and waits for the writer to
write it: a clean shutdown loses no record. The writer ignores SIGINT and SIGTERM (a Ctrl-C
reaches the whole process group) and stops when the pipe closes, so it always drains first, and
never outlives the server.

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
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from itertools import chain
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..monitor.features import FEATURES, image_features

FILE_NAME = "predictions.jsonl"
FLUSH_INTERVAL = 0.1  # seconds between the hand-off thread's wake-ups
HIGH_WATER = 8192  # pending requests that wake the hand-off thread before its timer
CHUNK = 1024  # requests per chunk at most; the GIL is offered back between chunks
ROUTES = ("infer", "predict")
ROUTE_CODES = {name: i for i, name in enumerate(ROUTES)}

# A chunk: header, then n float64 timestamps, n uint8 route codes, n*c*h*w uint8 pixels and
# n*k float32 scores (probabilities, or logits when the model has no probabilities output).
HEADER = struct.Struct("<4sIHHHH")
MAGIC = b"PLG1"


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
        self.fh = open(self.path, "ab")  # noqa: SIM115 - held open for the writer's life
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


@dataclass(frozen=True)
class LogConfig:
    """What the writer process needs to know; passed to it as JSON on its command line."""

    directory: str
    model_name: str
    model_sha256: str
    classes: list[str]
    max_bytes: int
    keep: int
    scores_are_logits: bool = False


class LineFormatter:
    """JSON lines from arrays, with one %-format over all of a chunk's values: json.dumps per
    record would cost more than the request it describes. Strings are JSON-escaped once."""

    def __init__(self, config: LogConfig):
        head = (
            f'"model": {json.dumps(config.model_name)}, '
            f'"model_sha256": {json.dumps(config.model_sha256)}'
        )
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
        self.class_json = np.array([json.dumps(c) for c in config.classes], dtype=object)
        self.route_names = np.array(ROUTES, dtype=object)
        self.logits = config.scores_are_logits

    def text(
        self, ts: np.ndarray, routes: np.ndarray, pixels: np.ndarray, scores: np.ndarray
    ) -> str:
        """The lines of n items: float64 timestamps [n], route codes [n], uint8 pixels
        [n, C, H, W] and class scores [n, K]."""
        n = len(ts)
        if n == 0:
            return ""
        features = image_features(pixels)
        if self.logits:
            z = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores = z / z.sum(axis=1, keepdims=True)
        predicted = scores.argmax(axis=1)
        confidence = scores[np.arange(n), predicted].astype(np.float64)
        conf: list = confidence.tolist()
        template = self.template_finite
        if not np.isfinite(confidence).all():
            conf = [f"{c:.6g}" if np.isfinite(c) else "null" for c in conf]
            template = self.template
        columns = [
            ts.tolist(),
            self.route_names[routes].tolist(),
            *features.T.tolist(),
            self.class_json[predicted].tolist(),
            conf,
        ]
        return (template * n) % tuple(chain.from_iterable(zip(*columns, strict=True)))


def encode_chunk(ts: np.ndarray, routes: np.ndarray, pixels: np.ndarray, scores: np.ndarray):
    """One chunk as a list of buffers (written together, copied once by the kernel)."""
    n, c, h, w = pixels.shape
    return [
        HEADER.pack(MAGIC, n, c, h, w, scores.shape[1]),
        np.ascontiguousarray(ts, dtype="<f8"),
        np.ascontiguousarray(routes, dtype="u1"),
        np.ascontiguousarray(pixels, dtype="u1"),
        np.ascontiguousarray(scores, dtype="<f4"),
    ]


def write_all(fd: int, buffers: list) -> None:
    """Write the buffers in order with as few calls as the kernel allows; each call releases
    the GIL while it writes (and while it waits, if the writer process is behind)."""
    total = sum(memoryview(b).nbytes for b in buffers)
    done = os.writev(fd, buffers)
    if done < total:  # a signal cut the write short: send the rest
        rest = memoryview(b"".join(memoryview(b).cast("B") for b in buffers))[done:]
        while rest:
            rest = rest[os.write(fd, rest) :]


def read_chunk(stream: BinaryIO):
    """(ts, routes, pixels, scores) of the next chunk, or None at the end of the stream."""
    head = stream.read(HEADER.size)
    if not head:
        return None
    if len(head) < HEADER.size:
        raise ValueError(f"prediction log: truncated chunk header ({len(head)} bytes)")
    magic, n, c, h, w, k = HEADER.unpack(head)
    if magic != MAGIC:
        raise ValueError(f"prediction log: bad chunk header {magic!r}")
    size = n * (8 + 1 + c * h * w + 4 * k)
    body = stream.read(size)
    if len(body) < size:
        raise ValueError(f"prediction log: truncated chunk ({len(body)} of {size} bytes)")
    ts = np.frombuffer(body, "<f8", n, 0)
    routes = np.frombuffer(body, "u1", n, 8 * n)
    pixels = np.frombuffer(body, "u1", n * c * h * w, 9 * n).reshape(n, c, h, w)
    scores = np.frombuffer(body, "<f4", n * k, 9 * n + n * c * h * w).reshape(n, k)
    return ts, routes, pixels, scores


class PredictionLog:
    """The server's side: the request path's queue, the hand-off thread, the writer process."""

    def __init__(
        self,
        directory: Path,
        model_name: str,
        model_sha256: str,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        scores_index: int,
        classes: list[str],
        max_bytes: int,
        keep: int,
        scores_are_logits: bool = False,
        queue_size: int = 100_000,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
    ):
        self.config = LogConfig(
            str(Path(directory).resolve()),
            model_name,
            model_sha256,
            list(classes),
            max_bytes,
            keep,
            scores_are_logits,
        )
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
        self.scores_index = scores_index
        self.queue_size = queue_size
        # deque.append is atomic under the GIL and wakes nobody; the thread polls on a timer.
        self.pending: deque = deque()
        self.wake = threading.Event()  # set only at HIGH_WATER and by close()
        self.closing = False
        self.on_written = on_written or (lambda n: None)
        self.on_dropped = on_dropped or (lambda n: None)
        self.thread: threading.Thread | None = None
        self.process: subprocess.Popen | None = None
        self.written = 0  # records the writer process reported written, once it has stopped
        self.broken = False

    def check(self) -> None:
        """OSError naming the directory unless the log can be written there."""
        directory = Path(self.config.directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with open(directory / FILE_NAME, "ab"):
                pass
        except OSError as exc:
            raise OSError(
                f"PREDICTION_LOG: cannot write to {directory} ({exc.strerror or exc})"
            ) from None

    def start(self) -> None:
        """Start the writer process and the hand-off thread (create_app has run check())."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlproject.serve.predlog", json.dumps(asdict(self.config))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            # Its own session: a Ctrl-C or a signal to the server's process group does not
            # reach it; it stops when the server closes the pipe, after the last record.
            start_new_session=True,
        )
        self.thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self.thread.start()

    def submit(
        self, route: str, x: np.ndarray, normalized: bool, results: list[np.ndarray]
    ) -> None:
        """Called on the request path: O(1), never blocks, wakes no thread; drops (and counts)
        beyond queue_size pending requests."""
        pending = self.pending
        n = len(pending)
        if n >= self.queue_size or self.broken:
            self.on_dropped(len(x))
            return
        pending.append((time.time(), ROUTE_CODES[route], x, normalized, results[self.scores_index]))
        if n == HIGH_WATER:  # once per crossing, not per record
            self.wake.set()

    def close(self, timeout: float = 30.0) -> None:
        """Write everything submitted so far, then stop the thread and the writer process."""
        if self.thread is None:
            return
        self.closing = True
        self.wake.set()
        self.thread.join(timeout)
        self.thread = None
        process, self.process = self.process, None
        try:
            out, _ = process.communicate(timeout=timeout)  # closes the pipe: the writer drains
            self.written = int(out or 0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            print("prediction log: the writer did not finish in time", file=sys.stderr)

    # --- hand-off thread -------------------------------------------------------------------

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
            self._send([pending.popleft() for _ in range(n)])

    def _send(self, entries: list[tuple]) -> None:
        items = sum(len(e[2]) for e in entries)
        if self.broken:
            self.on_dropped(items)
            return
        try:
            buffers = [b for group in self.groups(entries) for b in encode_chunk(*group)]
        except Exception as exc:  # a bug here must not take the server down: count, go on
            print(f"prediction log: {items} records not logged ({exc!r})", file=sys.stderr)
            self.on_dropped(items)
            return
        try:
            write_all(self.process.stdin.fileno(), buffers)
        except OSError as exc:  # the writer died (a full disk, a kill): keep serving, count
            self.broken = True
            print(f"prediction log: writer process gone ({exc}); logging stops", file=sys.stderr)
            self.on_dropped(items)
            return
        self.on_written(items)

    def pixels(self, x: np.ndarray, normalized: bool) -> np.ndarray:
        if not normalized:
            return x
        y = x * self.std  # in place from here: one temporary for the whole batch
        y += self.mean
        y *= 255.0
        np.rint(y, out=y)
        np.clip(y, 0, 255, out=y)
        return y.astype(np.uint8)

    def groups(self, entries: list[tuple]):
        """(ts, routes, pixels, scores) per image size (one, unless the model takes several),
        each item with its request's time and route."""
        try:  # the usual case: one image size, so one chunk
            x = np.concatenate([e[2] for e in entries])
        except ValueError:  # several sizes: a chunk per size, below
            x = None
        if x is not None:
            yield self.group(entries, x)
            return
        by_shape: dict[tuple, list[tuple]] = {}
        for e in entries:
            by_shape.setdefault(e[2].shape[1:], []).append(e)
        for group in by_shape.values():
            yield self.group(group, np.concatenate([e[2] for e in group]))

    def group(self, entries: list[tuple], x: np.ndarray) -> tuple:
        """One chunk's arrays; x: the entries' inputs, concatenated."""
        ts, routes = [e[0] for e in entries], [e[1] for e in entries]
        counts = None
        if len(x) != len(entries):  # some requests had several items
            counts = [len(e[2]) for e in entries]
            ts, routes = np.repeat(ts, counts), np.repeat(routes, counts)
        flags = [e[3] for e in entries]
        if flags.count(flags[0]) == len(flags):  # the usual case: one route
            pixels = self.pixels(x, flags[0])
        else:  # un-normalize the /infer rows only, in one batch
            rows = np.repeat(flags, counts) if counts else np.array(flags)
            pixels = np.empty(x.shape, dtype=np.uint8)
            pixels[rows] = self.pixels(x[rows], True)
            pixels[~rows] = x[~rows]
        scores = np.concatenate([e[4] for e in entries])
        return np.asarray(ts, dtype=np.float64), np.asarray(routes, dtype=np.uint8), pixels, scores


# --- writer process ------------------------------------------------------------------------------


def write_stream(stream: BinaryIO, config: LogConfig) -> int:
    """Append the lines of every chunk on the stream; the number of records written."""
    appender = RotatingAppender(Path(config.directory), config.max_bytes, config.keep)
    formatter = LineFormatter(config)
    written = 0
    try:
        while (chunk := read_chunk(stream)) is not None:
            appender.write_text(formatter.text(*chunk))
            written += len(chunk[0])
    finally:
        appender.close()
    return written


def main(argv: list[str] | None = None) -> int:
    # The server stops this process by closing the pipe, after the last chunk: signals meant
    # for the server (a Ctrl-C reaches the whole process group) must not cut the drain short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    config = LogConfig(**json.loads((argv or sys.argv[1:])[0]))
    try:
        written = write_stream(sys.stdin.buffer, config)
    except (OSError, ValueError) as exc:
        print(f"prediction log writer: {exc}", file=sys.stderr)
        return 1
    print(written, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
