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
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ...monitor.features import FEATURES, image_features
from ..task import serving as task_serving
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
    """What the writer process needs to know; passed to it as JSON on its command line.
    `task` names the model's task, whose log format (mlproject.tasks.<task>_serving) writes
    each record's prediction; `classes` and `scores_are_logits` are what a classifier's reads."""

    directory: str
    model_name: str
    model_sha256: str
    max_bytes: int
    keep: int
    task: str = "classification"
    classes: list[str] = field(default_factory=list)
    scores_are_logits: bool = False


class LineFormatter:
    """JSON lines from arrays, with one %-format over all of a chunk's values: json.dumps per
    record would cost more than the request it describes. Strings are JSON-escaped once; the
    prediction's members are the task's (`log_format(config).fields(scores)`)."""

    def __init__(self, config: LogConfig):
        head = (
            f'"model": {json.dumps(config.model_name)}, '
            f'"model_sha256": {json.dumps(config.model_sha256)}'
        )
        self.head = head
        self.template = (
            '{"ts": %.6f, "id": %s, '
            + head
            + ', "route": "%s", "features": {'
            + ", ".join(f'"{name}": %.6g' for name in FEATURES)
            + "}, %s}\n"
        )
        self.route_names = np.array(ROUTES, dtype=object)
        self.task = task_serving(config.task).log_format(config)

    @staticmethod
    def ids_json(ids: list[str] | None, n: int) -> list[str]:
        return ["null"] * n if ids is None else [json.dumps(i) for i in ids]

    def rows_text(
        self,
        ts: np.ndarray,
        routes: np.ndarray,
        rows: Rows,
        scores: np.ndarray,
        ids: list[str] | None = None,
    ) -> str:
        """A table's lines: `features` is the raw row, column -> number, string or null."""
        fields = self.task.fields(scores)
        id_json = self.ids_json(ids, len(ts))
        numbers = [bool(v) and any(isinstance(x, float) for x in v) for v in rows.values]
        # float32 as sent: 7 significant digits give back the number the client wrote.
        columns = [
            [None if x is None else float(f"{x:.7g}") for x in v] if is_number else v
            for v, is_number in zip(rows.values, numbers, strict=True)
        ]
        lines = []
        for i, t in enumerate(ts.tolist()):
            lines.append(
                f'{{"ts": {t:.6f}, "id": {id_json[i]}, {self.head}, '
                f'"route": "{ROUTES[routes[i]]}", "features": '
                + json.dumps(
                    {name: col[i] for name, col in zip(rows.columns, columns, strict=True)}
                )
                + f", {fields[i]}}}\n"
            )
        return "".join(lines)

    def text(
        self,
        ts: np.ndarray,
        routes: np.ndarray,
        pixels: np.ndarray | Rows,
        scores: np.ndarray,
        ids: list[str] | None = None,
    ) -> str:
        """The lines of n items: float64 timestamps [n], route codes [n], uint8 pixels
        [n, C, H, W] (or a table's Rows), the scores the task logs [n, K] and the items' ids
        (None: null)."""
        n = len(ts)
        if n == 0:
            return ""
        if isinstance(pixels, Rows):
            return self.rows_text(ts, routes, pixels, scores, ids)
        features = image_features(pixels)
        columns = [
            ts.tolist(),
            self.ids_json(ids, n),
            self.route_names[routes].tolist(),
            *features.T.tolist(),
            self.task.fields(scores),
        ]
        return (self.template * n) % tuple(chain.from_iterable(zip(*columns, strict=True)))


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
