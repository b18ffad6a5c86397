"""The evaluate stage's numpy metrics equal scikit-learn's (which the stage no longer imports)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mlproject.tasks import classification

from conftest import ENV, ROOT


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_sklearn_including_absent_and_never_predicted_classes(seed):
    # Imported here, not at collection: every xdist worker collects every module (2-3 s each).
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(seed)
    k = 6
    y = rng.integers(0, k - 1, 200)  # class 5 never occurs
    pred = np.where(rng.random(200) < 0.7, y, rng.integers(0, k, 200))
    pred[pred == 3] = 2  # class 3 never predicted
    classes = [f"c{i}" for i in range(k)]
    summary, per_class = classification.per_class_metrics(y, pred, classes)
    p, r, f1, support = precision_recall_fscore_support(
        y, pred, labels=list(range(k)), zero_division=0
    )
    assert summary["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-15)
    assert summary["f1_macro"] == pytest.approx(f1.mean(), abs=1e-15)
    assert summary["precision_macro"] == pytest.approx(p.mean(), abs=1e-15)
    assert summary["recall_macro"] == pytest.approx(r.mean(), abs=1e-15)
    assert [per_class[c]["support"] for c in classes] == support.tolist()
    assert per_class["c3"]["precision"] == 0.0 and per_class["c5"]["recall"] == 0.0
    assert np.array_equal(
        classification.confusion_matrix(y, pred, k), confusion_matrix(y, pred, labels=range(k))
    )


@pytest.mark.slow  # new interpreters that import torch: seconds
def test_pinned_torch_is_deterministic_without_importing_inductor():
    code = (
        "import sys\n"
        "from mlproject.pipeline.determinism import read_pinning, pin_environment, pin_torch\n"
        "p = read_pinning(); pin_environment(p); pin_torch(p)\n"
        "import torch\n"
        "assert torch.are_deterministic_algorithms_enabled()\n"
        "assert 'torch._inductor.config' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, check=True)
