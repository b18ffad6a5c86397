"""Image folders with a number to predict (`task: regression`): the images anywhere under
`data.root`, and a CSV under it (`data.targets`) giving each image its value.

    file,brightness          # a header row: the second column's name is the target's
    a/0001.png,0.25          # the image's path under data.root, then its number
    0002.png,0.75

Every image needs exactly one row and every row one image; a value must be a finite number.
Each mistake is a DataError naming the file, the row and what to do. The split is a seeded
shuffle (there are no classes to stratify on).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...pipeline.data import DataError, check_image_suffix


@dataclass(frozen=True)
class Targets:
    """Images and their values, in file order (sorted paths under root)."""

    name: str  # the target's name: the CSV's second column header
    source: Path  # the targets file
    files: list[Path]
    values: np.ndarray  # float32, one per file


def discover_targets(root: str | Path, targets: str, extensions: list[str]) -> Targets:
    """The images under root and their values from root/targets, checked both ways."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"{root}/: dataset folder not found. Put your images under {root}/ (data.root) "
            f"and their values in {root}/{targets} (data.targets)."
        )
    source = root / targets
    if not source.is_file():
        raise DataError(
            f"{source}: targets file not found. A regression image folder needs a CSV under "
            f"data.root with a header row, then one row per image: its path under {root}/ and "
            "its value (data.targets)."
        )
    name, by_file = read_targets(source)
    images = list_images(root, extensions, skip=source)
    if not images:
        raise DataError(f"{root}/: no images found (data.extensions: {', '.join(extensions)}).")
    known = {p.relative_to(root).as_posix(): p for p in images}
    for rel, (row, _value) in by_file.items():
        if rel not in known:
            raise DataError(
                f"{source}, row {row}: names {rel!r}, which is not an image under {root}/. "
                "Fix the name (a path relative to data.root) or remove the row."
            )
    missing = [rel for rel in known if rel not in by_file]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(
            f"{known[missing[0]]}: image without a target in {source}{more}. Add a row "
            f"'{missing[0]},<value>' for it, or remove the image."
        )
    values = np.asarray([by_file[rel][1] for rel in known], dtype=np.float32)
    return Targets(name, source, list(known.values()), values)


def read_targets(source: Path) -> tuple[str, dict[str, tuple[int, float]]]:
    """The target's name and {image path under root: (CSV row number, value)}."""
    try:
        with source.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{source}: cannot read it as a UTF-8 CSV file: {exc}") from exc
    if not rows or len(rows[0]) != 2 or not all(h.strip() for h in rows[0]):
        raise DataError(
            f"{source}, row 1: expected a header of two columns (the image's path, the target's "
            f"name, e.g. 'file,brightness'), got {rows[0] if rows else 'an empty file'}."
        )
    name = rows[0][1].strip()
    by_file: dict[str, tuple[int, float]] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # a blank line
        if len(row) != 2:
            raise DataError(
                f"{source}, row {number}: expected 2 columns (path, {name}), got {len(row)}: {row}."
            )
        rel, text = Path(row[0].strip()).as_posix(), row[1].strip()
        try:
            value = float(text)
        except ValueError:
            raise DataError(
                f"{source}, row {number}, column {name!r}: {text!r} is not a number "
                f"(image {rel!r}). Task regression needs a number per image."
            ) from None
        if not math.isfinite(value):
            raise DataError(
                f"{source}, row {number}, column {name!r}: {text!r} for image {rel!r}; "
                "a target must be a finite number."
            )
        if rel in by_file:
            raise DataError(
                f"{source}, row {number}: image {rel!r} again (first in row {by_file[rel][0]}); "
                "give each image one value."
            )
        by_file[rel] = (number, value)
    if not by_file:
        raise DataError(f"{source}: no rows after the header; add one per image.")
    return name, by_file


def list_images(root: Path, extensions: list[str], skip: Path) -> list[Path]:
    """Every image under root (sorted), the targets file left out; any other file is an error."""
    allowed = {e.lower() for e in extensions}
    images = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_dir() or any(part.startswith(".") for part in rel.parts):
            continue
        if path == skip or path.name.endswith(".dvc"):
            continue
        check_image_suffix(path, allowed)
        images.append(path)
    return images
