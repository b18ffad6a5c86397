"""Prepared splits on disk: written image by image, read by index, never whole in memory.

A split is `<split>.npz` holding `x` (uint8 [N, C, H, W]) and `y` (int64 [N]), the very bytes
`np.savez(path, x=x, y=y)` writes: the members are stored uncompressed with fixed timestamps, so
the file is byte-stable and every image sits at a fixed offset. `SplitWriter` writes it in chunks
(prepare never holds a split in memory); `SplitReader` reads any rows with `os.pread` (not mmap:
file pages read through a mapping count in the process's resident memory, pread's do not).
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

import numpy as np

LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # a zip local file header, before its name and extra


class SplitWriter:
    """`with SplitWriter(path, n, (C, H, W)) as w: w.write(chunk, labels)` chunk after chunk.
    Labels are int64 class indices, or `labels_dtype` (float32 regression targets)."""

    def __init__(self, path: Path, n: int, shape: tuple[int, ...], labels_dtype=np.int64):
        self.path, self.n, self.shape = Path(path), n, tuple(shape)
        self.labels_dtype = np.dtype(labels_dtype)
        self.labels: list[np.ndarray] = []
        self.written = 0

    def __enter__(self) -> SplitWriter:
        self._zip = zipfile.ZipFile(self.path, mode="w", compression=zipfile.ZIP_STORED)
        self._member = self._zip.open("x.npy", "w", force_zip64=True)
        header = np.lib.format.header_data_from_array_1_0(np.empty((0, *self.shape), np.uint8))
        header["shape"] = (self.n, *self.shape)
        np.lib.format.write_array_header_1_0(self._member, header)
        return self

    def write(self, pixels: np.ndarray, labels: np.ndarray) -> None:
        if pixels.shape[1:] != self.shape or pixels.dtype != np.uint8:
            raise ValueError(f"{self.path}: chunk {pixels.shape} {pixels.dtype} != {self.shape}")
        self._member.write(np.ascontiguousarray(pixels).tobytes("C"))
        self.labels.append(np.asarray(labels, dtype=self.labels_dtype))
        self.written += len(pixels)

    def __exit__(self, kind, value, traceback) -> None:
        self._member.close()
        if kind is None:
            if self.written != self.n:
                self._zip.close()
                raise ValueError(f"{self.path}: wrote {self.written} of {self.n} images")
            labels = np.concatenate(self.labels) if self.labels else np.empty(0, self.labels_dtype)
            with self._zip.open("y.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, labels)
        self._zip.close()


def _member_data(path: Path, name: str) -> tuple[int, tuple[int, ...], np.dtype]:
    """Offset of a stored .npy member's array data, with its shape and dtype."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"{path}: {name} is compressed; rerun the prepare stage")
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        fields = LOCAL_HEADER.unpack(fh.read(LOCAL_HEADER.size))
        fh.seek(fields[-2] + fields[-1], os.SEEK_CUR)  # file name and extra field
        version = np.lib.format.read_magic(fh)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0}.get(
            version, np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(fh)
        if fortran:
            raise ValueError(f"{path}: {name} is Fortran-ordered")
        return fh.tell(), shape, dtype


class SplitReader:
    """Rows of `x` by index (os.pread at fixed offsets) and all labels (small) of one split."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.offset, shape, dtype = _member_data(self.path, "x.npy")
        if dtype != np.uint8:
            raise ValueError(f"{self.path}: x is {dtype}, expected uint8")
        self.n, self.shape = shape[0], tuple(shape[1:])
        self.row_bytes = int(np.prod(self.shape))
        with np.load(self.path) as npz:
            self.labels = npz["y"]
        self._fd: int | None = None
        self._pid = -1

    def __len__(self) -> int:
        return self.n

    @property
    def nbytes(self) -> int:
        return self.n * self.row_bytes

    def __getstate__(self):  # DataLoader workers open their own descriptor
        return {**self.__dict__, "_fd": None, "_pid": -1}

    def read(self, indices) -> np.ndarray:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), *self.shape), dtype=np.uint8)
        view = out.reshape(len(indices), -1)
        for row, i in enumerate(indices.tolist()):
            if not 0 <= i < self.n:
                raise IndexError(f"{self.path}: row {i} of {self.n}")
            view[row] = np.frombuffer(
                os.pread(self._fd, self.row_bytes, self.offset + i * self.row_bytes), np.uint8
            )
        return out

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None
