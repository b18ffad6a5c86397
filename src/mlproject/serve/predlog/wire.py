"""The prediction log's wire format: the chunks the server's hand-off thread writes to the
writer process's pipe.

A chunk: a header (magic, n items, C, H, W, K), then n float64 timestamps, n uint8 route codes,
n*C*H*W uint8 pixels and n*K float32 scores (probabilities, or logits when the model has no
probabilities output).
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

import numpy as np

ROUTES = ("infer", "predict")
ROUTE_CODES = {name: i for i, name in enumerate(ROUTES)}
HEADER = struct.Struct("<4sIHHHH")
MAGIC = b"PLG1"


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
