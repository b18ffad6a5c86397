"""The prediction log's writer process: reads chunks from its stdin, computes the input
summaries, formats JSON lines and appends them to rotating files. NumPy only, no server code.

Run by the server as `python -m mlproject.serve.predlog '<LogConfig as JSON>'`; it prints the
number of records written when its stdin closes.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ...monitor.features import FEATURES, image_features
from .wire import ROUTES, Rows, read_chunk

FILE_NAME = "predictions.jsonl"


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


@dataclass(frozen=True, kw_only=True)
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
        self.head = head
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

    def predictions(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted class index and its probability per item."""
        if self.logits:
            z = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores = z / z.sum(axis=1, keepdims=True)
        predicted = scores.argmax(axis=1)
        return predicted, scores[np.arange(len(scores)), predicted].astype(np.float64)

    def rows_text(self, ts: np.ndarray, routes: np.ndarray, rows: Rows, scores: np.ndarray) -> str:
        """A table's lines: `features` is the raw row, column -> number, string or null."""
        predicted, confidence = self.predictions(scores)
        numbers = [bool(v) and any(isinstance(x, float) for x in v) for v in rows.values]
        # float32 as sent: 7 significant digits give back the number the client wrote.
        columns = [
            [None if x is None else float(f"{x:.7g}") for x in v] if is_number else v
            for v, is_number in zip(rows.values, numbers, strict=True)
        ]
        lines = []
        for i, t in enumerate(ts.tolist()):
            c = float(confidence[i])
            lines.append(
                f'{{"ts": {t:.6f}, {self.head}, "route": "{ROUTES[routes[i]]}", "features": '
                + json.dumps(
                    {name: col[i] for name, col in zip(rows.columns, columns, strict=True)}
                )
                + f', "predicted": {self.class_json[predicted[i]]}, "confidence": '
                + (f"{c:.6g}" if np.isfinite(c) else "null")
                + "}\n"
            )
        return "".join(lines)

    def text(
        self, ts: np.ndarray, routes: np.ndarray, pixels: np.ndarray | Rows, scores: np.ndarray
    ) -> str:
        """The lines of n items: float64 timestamps [n], route codes [n], uint8 pixels
        [n, C, H, W] (or a table's Rows) and class scores [n, K]."""
        n = len(ts)
        if n == 0:
            return ""
        if isinstance(pixels, Rows):
            return self.rows_text(ts, routes, pixels, scores)
        features = image_features(pixels)
        predicted, confidence = self.predictions(scores)
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
