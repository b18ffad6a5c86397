"""Base | head PNGs from the plots declared in dvc.yaml, in a small git repository (no DVC)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import yaml

from mlproject.report.plots import declared_plots, render_plots

from conftest import run

DVC_YAML = {
    "plots": [
        {
            "Loss": {
                "template": "linear",
                "x": "step",
                "y": {"train/loss.tsv": "loss", "val/loss.tsv": "loss"},
            }
        },
        {
            "Per-class F1": {
                "template": "bar_horizontal_sorted",
                "x": "f1",
                "y": {"classes.csv": "class"},
            }
        },
        {
            "Confusion matrix": {
                "template": "confusion",
                "x": "actual",
                "y": {"predictions.csv": "predicted"},
            }
        },
        "maps/attributions.png",
    ]
}


def png(value: float) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    plt.imsave(buf, np.full((8, 8), value), format="png", vmin=0, vmax=1)
    return buf.getvalue()


def write(repo: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


@pytest.fixture
def repo(tmp_path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    run(["git", "init", "-q", "-b", "main"], repo)
    write(
        repo,
        {
            "dvc.yaml": yaml.safe_dump(DVC_YAML, sort_keys=False),
            "train/loss.tsv": "step\tloss\n0\t1.0\n1\t0.5\n",
            "val/loss.tsv": "step\tloss\n0\t1.1\n1\t0.7\n",
            "predictions.csv": "actual,predicted\n0,0\n1,1\n1,0\n",
            "maps/attributions.png": png(0.2),
        },
    )
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "--allow-empty", "-m", "base"], repo)
    # The head: longer curves, a per-class file the base did not have, a new image.
    write(
        repo,
        {
            "train/loss.tsv": "step\tloss\n0\t1.0\n1\t0.4\n2\t0.2\n",
            "classes.csv": "class,f1\n0,0.9\n1,0.8\n",
            "maps/attributions.png": png(0.8),
        },
    )
    return repo


def test_declared_plots_are_read_from_dvc_yaml(repo):
    plots = declared_plots(repo)
    assert [p["template"] for p in plots] == [
        "linear",
        "bar_horizontal_sorted",
        "confusion",
        "image",
    ]
    assert plots[0]["y"] == {"train/loss.tsv": ["loss"], "val/loss.tsv": ["loss"]}
    assert plots[3]["file"] == "maps/attributions.png"


def test_every_declared_plot_becomes_a_base_head_png(repo, tmp_path):
    out = tmp_path / "out"
    images = render_plots("HEAD", out, {"old": "(base)", "new": "(head)"}, repo)
    assert [i["title"] for i in images] == [
        "Loss",
        "Per-class F1",
        "Confusion matrix",
        "attributions",
    ]
    for image in images:
        data = (out / image["image"]).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 2000


def test_a_plot_with_no_data_on_either_side_is_left_out(repo, tmp_path):
    (repo / "predictions.csv").unlink()
    run(["git", "rm", "-q", "--cached", "predictions.csv"], repo)
    run(["git", "commit", "-q", "--allow-empty", "-m", "no predictions"], repo)
    images = render_plots("HEAD", tmp_path / "out", {"old": "", "new": ""}, repo)
    assert "Confusion matrix" not in [i["title"] for i in images]


def halves(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The left (base) and right (head) halves of a rendered PNG, as RGB floats in [0, 1]."""
    import matplotlib.image as mpimg

    pixels = mpimg.imread(path)[..., :3]
    middle = pixels.shape[1] // 2
    return pixels[:, :middle], pixels[:, middle:]


def share_near(pixels: np.ndarray, rgb: tuple[float, float, float], tol: float = 0.04) -> float:
    """The share of pixels within `tol` of the colour `rgb` on every channel."""
    return float(np.mean(np.all(np.abs(pixels - np.asarray(rgb)) < tol, axis=-1)))


def test_both_panels_are_drawn_base_left_head_right(repo, tmp_path):
    """Not just a PNG: the base's data is drawn in the left panel, the head's in the right,
    and a side without data shows its placeholder, not the other side's data."""
    from matplotlib import cm, colors

    out = tmp_path / "out"
    images = {
        i["title"]: out / i["image"]
        for i in render_plots("HEAD", out, {"old": "(base)", "new": "(head)"}, repo)
    }
    line = colors.to_rgb("tab:blue")  # the first curve and the bars are drawn in it

    base, head = halves(images["Loss"])  # both sides have curves
    assert share_near(base, line) > 0.002 and share_near(head, line) > 0.002

    base, head = halves(images["Per-class F1"])  # classes.csv exists only at head
    assert share_near(base, line) == 0.0  # "not at base", no bars
    assert share_near(head, line) > 0.01

    base, head = halves(images["attributions"])  # png(0.2) at base, png(0.8) at head
    low, high = cm.viridis(0.2)[:3], cm.viridis(0.8)[:3]
    assert share_near(base, low) > 0.01 and share_near(base, high) == 0.0
    assert share_near(head, high) > 0.01 and share_near(head, low) == 0.0
