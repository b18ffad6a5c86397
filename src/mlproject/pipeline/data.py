"""Datasets: the demo data, discovery and validation of an image folder, splits, loading.

`data/` is raw and immutable: one sub-folder per class, images inside. `python -m mlproject.pipeline.data`
makes it present (DVC remote when reachable, else the embedded demo dataset, byte for byte as
`data.dvc` records).
"""

from __future__ import annotations

import math
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.cli import entry_point
from ..core.errors import ProjectError
from ..core.lineage import dvc_tracked_hash, workspace_dir_hash
from ..core.paths import DATA_DVC
from ..core.preprocess import ImageError, open_image, to_pixels
from ..core.proc import dvc_remote_configured, run


class DataError(ProjectError, ValueError):
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


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's handwritten digits (UCI): images [1797, 8, 8] valued 0..16, and labels.

    Read from the CSV that ships inside scikit-learn, found without importing it: importing
    scikit-learn (and SciPy under it) costs 2 s, and 6 s on a fresh environment's first run.
    """
    import gzip
    from importlib.util import find_spec

    spec = find_spec("sklearn")
    folders = list(spec.submodule_search_locations or []) if spec else []
    found = [Path(f) / "datasets" / "data" / "digits.csv.gz" for f in folders]
    found = [f for f in found if f.is_file()]
    if not found:  # a scikit-learn that keeps its data elsewhere: ask it
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target.astype(np.int64)
    with gzip.open(found[0], "rt", encoding="utf-8") as f:
        table = np.loadtxt(f, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def write_demo_dataset(root: str | Path) -> int:
    """Write the demo datasets to root (data/): scikit-learn's handwritten digits as
    digits/<digit>/<index>.png (the default, conf/data/digits.yaml), vega-datasets' cars as
    cars.csv (the table demo, conf/data/cars.yaml) and scikit-learn's diabetes data as
    diabetes.csv (the regression demo, conf/data/diabetes.yaml). Returns the items written."""
    from ..kinds.table.demo import write_cars, write_diabetes

    root = Path(root)
    return (
        write_digits(root / "digits")
        + write_cars(root / "cars.csv")
        + write_diabetes(root / "diabetes.csv")
    )


def write_digits(root: str | Path) -> int:
    """Write scikit-learn's handwritten digits as <root>/<digit>/<index>.png; returns the count."""
    images, labels = digits()
    root = Path(root)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        pixels = (image.astype(np.int64) * 255 // 16).astype(np.uint8)  # 0..16 -> 0..255
        folder = root / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{index:04d}.png").write_bytes(png_bytes(pixels))
    return len(labels)


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
            f"or put your images in {root}/<class name>/ (data.root)."
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
            check_image_suffix(path, allowed)
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


def check_image_suffix(path: Path, allowed: set[str]) -> None:
    """A file among the images whose suffix is not in `allowed` (lower case) is an error."""
    if path.suffix.lower() not in allowed:
        raise DataError(
            f"{path}: not an image file (allowed: {', '.join(sorted(allowed))}). "
            "Remove it, or add its suffix to data.extensions."
        )


def stratified_split(
    labels: np.ndarray, val: float, test: float, seed: int
) -> dict[str, np.ndarray]:
    """Indices of a deterministic stratified train/val/test split.

    The same indices as scikit-learn's `train_test_split(..., stratify=labels, random_state=seed)`
    applied twice (test off first, then val off the rest): tests/test_data.py checks it against
    scikit-learn. Written here so that `prepare` does not import scikit-learn and SciPy.
    """
    index = np.arange(len(labels))
    try:
        if not (0 < test < 1 and 0 < val < 1 and val + test < 1):
            raise ValueError(f"val={val} and test={test} must be in (0, 1) and sum below 1")
        rest, test_idx = _stratified_shuffle(index, labels, test, seed)
        train_idx, val_idx = _stratified_shuffle(rest, labels[rest], val / (1 - test), seed)
    except ValueError as exc:
        raise DataError(
            f"data.split: cannot make a stratified split ({exc}). "
            "Add images to small classes or change data.split."
        ) from exc
    return {"train": _sorted(train_idx), "val": _sorted(val_idx), "test": _sorted(test_idx)}


def _sorted(indices: np.ndarray) -> np.ndarray:
    """np.sort of distinct indices, in linear time (a mask, not a comparison sort)."""
    mask = np.zeros(int(indices.max()) + 1 if len(indices) else 0, dtype=bool)
    mask[indices] = True
    return np.flatnonzero(mask)


def random_split(
    n: int, val: float, test: float, seed: int, unit: str = "rows", min_train: int = 1
) -> dict[str, np.ndarray]:
    """Sorted train/val/test indices of a seeded shuffle: the split of a task without classes to
    stratify on (regression), for tables and images alike. `unit` names the items in errors."""
    if not (0 < test < 1 and 0 < val < 1 and val + test < 1):
        raise DataError(f"data.split: val={val} and test={test} must be in (0, 1), sum below 1.")
    order = np.random.RandomState(seed).permutation(n)
    n_test, n_val = math.ceil(test * n), math.ceil(val * n)
    if n - n_test - n_val < min_train or min(n_test, n_val) < 1:
        raise DataError(
            f"data.split: {n} {unit} are too few for val={val}, test={test}; add {unit}."
        )
    return {
        "train": np.sort(order[n_test + n_val :]),
        "val": np.sort(order[n_test : n_test + n_val]),
        "test": np.sort(order[:n_test]),
    }


def _stratified_shuffle(
    index: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's StratifiedShuffleSplit (one split), step for step: (kept, split off)."""
    n = len(labels)
    n_out = math.ceil(fraction * n)
    n_keep = n - n_out
    classes, inverse, counts = _classes(labels)
    if n_keep <= 0:
        raise ValueError(f"{n} images leave none to train on")
    if counts.min() < 2:
        small = classes[counts < 2].tolist()
        raise ValueError(f"classes {small} have only 1 image; at least 2 are needed")
    if min(n_keep, n_out) < len(classes):
        raise ValueError(
            f"a part of {min(n_keep, n_out)} images cannot hold all {len(classes)} classes"
        )
    # A stable sort's order is unique whatever the algorithm: a class index of 16 bits or fewer
    # takes NumPy's radix sort (0.07 s instead of 0.2 s for a million rows).
    small = np.uint8 if len(classes) <= 256 else np.uint16 if len(classes) <= 65536 else np.intp
    by_class = np.split(np.argsort(inverse.astype(small), kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)
    keep_n = _approximate_mode(counts, n_keep, rng)
    out_n = _approximate_mode(counts - keep_n, n_out, rng)
    keep: list[np.ndarray] = []
    out: list[np.ndarray] = []
    for i, members in enumerate(by_class):
        shuffled = members.take(rng.permutation(counts[i]), mode="clip")
        keep.append(shuffled[: keep_n[i]])
        out.append(shuffled[keep_n[i] : keep_n[i] + out_n[i]])
    # Arrays, not lists of NumPy scalars (1.5 s for a million rows); the same draws.
    return index[rng.permutation(np.concatenate(keep))], index[rng.permutation(np.concatenate(out))]


def _classes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """np.unique(labels, return_inverse=True, return_counts=True), by counting when the labels
    are small non-negative integers (class indices: no sort of a million labels)."""
    if labels.dtype.kind in "iu" and len(labels) and labels.min() >= 0 and labels.max() < 1 << 16:
        counts = np.bincount(labels)
        classes = np.flatnonzero(counts)
        position = np.zeros(len(counts), dtype=np.intp)
        position[classes] = np.arange(len(classes))
        return classes.astype(labels.dtype), position[labels], counts[classes]
    return np.unique(labels, return_inverse=True, return_counts=True)


def _approximate_mode(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """How many of `draws` each class gets, in proportion; ties broken by `rng` (scikit-learn's
    `_approximate_mode`)."""
    continuous = counts / counts.sum() * draws
    floored = np.floor(continuous)
    need = int(draws - floored.sum())
    if need > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (tied,) = np.where(remainder == value)
            now = min(len(tied), need)
            floored[rng.choice(tied, size=now, replace=False)] += 1
            need -= now
            if need == 0:
                break
    return floored.astype(int)


def load_split(prepared: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The uint8 pixels [N, C, H, W] and int64 labels of one prepared split."""
    with np.load(Path(prepared) / f"{split}.npz") as npz:
        return npz["x"], npz["y"]


# --------------------------------------------------------------- making data/ present


def _dvc(*args: str):
    return run([sys.executable, "-m", "dvc", *args], check=False)


def ensure_data(root: str = "data", dvc_file: str = str(DATA_DVC)) -> str:
    """Make data/ present and equal to data.dvc; returns how ('present', 'pulled', 'demo')."""
    if Path(root).is_dir() and any(Path(root).iterdir()) and _status_clean(dvc_file):
        return "present"
    if dvc_remote_configured():
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
    recorded = dvc_tracked_hash(dvc_file)
    root = Path(dvc_file).with_suffix("")
    return recorded is not None and root.is_dir() and workspace_dir_hash(root) == recorded


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["demo"]:
        target = args[1] if len(args) > 1 else "data"
        print(f"wrote {write_demo_dataset(target)} demo items (images, table rows) to {target}/")
        return 0
    how = ensure_data()
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
