"""Datasets: the demo data, discovery and validation of an image folder, splits, loading.

`data/` is raw and immutable: one sub-folder per class, images inside. `python -m mlproject.pipeline.data`
makes it present (DVC remote when reachable, else the embedded demo dataset, byte for byte as
`data.dvc` records).
"""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.preprocess import ImageError, open_image, to_pixels


class DataError(ValueError):
    """The dataset is missing or invalid; the message names the file or folder and the fix."""


# ---------------------------------------------------------------------------- the demo dataset


def png_bytes(pixels: np.ndarray) -> bytes:
    """Encode a uint8 grayscale image as PNG with stored (uncompressed) deflate blocks.

    Written by hand so the bytes depend on nothing but this function: no zlib or Pillow version
    can change them, and so the hash recorded in data.dvc holds on every machine.
    """
    height, width = pixels.shape
    raw = b"".join(b"\x00" + pixels[row].astype(np.uint8).tobytes() for row in range(height))
    blocks, pos = [], 0
    while True:  # stored blocks hold at most 65535 bytes each
        chunk = raw[pos : pos + 65535]
        pos += len(chunk)
        final = pos >= len(raw)
        blocks.append(struct.pack("<BHH", int(final), len(chunk), len(chunk) ^ 0xFFFF) + chunk)
        if final:
            break
    stream = b"\x78\x01" + b"".join(blocks) + struct.pack(">I", zlib.adler32(raw))

    def chunk_(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk_(b"IHDR", header)
        + chunk_(b"IDAT", stream)
        + chunk_(b"IEND", b"")
    )


def write_demo_dataset(root: str | Path) -> int:
    """Write scikit-learn's handwritten digits as data/<digit>/<index>.png; returns the count."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = Path(root)
    for index, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        pixels = (image.astype(np.int64) * 255 // 16).astype(np.uint8)  # 0..16 -> 0..255
        folder = root / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{index:04d}.png").write_bytes(png_bytes(pixels))
    return len(digits.target)


# ----------------------------------------------------------------- discovery and validation


@dataclass(frozen=True)
class Dataset:
    classes: list[str]
    files: list[Path]
    labels: np.ndarray


def discover(root: str | Path, extensions: list[str], min_per_class: int = 1) -> Dataset:
    """List class folders and their images, failing on anything that is not as expected."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"{root}/: dataset folder not found. Run `make data` for the demo data, "
            f"or put your images in {root}/<class name>/."
        )
    allowed = {e.lower() for e in extensions}
    classes, files, labels = [], [], []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.name.endswith(".dvc"):
            continue
        if not entry.is_dir():
            raise DataError(
                f"{entry}: a file at the top of {root}/; images go in "
                f"{root}/<class name>/. Move or delete it."
            )
        images = []
        for path in sorted(entry.rglob("*")):
            if path.is_dir() or path.name.startswith("."):
                continue
            if path.suffix.lower() not in allowed:
                raise DataError(
                    f"{path}: not an image file (allowed: {', '.join(sorted(allowed))}). "
                    "Remove it, or add its suffix to data.extensions."
                )
            images.append(path)
        if not images:
            raise DataError(f"{entry}/: class folder is empty. Add images or delete the folder.")
        if len(images) < min_per_class:
            raise DataError(
                f"{entry}/: {len(images)} images; at least {min_per_class} per class "
                "are needed (data.min_images_per_class)."
            )
        label = len(classes)
        classes.append(entry.name)
        files.extend(images)
        labels.extend([label] * len(images))
    if len(classes) < 2:
        raise DataError(f"{root}/: found {len(classes)} class folder(s); at least 2 are needed.")
    return Dataset(classes, files, np.asarray(labels, dtype=np.int64))


def load_pixels(
    files: list[Path], height: int, width: int, channels: int, resize: str
) -> np.ndarray:
    """Read every image as uint8 [N, C, H, W]; the first unreadable one raises DataError."""
    out = np.empty((len(files), channels, height, width), dtype=np.uint8)
    for i, path in enumerate(files):
        try:
            if path.stat().st_size == 0:
                raise ImageError(f"{path}: empty file (0 bytes). Replace or remove it.")
            out[i] = to_pixels(open_image(path), height, width, channels, resize)
        except ImageError as exc:
            raise DataError(str(exc)) from exc
    return out


def stratified_split(
    labels: np.ndarray, val: float, test: float, seed: int
) -> dict[str, np.ndarray]:
    """Indices of a deterministic stratified train/val/test split."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    try:
        rest, test_idx = train_test_split(index, test_size=test, stratify=labels, random_state=seed)
        train_idx, val_idx = train_test_split(
            rest, test_size=val / (1 - test), stratify=labels[rest], random_state=seed
        )
    except ValueError as exc:
        raise DataError(
            f"data.split: cannot make a stratified split ({exc}). "
            "Add images to small classes or change data.split."
        ) from exc
    return {"train": np.sort(train_idx), "val": np.sort(val_idx), "test": np.sort(test_idx)}


def load_split(prepared: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The uint8 pixels [N, C, H, W] and int64 labels of one prepared split."""
    with np.load(Path(prepared) / f"{split}.npz") as npz:
        return npz["x"], npz["y"]


# --------------------------------------------------------------- making data/ present


def _dvc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)


def remote_configured() -> bool:
    result = _dvc("remote", "list")
    return result.returncode == 0 and bool(result.stdout.strip())


def ensure_data(root: str = "data", dvc_file: str = "data.dvc") -> str:
    """Make data/ present and equal to data.dvc; returns how ('present', 'pulled', 'demo')."""
    if Path(root).is_dir() and any(Path(root).iterdir()) and _status_clean(dvc_file):
        return "present"
    if remote_configured():
        pulled = _dvc("pull", dvc_file)
        if pulled.returncode == 0:
            return "pulled"
        print(
            f"dvc pull failed, falling back to the embedded demo data:\n{pulled.stderr.strip()}",
            file=sys.stderr,
        )
    if Path(root).exists() and any(Path(root).iterdir()):
        raise DataError(
            f"{root}/ differs from {dvc_file} and no remote could restore it. "
            f"If you changed the data on purpose, run `dvc add {root}` and commit "
            f"{dvc_file}; to restore the demo data, delete {root}/ and run `make data`."
        )
    write_demo_dataset(root)
    if not _status_clean(dvc_file):
        raise DataError(
            f"{root}/: the demo data written here does not match the hash in "
            f"{dvc_file}. Was {dvc_file} changed by hand?"
        )
    # Put the verified bytes into the local DVC cache so `dvc status` is clean.
    committed = _dvc("commit", "--force", dvc_file)
    if committed.returncode != 0:
        raise DataError(f"dvc commit {dvc_file} failed: {committed.stderr.strip()}")
    return "demo"


def _status_clean(dvc_file: str) -> bool:
    """True when the workspace hash of the tracked folder equals the one in dvc_file."""
    from ..core.lineage import dvc_tracked_hash, workspace_dir_hash

    recorded = dvc_tracked_hash(dvc_file)
    root = Path(dvc_file).with_suffix("")
    return recorded is not None and root.is_dir() and workspace_dir_hash(root) == recorded


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["demo"]:
        target = args[1] if len(args) > 1 else "data"
        print(f"wrote {write_demo_dataset(target)} images to {target}/")
        return 0
    try:
        how = ensure_data()
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        {
            "present": "data/ is present and matches data.dvc",
            "pulled": "data/ pulled from the DVC remote",
            "demo": "data/ written from the embedded demo dataset (matches data.dvc)",
        }[how]
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
