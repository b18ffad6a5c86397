"""A prepared table split as a training source, in memory or streamed: the same batches.

The protocol is pipeline/loader.py's: `len()`, `.streamed`, `.labels` (numpy int64) and
`.batches(batch_size, generator=None, rank=0, world=1)` yielding (indices, float32 [B, F],
int64 [B]) tensors on the device, the index batches drawn by `index_batches` from the caller's
generator, so both sources give the same batches bit for bit.

In memory: the Parquet split is read once and encoded once into one tensor on the device.
Streamed (when the encoded split exceeds `data.memory_budget_mb`, or `data.in_memory: false`):
shuffled batches take rows from every row group, so re-reading Parquet per batch would read the
whole file each time. Instead the split is encoded once, row group by row group
(`ParquetFile.read_row_group`), into a compact float32 file in a temporary folder (one value per
column: the scaled number or the category's slot, plus the label); each batch reads its rows
from that file with `os.pread` and expands them to one-hot. pread, not a memory map: mapped
file pages count in resident memory, and the kernel maps 64 KiB around each touched row, so a
mapped split's RSS grew with its size (+21% from 1M to 4M rows); pread's pages stay in the
page cache, outside the process.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from ...pipeline.loader import InMemory, index_batches, steady_heap, streams
from . import encode

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # indices, float32 encoded, labels


def encoded_bytes(path: Path, spec: dict[str, Any]) -> int:
    """Bytes of a split's encoded float32 input (what in-memory training holds)."""
    return pq.ParquetFile(path).metadata.num_rows * int(spec["encoded_width"]) * 4


class InMemoryTable(InMemory):
    """The whole split encoded, as tensors on the device."""

    @classmethod
    def read(
        cls, path: Path, spec: dict[str, Any], meta: dict[str, Any], device: torch.device
    ) -> InMemoryTable:
        frame = pq.read_table(path).to_pandas()
        labels = encode.labels(frame, meta)
        return cls(
            torch.from_numpy(encode.encode(frame, spec)).to(device),
            torch.from_numpy(labels).to(device),
        )


class StreamedTable:
    """The split encoded once to a compact file on disk, batches gathered from it."""

    streamed = True

    def __init__(
        self, path: Path, spec: dict[str, Any], meta: dict[str, Any], device: torch.device
    ):
        self.spec, self.device = spec, device
        self.width = len(spec["columns"]) + 1  # the columns, then the label
        self.folder = Path(tempfile.mkdtemp(prefix="table-split-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.folder, True)
        cache = self.folder / "compact.f32"
        parquet = pq.ParquetFile(path)
        self.n = parquet.metadata.num_rows
        self.label_dtype = np.float32 if meta.get("task") == "regression" else np.int64
        with open(cache, "wb") as out:  # one row group at a time: memory stays flat
            for group in range(parquet.num_row_groups):
                frame = parquet.read_row_group(group).to_pandas()
                packed = np.empty((len(frame), self.width), dtype=np.float32)
                packed[:, :-1] = encode.compact(frame, spec)
                packed[:, -1] = encode.labels(frame, meta)
                out.write(packed.tobytes())
                del frame, packed
        self._fd = os.open(cache, os.O_RDONLY)
        self._close = weakref.finalize(self, os.close, self._fd)
        self.row_bytes = self.width * 4

    def __len__(self) -> int:
        return self.n

    def read(self, rows: np.ndarray) -> np.ndarray:
        """float32 [len(rows), width]: the cache's rows, in the order given."""
        size, fd = self.row_bytes, self._fd
        blob = b"".join([os.pread(fd, size, int(i) * size) for i in rows])
        return np.frombuffer(blob, dtype=np.float32).reshape(len(rows), self.width)

    @property
    def labels(self) -> np.ndarray:
        """All labels, read from the cache when asked (not held)."""
        out = np.empty(self.n, dtype=self.label_dtype)
        step = 65_536
        for start in range(0, self.n, step):
            count = min(step, self.n - start)
            blob = os.pread(self._fd, count * self.row_bytes, start * self.row_bytes)
            rows = np.frombuffer(blob, dtype=np.float32).reshape(count, self.width)
            out[start : start + count] = rows[:, -1]
        return out

    def batches(self, batch_size, generator=None, rank=0, world=1) -> Iterator[Batch]:
        for idx in index_batches(self.n, batch_size, generator, rank, world):
            packed = self.read(idx.numpy())
            x = torch.from_numpy(encode.expand(packed[:, :-1], self.spec))
            y = torch.from_numpy(packed[:, -1].astype(self.label_dtype))
            yield idx, x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def open_split(
    prepared: str | Path,
    split: str,
    data_cfg: Any,
    device: torch.device,
    spec: dict[str, Any],
    meta: dict[str, Any],
) -> InMemoryTable | StreamedTable:
    """One prepared split, in memory or streamed as data.in_memory and the budget decide."""
    path = Path(prepared) / f"{split}.parquet"
    if streams(data_cfg, encoded_bytes(path, spec)):
        steady_heap()
        return StreamedTable(path, spec, meta, device)
    return InMemoryTable.read(path, spec, meta, device)
