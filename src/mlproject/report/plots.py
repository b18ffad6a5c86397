"""Base | head PNGs of the plots declared at the top of dvc.yaml, rendered offline (matplotlib).

`linear`-style plots become line charts of each `y` file's field against `x`; `scatter*` plots
points (with the line a perfect model lies on: y = x for `predicted` against `actual`, y = 0 for
`residual`); `bar_horizontal*`
bars of the `x` value per `y` category; the `confusion` template a confusion matrix counted from
the `x` (actual) and `y` (predicted) columns; an image declared as a plot
(`- reports/explain/attributions.png`) is shown as it is. Base data is read with `git show <base>:<file>` (plot data is git-tracked), or from the rebuilt
base's worktree when the report rebuilt it; a file missing at the base leaves that panel marked
"not at base".
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .diff import git_show, git_show_bytes

Reader = Callable[[str], "str | None"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg", ".gif")


def declared_plots(cwd: str | Path = ".") -> list[dict[str, Any]]:
    """[{title, template, x, y: {file: [fields]}}] from dvc.yaml's top-level `plots:`."""
    path = Path(cwd) / "dvc.yaml"
    doc = yaml.safe_load(path.read_text()) if path.is_file() else {}
    out = []
    for entry in (doc or {}).get("plots") or []:
        if isinstance(entry, str):
            entry = {entry: None}
        if not isinstance(entry, dict):
            continue
        for title, spec in entry.items():
            if Path(str(title)).suffix.lower() in IMAGE_SUFFIXES:
                # An image plot (a PNG a stage wrote): shown as it is, base | head.
                out.append(
                    {
                        "title": Path(str(title)).stem.replace("_", " "),
                        "template": "image",
                        "file": str(title),
                    }
                )
                continue
            spec = spec or {}
            y = spec.get("y")
            if not isinstance(y, dict):
                continue
            fields = {f: (v if isinstance(v, list) else [v]) for f, v in y.items()}
            out.append(
                {
                    "title": str(title),
                    "template": spec.get("template", "linear"),
                    "x": spec.get("x", "step"),
                    "y": fields,
                    "x_label": spec.get("x_label"),
                    "y_label": spec.get("y_label"),
                }
            )
    return out


def _rows(text: str | None, file: str) -> list[dict[str, str]] | None:
    if text is None:
        return None
    if file.endswith(".json"):
        import json

        data = json.loads(text)
        return data if isinstance(data, list) else None
    dialect = "excel-tab" if file.endswith(".tsv") else "excel"
    return list(csv.DictReader(io.StringIO(text), dialect=dialect))


def _series(plot: dict[str, Any], read: Reader) -> list[tuple[str, list[float], list[float]]]:
    series = []
    files = list(plot["y"])
    parents = [Path(f).parent.name for f in files]
    for file, fields in plot["y"].items():
        rows = _rows(read(file), file)
        if not rows:
            continue
        label = Path(file).parent.name if len(set(parents)) == len(parents) else file
        for field in fields:
            try:
                xs = [float(r[plot["x"]]) for r in rows]
                ys = [float(r[field]) for r in rows]
            except (KeyError, ValueError):
                continue
            series.append((label if len(fields) == 1 else f"{label} {field}", xs, ys))
    return series


def _confusion(plot: dict[str, Any], read: Reader) -> tuple[list[str], list[list[int]]] | None:
    ((file, fields),) = list(plot["y"].items())[:1]
    rows = _rows(read(file), file)
    if not rows:
        return None
    actual, predicted = plot["x"], fields[0]
    labels = sorted(
        {r[actual] for r in rows} | {r[predicted] for r in rows},
        key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s),
    )
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for r in rows:
        matrix[index[r[actual]]][index[r[predicted]]] += 1
    return labels, matrix


def _bars(plot: dict[str, Any], read: Reader) -> tuple[list[str], list[float]] | None:
    """Categories (the `y` field) and their values (the `x` field) for a horizontal bar plot."""
    ((file, fields),) = list(plot["y"].items())[:1]
    rows = _rows(read(file), file)
    if not rows:
        return None
    try:
        return [str(r[fields[0]]) for r in rows], [float(r[plot["x"]]) for r in rows]
    except (KeyError, ValueError):
        return None


def _image_panel(ax, data: bytes | None, missing: str) -> None:
    import io as _io

    import matplotlib.image as mpimg

    ax.set_xticks([])
    ax.set_yticks([])
    if data is None:
        ax.text(0.5, 0.5, missing, ha="center", va="center", transform=ax.transAxes, color="gray")
        return
    ax.imshow(mpimg.imread(_io.BytesIO(data), format="png"))


