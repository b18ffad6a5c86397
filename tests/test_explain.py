"""Attribution maps for reviewers: Integrated Gradients (Captum) on fixed test images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mlproject.core.io import read_json
from mlproject.kinds.images.explain import attribute, pick_samples


def test_integrated_gradients_of_a_linear_model_is_weight_times_input():
    torch.manual_seed(0)
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3, bias=False))
    x = torch.rand(2, 1, 2, 2) * 255
    attributions, predicted, confidence, delta = attribute(linear, x, n_steps=16)
    weights = linear[1].weight.detach().numpy()[predicted]  # [N, 4]
    expected = weights * x.reshape(2, 4).numpy()
    np.testing.assert_allclose(attributions.reshape(2, 4), expected, rtol=1e-4, atol=1e-3)
    assert np.all(np.abs(delta) < 1e-3)  # completeness: attributions sum to f(x) - f(0)
    assert np.all((confidence > 0) & (confidence <= 1))


def test_samples_are_the_first_image_of_each_class():
    labels = np.array([2, 0, 1, 0, 2, 1])
    assert pick_samples(labels).tolist() == [1, 2, 0]
    assert pick_samples(labels, max_samples=2).tolist() == [1, 2]


@pytest.mark.slow
def test_explain_stage_writes_the_image_and_summary(pipeline_repo):
    summary = read_json(pipeline_repo / "reports/explain/attributions.json")
    card = read_json(pipeline_repo / "models/model_card.json")
    samples = summary["samples"]
    assert [s["actual"] for s in samples] == card["classes"]  # one per class, in class order
    assert summary["method"] == "captum.attr.IntegratedGradients"
    with Image.open(pipeline_repo / "reports/explain/attributions.png") as image:
        assert image.width > 100 * len(samples) // 2
    # The stage's model classifies most of these easy images right.
    assert sum(s["actual"] == s["predicted"] for s in samples) >= len(samples) - 2
