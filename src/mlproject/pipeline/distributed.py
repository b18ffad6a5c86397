"""DDP plumbing for the training loop: what each rank shares, and the per-rank debug dump.

`MLPROJECT_DEBUG_DUMP=<folder>` makes every rank write <folder>/rank<N>.json: the sample indices
it trained on per epoch, its local sums (loss, correct, count), the metrics it logged and a
digest of its final weights. tests/test_pipeline.py proves DDP from these files.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.io import write_json

DEBUG_DUMP_ENV = "MLPROJECT_DEBUG_DUMP"


def sync_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (batch-norm statistics last moved on each rank's own
    batch), so all ranks validate, and decide early stopping, alike."""
    for buffer in model.buffers():
        torch.distributed.broadcast(buffer, 0)


def open_trace(rank: int, world: int) -> dict[str, Any] | None:
    return {"rank": rank, "world": world, "epochs": []} if os.environ.get(DEBUG_DUMP_ENV) else None


def dump_trace(trace: dict[str, Any] | None, model: nn.Module) -> None:
    if trace is None:
        return
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    folder = Path(os.environ[DEBUG_DUMP_ENV])
    folder.mkdir(parents=True, exist_ok=True)
    write_json(
        folder / f"rank{trace['rank']}.json", {**trace, "weights_sha256": digest.hexdigest()}
    )