def render_image_plot(
    plot: dict[str, Any],
    read_base: Callable[[str], bytes | None],
    cwd: Path,
    names: dict[str, str],
    out: Path,
) -> bool:
    """An image a stage wrote, base | head, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    head_path = cwd / plot["file"]
    sides = {
        "old": read_base(plot["file"]),
        "new": head_path.read_bytes() if head_path.is_file() else None,
    }
    if not any(sides.values()):
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), constrained_layout=True)
    for ax, side in zip(axes, ("old", "new"), strict=True):
        ax.set_title(f"{'base' if side == 'old' else 'head'} {names[side]}", fontsize=10)
        _image_panel(ax, sides[side], "not at base" if side == "old" else "missing")
    fig.suptitle(plot["title"], fontsize=11)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return True


def _fields(plot: dict[str, Any]) -> str:
    return ", ".join(f for fields in plot["y"].values() for f in fields)


def _reference_line(ax, plot: dict[str, Any], content) -> None:
    """What a perfect model draws: y = x for predicted against actual, y = 0 for residuals."""
    fields = _fields(plot)
    if fields == "residual":
        ax.axhline(0.0, color="gray", linewidth=1, linestyle="--")
    elif plot["x"] == "actual" and fields == "predicted":
        values = [v for _, xs, ys in content for v in (*xs, *ys)]
        low, high = min(values), max(values)
        ax.plot([low, high], [low, high], color="gray", linewidth=1, linestyle="--")


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "plot"


def render_plot(
    plot: dict[str, Any], readers: dict[str, Reader], names: dict[str, str], out: Path
) -> bool:
    """Draw one plot as base | head panels into `out`; False when neither side has data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = plot["template"] == "confusion"
    bars = str(plot["template"]).startswith("bar_horizontal")
    scatter = str(plot["template"]).startswith("scatter")
    load = _confusion if confusion else _bars if bars else _series
    data = {side: load(plot, read) for side, read in readers.items()}
    if not any(data.values()):
        return False
    fig, axes = plt.subplots(
        1,
        2,
        figsize=(10, 4.6) if confusion else (10, 3.6),
        sharey=not confusion,
        sharex=bars or scatter,
        constrained_layout=True,
    )
    for ax, side in zip(axes, ("old", "new"), strict=True):
        ax.set_title(f"{'base' if side == 'old' else 'head'} {names[side]}", fontsize=10)
        content = data[side]
        if not content:
            ax.text(
                0.5,
                0.5,
                "not at base" if side == "old" else "missing",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="gray",
            )
            ax.set_xticks([])
            ax.set_yticks([])
        elif confusion:
            labels, matrix = content
            ax.imshow(matrix, cmap="Blues")
            ax.set_xticks(range(len(labels)), labels, fontsize=7)
            ax.set_yticks(range(len(labels)), labels, fontsize=7)
            ax.set_xlabel(plot["y"] and list(plot["y"].values())[0][0])
            ax.set_ylabel(plot["x"])
            peak = max(max(row) for row in matrix) or 1
            for i, row in enumerate(matrix):
                for j, count in enumerate(row):
                    if count:
                        ax.text(
                            j,
                            i,
                            str(count),
                            ha="center",
                            va="center",
                            fontsize=6,
                            color="white" if count > peak / 2 else "black",
                        )
        elif bars:
            categories, values = content
            if plot["template"].endswith("sorted"):
                pairs = sorted(zip(categories, values, strict=True), key=lambda cv: cv[1])
                categories, values = [c for c, _ in pairs], [v for _, v in pairs]
            ax.barh(list(categories), list(values), color="tab:blue")
            ax.set_xlabel(plot.get("x_label") or plot["x"])
            ax.set_xlim(min(0.0, *values), max(values) * 1.02 if max(values) > 0 else 1)
            ax.grid(alpha=0.3, axis="x")
        elif scatter:
            for label, xs, ys in content:
                ax.scatter(xs, ys, s=8, alpha=0.6, label=label)
            _reference_line(ax, plot, content)
            ax.set_xlabel(plot.get("x_label") or plot["x"])
            ax.set_ylabel(plot.get("y_label") or _fields(plot))
            ax.grid(alpha=0.3)
        else:
            for label, xs, ys in content:
                ax.plot(xs, ys, label=label, linewidth=1.4)
            ax.set_xlabel(plot.get("x_label") or plot["x"])
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(plot["title"], fontsize=11)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return True


def render_plots(
    base: str,
    out_dir: str | Path,
    names: dict[str, str],
    cwd: str | Path = ".",
    read_base: Reader | None = None,
    read_base_bytes: Callable[[str], bytes | None] | None = None,
) -> list[dict[str, str]]:
    """Render every declared plot into out_dir/plots/; [{title, image (relative to out_dir)}].
    The base's files come from `read_base` / `read_base_bytes` (default: git at `base`)."""
    cwd, out_dir = Path(cwd), Path(out_dir)
    base_bytes = read_base_bytes or (lambda f: git_show_bytes(base, f, cwd))
    readers: dict[str, Reader] = {
        "old": read_base or (lambda f: git_show(base, f, cwd)),
        "new": lambda f: (cwd / f).read_text() if (cwd / f).is_file() else None,
    }
    images = []
    for plot in declared_plots(cwd):
        rel = f"plots/{slug(plot['title'])}.png"
        if plot["template"] == "image":
            drawn = plot["file"].lower().endswith(".png") and render_image_plot(
                plot, base_bytes, cwd, names, out_dir / rel
            )
        else:
            drawn = render_plot(plot, readers, names, out_dir / rel)
        if drawn:
            images.append({"title": plot["title"], "image": rel})
    return images
