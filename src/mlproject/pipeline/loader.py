"""Training data, in memory or streamed: the same index batches either way.

`data.in_memory: true` loads a split as one tensor on the device (the digits demo: fastest);
`false` reads each batch from disk through a DataLoader with `data.workers` worker processes
(splits.SplitReader), so memory stays flat as the dataset grows; `auto` streams a split whose
pixels exceed `data.memory_budget_mb`. Both draw the same shuffled, rank-sharded index batches
from the same generator, so they train the same model bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from .config import ConfigError
from .splits import SplitReader

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # indices, uint8 pixels, labels


def index_batches(
    n: int, batch_size: int, generator: torch.Generator | None = None, rank: int = 0, world: int = 1
) -> Iterator[torch.Tensor]:
    """Index batches over n samples: shuffled when a generator is given; sharded across ranks."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    order = order[rank::world]
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def steady_heap(threshold: int = 2**20) -> None:
    """Keep glibc from growing the heap with the step count: its mmap threshold adapts upward
    as large tensors are freed, after which they come from a heap that fragments, so resident
    memory grew with the number of batches (+5% from 2,000 to 8,000 images). A fixed threshold
    returns every tensor over 1 MiB to the system when freed (benchmarks/scale_data.py)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, threshold)  # M_MMAP_THRESHOLD; also switches the adaptation off
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        pass


def streams(data_cfg: DictConfig, split_bytes: int) -> bool:
    """Whether a split of split_bytes pixels is streamed from disk (data.in_memory)."""
    mode = data_cfg.get("in_memory", "auto")
    if mode is True or mode is False:
        return not mode
    if mode != "auto":
        raise ConfigError(f"data.in_memory is {mode!r}; expected auto, true or false.")
    return split_bytes > int(data_cfg.get("memory_budget_mb", 1024)) * 2**20


class InMemory:
    """A whole split as tensors on the device."""

    streamed = False

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    @classmethod
    def load(cls, path: Path, device: torch.device) -> InMemory:
        with np.load(path) as npz:
            return cls(torch.from_numpy(npz["x"]).to(device), torch.from_numpy(npz["y"]).to(device))

    def __len__(self) -> int:
        return len(self.y)

    @property
    def labels(self) -> np.ndarray:
        return self.y.cpu().numpy()

    def batches(self, batch_size, generator=None, rank=0, world=1) -> Iterator[Batch]:
        for idx in index_batches(len(self.y), batch_size, generator, rank, world):
            yield idx, self.x[idx], self.y[idx]


class _Rows(torch.utils.data.Dataset):
    """dataset[list of indices] -> one batch, read in a worker (no per-sample collation)."""

    def __init__(self, reader: SplitReader):
        self.reader = reader

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, idx: torch.Tensor):
        return (
            idx,
            torch.from_numpy(self.reader.read(idx.numpy())),
            torch.from_numpy(self.reader.labels[idx.numpy()]),
        )


class _Plan:
    """The batch sampler: iterated in the main process, so it draws from the same generator."""

    def __init__(self, n: int):
        self.n, self.args = n, (1, None, 0, 1)

    def __iter__(self):
        return index_batches(self.n, *self.args)


class Streamed:
    """A split read batch by batch from disk by DataLoader workers."""

    streamed = True

    def __init__(self, reader: SplitReader, device: torch.device, workers: int):
        self.reader, self.device = reader, device
        self.plan = _Plan(len(reader))
        self.loader = torch.utils.data.DataLoader(
            _Rows(reader),
            sampler=self.plan,
            batch_size=None,  # the plan yields whole batches of indices
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=device.type == "cuda",
            # Its own generator: the workers' base seed must not draw from torch's global one
            # (dropout draws from that), or streaming would change the model.
            generator=torch.Generator().manual_seed(0),
        )

    def __len__(self) -> int:
        return len(self.reader)

    @property
    def labels(self) -> np.ndarray:
        return self.reader.labels

    def batches(self, batch_size, generator=None, rank=0, world=1) -> Iterator[Batch]:
        self.plan.args = (batch_size, generator, rank, world)
        for idx, x, y in self.loader:
            yield idx, x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def open_split(
    prepared: str | Path, split: str, data_cfg: DictConfig, device: torch.device
) -> InMemory | Streamed:
    """One prepared split, in memory or streamed as data.in_memory and the budget decide."""
    path = Path(prepared) / f"{split}.npz"
    reader = SplitReader(path)
    if streams(data_cfg, reader.nbytes):
        steady_heap()
        return Streamed(reader, device, int(data_cfg.get("workers", 2)))
    return InMemory.load(path, device)
