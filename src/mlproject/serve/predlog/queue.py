"""The prediction log's server side: the request path's queue, the hand-off thread that turns
what is queued into chunks for the writer process's pipe, and that process's lifetime.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..ids import item_ids
from .wire import ROUTE_CODES, Rows, encode_chunk, encode_rows_chunk, write_all
from .writer import FILE_NAME, LogConfig

FLUSH_INTERVAL = 0.1  # seconds between the hand-off thread's wake-ups
HIGH_WATER = 8192  # pending requests that wake the hand-off thread before its timer
CHUNK = 1024  # requests per chunk at most; the GIL is offered back between chunks


class Pending(NamedTuple):
    """One request's items, as queued by the request path."""

    ts: float
    route: int  # a code of wire.ROUTES
    x: np.ndarray | dict  # images: the model's input [n, C, H, W]; a table: its feed (columns)
    normalized: bool  # float input to un-normalize (/infer), or uint8 pixels already (/predict)
    scores: np.ndarray  # [n, K]: the output the task logs
    ids: str | list[str] | None  # the request's id, or each item's (serve.ids)


class PredictionLog:
    """The server's side: the request path's queue, the hand-off thread, the writer process."""

    def __init__(
        self,
        config: LogConfig,
        *,
        scores_index: int,
        mean: tuple[float, ...] = (0.0,),
        std: tuple[float, ...] = (1.0,),
        queue_size: int = 100_000,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
    ):
        """`config`: what the writer process needs; mean and std un-normalize /infer's image
        tensors (a table's rows are logged as sent);
        scores_index: which of the model's outputs is logged as class scores; on_written and
        on_dropped count records (called from the hand-off thread and the request path)."""
        self.config = replace(
            config, directory=str(Path(config.directory).resolve()), classes=list(config.classes)
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
        self,
        route: str,
        x: np.ndarray,
        normalized: bool,
        results: list[np.ndarray],
        ids: str | list[str] | None = None,
    ) -> None:
        """Called on the request path: O(1), never blocks, wakes no thread; drops (and counts)
        beyond queue_size pending requests. `ids`: the request's id (items get `#i` when there
        are several), or one per item; None: the log makes a request id."""
        pending = self.pending
        n = len(pending)
        if n >= self.queue_size or self.broken:
            self.on_dropped(len(x))
            return
        pending.append(
            Pending(time.time(), ROUTE_CODES[route], x, normalized, results[self.scores_index], ids)
        )
        if n == HIGH_WATER:  # once per crossing, not per record
            self.wake.set()

    def submit_rows(
        self,
        route: str,
        feed: dict,
        results: list[np.ndarray],
        ids: str | list[str] | None = None,
    ) -> None:
        """Like submit, for a table: `feed` holds one [n, 1] array per column (float32, NaN for
        missing; strings, "" for missing), logged as the raw row."""
        pending = self.pending
        n = len(pending)
        if n >= self.queue_size or self.broken:
            self.on_dropped(len(results[self.scores_index]))
            return
        pending.append(
            Pending(time.time(), ROUTE_CODES[route], feed, False, results[self.scores_index], ids)
        )
        if n == HIGH_WATER:
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

    def _send(self, entries: list[Pending]) -> None:
        items = sum(len(e.scores) for e in entries)
        if self.broken:
            self.on_dropped(items)
            return
        try:
            if type(entries[0].x) is dict:  # table rows: their own chunk form
                buffers = encode_rows_chunk(*self.rows_group(entries))
            else:
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

    def groups(self, entries: list[Pending]):
        """(ts, routes, pixels, scores, ids) per image size (one, unless the model takes several),
        each item with its request's time and route."""
        try:  # the usual case: one image size, so one chunk
            x = np.concatenate([e.x for e in entries])
        except ValueError:  # several sizes: a chunk per size, below
            x = None
        if x is not None:
            yield self.group(entries, x)
            return
        by_shape: dict[tuple, list[Pending]] = {}
        for e in entries:
            by_shape.setdefault(e.x.shape[1:], []).append(e)
        for group in by_shape.values():
            yield self.group(group, np.concatenate([e.x for e in group]))

    def group(self, entries: list[Pending], x: np.ndarray) -> tuple:
        """One chunk's arrays; x: the entries' inputs, concatenated."""
        ts, routes = [e.ts for e in entries], [e.route for e in entries]
        counts = None
        if len(x) != len(entries):  # some requests had several items
            counts = [len(e.x) for e in entries]
            ts, routes = np.repeat(ts, counts), np.repeat(routes, counts)
        flags = [e.normalized for e in entries]
        if flags.count(flags[0]) == len(flags):  # the usual case: one route
            pixels = self.pixels(x, flags[0])
        else:  # un-normalize the /infer rows only, in one batch
            rows = np.repeat(flags, counts) if counts else np.array(flags)
            pixels = np.empty(x.shape, dtype=np.uint8)
            pixels[rows] = self.pixels(x[rows], True)
            pixels[~rows] = x[~rows]
        scores = np.concatenate([e.scores for e in entries])
        return (
            np.asarray(ts, dtype=np.float64),
            np.asarray(routes, dtype=np.uint8),
            pixels,
            scores,
            entry_ids(entries),
        )

    @staticmethod
    def rows_group(entries: list[Pending]) -> tuple:
        """(ts, routes, Rows, scores, ids) of table requests: each column's values as the client
        sent them (NaN and "" back to None: missing)."""
        counts = [len(e.scores) for e in entries]
        ts = np.repeat([e.ts for e in entries], counts)
        routes = np.repeat([e.route for e in entries], counts)
        names = list(entries[0].x)
        values = []
        for name in names:
            column = np.concatenate([e.x[name] for e in entries]).reshape(-1)
            if column.dtype.kind == "f":
                values.append([None if v != v else v for v in column.astype(np.float64).tolist()])
            else:
                values.append([v or None for v in column.tolist()])
        scores = np.concatenate([e.scores for e in entries])
        return ts, routes.astype(np.uint8), Rows(names, values), scores, entry_ids(entries)


def entry_ids(entries: list[Pending]) -> list[str]:
    """Every item's id, in order (serve.ids.item_ids: `<request id>#<i>` for the i-th of
    several)."""
    out: list[str] = []
    for e in entries:
        ids = e.ids
        if ids is None or type(ids) is str:
            out += item_ids(ids or uuid.uuid4().hex, len(e.scores))
        else:
            out += ids
    return out
