"""Dynamic batching without a delay: requests that are ready in the same event-loop turn share
one onnxruntime run.

Under concurrency several requests are parsed before the loop gets back to the model; running
them as one batch costs little more than running one (a run has a fixed cost that dominates for
small images). Nothing waits for a batch to fill: requests join a batch only when the previous
loop turn brought several, and it runs in the next turn; otherwise a request runs at once, so a
lone client pays nothing. Results are sliced back per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np

from .model import Model


class Batcher:
    def __init__(
        self, model: Model, max_rows: int, on_run: Callable[[float, int], None] | None = None
    ):
        self.model = model
        self.max_rows = max_rows
        self.on_run = on_run or (lambda seconds, rows: None)
        self.pending: list[tuple[dict[str, np.ndarray], int, asyncio.Future]] = []
        self.scheduled = False
        self.turn_requests = 0  # requests that reached the model in this loop turn
        self.busy = False  # the previous turn had several: batch this turn's requests

    async def run(self, feed: dict[str, np.ndarray], n: int) -> list[np.ndarray]:
        """The model's outputs for the feed's n rows, computed together with whatever else is
        ready."""
        if self.pending:  # a batch is forming in this loop turn: join it
            return await self._join(feed, n)
        if self.turn_requests == 0:
            asyncio.get_running_loop().call_soon(self._end_turn)
        self.turn_requests += 1
        if self.busy:
            return await self._join(feed, n)
        # The last turn saw one request: deferring would only add a loop turn to its latency.
        start = time.perf_counter()
        results = self.model.run(feed)
        self.on_run(time.perf_counter() - start, n)
        return results

    def _end_turn(self) -> None:
        self.busy = self.turn_requests > 1
        self.turn_requests = 0

    async def _join(self, feed: dict[str, np.ndarray], n: int) -> list[np.ndarray]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((feed, n, future))
        if not self.scheduled:
            self.scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self.scheduled = False
        pending, self.pending = self.pending, []
        start = 0
        while start < len(pending):
            # Fill a batch up to max_rows (a single larger request still runs on its own).
            end, rows = start + 1, pending[start][1]
            while end < len(pending) and rows + pending[end][1] <= self.max_rows:
                rows += pending[end][1]
                end += 1
            self._run(pending[start:end])
            start = end

    def _run(self, group: list[tuple[dict[str, np.ndarray], int, asyncio.Future]]) -> None:
        """Run a group as one batch and resolve its futures with their own rows."""
        try:
            t0 = time.perf_counter()
            if len(group) == 1:
                feed = group[0][0]
            else:  # each input's rows, concatenated in the group's order
                feed = {k: np.concatenate([f[k] for f, _, _ in group]) for k in group[0][0]}
            results = self.model.run(feed)
            self.on_run(time.perf_counter() - t0, sum(n for _, n, _ in group))
        except Exception as exc:  # every waiter gets the error, none hangs
            for _, _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        offset = 0
        for _, n, future in group:
            if not future.cancelled():
                future.set_result(
                    [r[offset : offset + n] for r in results] if len(group) > 1 else results
                )
            offset += n
