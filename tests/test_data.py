"""Data tests: the demo bytes, discovery and validation, conversion, splits (no leakage)."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mlproject.core.lineage import workspace_dir_hash
from mlproject.core.preprocess import InputSpec, preprocess, to_pixels
from mlproject.pipeline.data import (
    DataError,
    digits,
    discover,
    load_pixels,
    png_bytes,
    stratified_split,
    write_demo_dataset,
)

EXTS = [".png", ".jpg"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "data"
    write_demo_dataset(root)
    return root


# The demos' folder hash, as `make data` writes them on any machine: the template's data.dvc
# records it (a fresh clone's `make repro` writes the demos and checks them against data.dvc:
# tests/test_fresh_clone.py); a fork's data.dvc tracks its own data.
DEMO_MD5 = "dd3cf09ef27ef743b7558241009a6088.dir"


def test_demo_data_bytes_are_the_same_on_every_machine(demo):
    assert workspace_dir_hash(demo) == DEMO_MD5


def test_png_writer_round_trips_through_pillow():
    pixels = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    decoded = np.asarray(Image.open(io.BytesIO(png_bytes(pixels))))
    np.testing.assert_array_equal(decoded, pixels)


def test_demo_dataset_is_ten_balanced_classes(demo):
    ds = discover(demo / "digits", EXTS, min_per_class=5)
    assert ds.classes == [str(d) for d in range(10)]
    assert len(ds.files) == 1797
    counts = np.bincount(ds.labels)
    assert counts.min() >= 170 and counts.max() <= 190


def _tree(tmp_path, spec):
    root = tmp_path / "data"
    for rel, content in spec.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.mkdir(exist_ok=True)
        else:
            path.write_bytes(content)
    return root


def _png(value=128, size=(8, 8)):
    return png_bytes(np.full(size, value, dtype=np.uint8))


GOOD = {f"{c}/{i}.png": _png(i * 20) for c in "ab" for i in range(5)}


def test_missing_data_folder_says_how_to_get_data(tmp_path):
    with pytest.raises(DataError, match=r"data/: dataset folder not found.*make data"):
        discover(tmp_path / "data", EXTS)


def test_empty_class_folder_is_named(tmp_path):
    root = _tree(tmp_path, {**GOOD, "c": None})
    with pytest.raises(DataError, match=r"/c/: class folder is empty"):
        discover(root, EXTS)


def test_stray_non_image_file_is_named(tmp_path):
    root = _tree(tmp_path, {**GOOD, "a/notes.txt": b"hello"})
    with pytest.raises(DataError, match=r"a/notes\.txt: not an image file"):
        discover(root, EXTS)


def test_file_at_top_level_is_named(tmp_path):
    root = _tree(tmp_path, {**GOOD, "labels.csv": b"x"})
    with pytest.raises(DataError, match=r"labels\.csv: a file at the top"):
        discover(root, EXTS)


def test_too_few_images_per_class(tmp_path):
    root = _tree(tmp_path, {"a/0.png": _png(), **{f"b/{i}.png": _png() for i in range(5)}})
    with pytest.raises(DataError, match=r"/a/: 1 images; at least 5"):
        discover(root, EXTS, min_per_class=5)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"\x89PNG\r\n\x1a\nthis is not a png", "cannot read image"),
        (_png()[:40], "cannot read image"),
    ],
)
def test_corrupt_or_empty_image_is_named(tmp_path, content, reason):
    root = _tree(tmp_path, {**GOOD, "b/broken.png": content})
    ds = discover(root, EXTS)
    with pytest.raises(DataError, match=rf"b/broken\.png: {reason}"):
        load_pixels(ds.files, 8, 8, 1, "stretch")


def test_other_sizes_and_modes_are_converted(tmp_path):
    photo = Image.new("RGB", (64, 32), (200, 100, 50))
    buf = io.BytesIO()
    photo.save(buf, format="JPEG")
    img = Image.open(io.BytesIO(buf.getvalue()))
    assert to_pixels(img, 8, 8, 1, "stretch").shape == (1, 8, 8)
    padded = to_pixels(img, 8, 8, 3, "pad")
    assert padded.shape == (3, 8, 8)
    assert padded[:, 0, :].max() == 0 and padded[0, 4, 4] > 150  # black bars, image centred
    rgba = Image.new("RGBA", (8, 8), (255, 255, 255, 0))
    assert to_pixels(rgba, 8, 8, 3, "stretch").max() == 0  # transparency becomes black


def test_preprocess_matches_the_training_normalization():
    spec = InputSpec(height=8, width=8, channels=1, mean=(0.5,), std=(0.25,))
    x = preprocess(_png(255), spec)
    assert x.shape == (1, 8, 8) and x.dtype == np.float32
    np.testing.assert_allclose(x, 2.0)


def test_split_is_stratified_disjoint_and_deterministic(demo):
    labels = discover(demo / "digits", EXTS).labels
    a = stratified_split(labels, 0.15, 0.15, seed=42)
    b = stratified_split(labels, 0.15, 0.15, seed=42)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    all_idx = np.concatenate(list(a.values()))
    assert len(all_idx) == len(set(all_idx.tolist())) == len(labels)  # disjoint and complete
    for idx in a.values():  # every class present in every split, in proportion
        share = np.bincount(labels[idx], minlength=10) / len(idx)
        np.testing.assert_allclose(share, np.bincount(labels) / len(labels), atol=0.02)
    c = stratified_split(labels, 0.15, 0.15, seed=7)
    assert not np.array_equal(a["test"], c["test"])


@pytest.mark.parametrize("seed", [0, 7, 42])
def test_split_gives_scikit_learns_indices(seed):
    """The split is scikit-learn's train_test_split(stratify=...) twice, index for index: the
    committed metrics were made with it, and prepare must not import scikit-learn to get them."""
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(seed)
    cases = [np.repeat(np.arange(10), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])]
    cases += [rng.integers(0, k, size=n) for k, n in [(2, 40), (3, 101), (7, 333), (10, 1000)]]
    for labels in cases:
        for val, test in [(0.15, 0.15), (0.1, 0.2), (0.25, 0.05)]:
            index = np.arange(len(labels))
            rest, want_test = train_test_split(
                index, test_size=test, stratify=labels, random_state=seed
            )
            want_train, want_val = train_test_split(
                rest, test_size=val / (1 - test), stratify=labels[rest], random_state=seed
            )
            got = stratified_split(labels, val, test, seed)
            np.testing.assert_array_equal(got["train"], np.sort(want_train))
            np.testing.assert_array_equal(got["val"], np.sort(want_val))
            np.testing.assert_array_equal(got["test"], np.sort(want_test))


def test_split_that_cannot_be_stratified_names_the_setting():
    with pytest.raises(DataError, match=r"data\.split.*only 1 image"):
        stratified_split(np.array([0, 0, 0, 1, 1, 1, 2]), 0.2, 0.2, seed=0)
    with pytest.raises(DataError, match=r"data\.split.*cannot hold all 3 classes"):
        stratified_split(np.repeat([0, 1, 2], 4), 0.1, 0.1, seed=0)


def test_demo_digits_are_scikit_learns_and_load_without_importing_it():
    from sklearn.datasets import load_digits

    images, labels = digits()
    bunch = load_digits()
    np.testing.assert_array_equal(images, bunch.images)
    np.testing.assert_array_equal(labels, bunch.target)
    # the data and prepare steps stay clear of scikit-learn and SciPy (seconds of import)
    code = (
        "import sys; from mlproject.pipeline import prepare; "
        "from mlproject.pipeline.data import digits, stratified_split; "
        "stratified_split(digits()[1], 0.15, 0.15, 42); "
        "print(sorted(m for m in ('sklearn', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
