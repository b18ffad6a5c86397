"""Attribution maps of images (the images kind's side of stage `explain`): what the model looks at.

For a fixed set of test images (the first of each class in the test split, so the same images on
every run and in every PR), Captum's Integrated Gradients attributes the predicted class's logit to
the input pixels, from a black image as baseline. Writes reports/explain/attributions.png (inputs
above their attribution maps; red pushes towards the prediction, blue away) and
reports/explain/attributions.json (per sample: actual, predicted, confidence, convergence delta).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...core.io import atomic_dir, write_json
from ...pipeline.data import load_split

# Integration steps of Integrated Gradients: more steps, smaller convergence delta.
N_STEPS = 64
MAX_SAMPLES = 10


def pick_samples(labels: np.ndarray, max_samples: int = MAX_SAMPLES) -> np.ndarray:
    """Index of the first test image of each class (in class order), at most max_samples; for
    numeric targets (regression), images spread evenly from the lowest target to the highest."""
    if np.issubdtype(labels.dtype, np.floating):
        order = np.argsort(labels, kind="stable")
        picks = np.unique(np.linspace(0, len(order) - 1, min(max_samples, len(order))).round())
        return order[picks.astype(np.int64)].astype(np.int64)
    firsts = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)]
    return np.array(firsts[:max_samples], dtype=np.int64)


def attribute(
    model: torch.nn.Module, pixels: torch.Tensor, n_steps: int = N_STEPS
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Integrated Gradients of the predicted logit (or a regression model's one output) w.r.t.
    the pixels (0..255 float).

    Returns attributions [N, C, H, W], the predicted class (or value), the softmax confidence
    (NaN for one output) and the convergence delta.
    """
    from captum.attr import IntegratedGradients

    x = pixels.float()
    with torch.no_grad():
        outputs = model(x)
    if outputs.shape[1] == 1:  # a number, not logits: attribute the prediction itself
        target = torch.zeros(len(x), dtype=torch.int64)
        predicted, confidence = outputs[:, 0], torch.full((len(x),), float("nan"))
    else:
        probs = torch.softmax(outputs, dim=1)
        target = predicted = probs.argmax(1)
        confidence = probs.gather(1, predicted[:, None])[:, 0]
    ig = IntegratedGradients(model)
    attributions, delta = ig.attribute(
        x,
        baselines=torch.zeros_like(x),
        target=target,
        n_steps=n_steps,
        return_convergence_delta=True,
    )
    return (
        attributions.detach().numpy(),
        predicted.numpy(),
        confidence.numpy(),
        delta.detach().numpy(),
    )


def plot(
    pixels: np.ndarray,
    attributions: np.ndarray,
    titles: list[str],
    path: Path,
    target: str = "predicted class",
) -> None:
    """Inputs above their attribution maps, at most 5 samples a row (reads well side by side)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(pixels)
    cols = min(n, 5)
    rows = -(-n // cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(1.4 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    for i in range(n):
        top, bottom = axes[2 * (i // cols), i % cols], axes[2 * (i // cols) + 1, i % cols]
        image = pixels[i].transpose(1, 2, 0)
        top.imshow(image[:, :, 0] if image.shape[2] == 1 else image, cmap="gray", vmin=0, vmax=255)
        attr = attributions[i].sum(axis=0)  # over channels
        bound = float(np.abs(attr).max()) or 1.0
        bottom.imshow(attr, cmap="bwr", vmin=-bound, vmax=bound)
        top.set_title(titles[i], fontsize=7)
    fig.suptitle(f"Integrated Gradients of the {target}\n(red: for it, blue: against)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def explain(
    model: torch.nn.Module, payload: dict[str, Any], prepared: Path, out_dir: Path
) -> dict[str, Any]:
    from .modules import Normalizer

    classes, spec = payload["classes"], payload["input"]
    x, y = load_split(prepared, "test")
    index = pick_samples(y)
    pipeline = torch.nn.Sequential(Normalizer(spec["mean"], spec["std"]), model).eval()
    attributions, predicted, confidence, delta = attribute(pipeline, torch.from_numpy(x[index]))

    def name(value) -> Any:  # a class name, or a regression model's number
        return classes[int(value)] if classes else round(float(value), 6)

    samples = [
        {
            "test_index": int(i),
            "actual": name(y[i]),
            "predicted": name(p),
            **({"confidence": round(float(c), 6)} if classes else {}),
            "convergence_delta": round(float(d), 6),
        }
        for i, p, c, d in zip(index, predicted, confidence, delta, strict=True)
    ]
    summary = {
        "method": "captum.attr.IntegratedGradients",
        "target": "predicted class" if classes else "predicted value",
        "baseline": "black image",
        "n_steps": N_STEPS,
        "image": "attributions.png",
        "samples": samples,
    }
    titles = [
        f"{s['actual']} -> {s['predicted']}\n{s['confidence']:.2f}"
        if classes
        else f"{s['actual']:.3g} -> {s['predicted']:.3g}"
        for s in samples
    ]
    with atomic_dir(out_dir) as tmp:
        plot(x[index], attributions, titles, tmp / "attributions.png", summary["target"])
        write_json(tmp / "attributions.json", summary)
    return summary


def describe(summary: dict[str, Any]) -> str:
    samples = summary["samples"]
    if summary["target"] == "predicted value":
        error = float(np.mean([abs(s["actual"] - s["predicted"]) for s in samples]))
        what = f"mean absolute error {error:.4g}"
    else:
        what = f"{sum(s['actual'] != s['predicted'] for s in samples)} misclassified"
    return f"{len(samples)} test images, {what}; Integrated Gradients, {N_STEPS} steps"
