"""Paired tests shared by the tasks' significance checks. numpy only: the report job has no
scipy (tests check these against scipy.stats)."""

from __future__ import annotations

import csv
import io
import math

import numpy as np

ALPHA = 0.05
RESAMPLES = 2000
SEED = 0
# Wilcoxon's exact null distribution is used up to this many paired items (scipy's `auto`).
EXACT_MAX_N = 50


class NotComparable(ValueError):
    """Base and head predictions do not cover the same test items."""


def read_columns(text: str, source: str) -> tuple[list[str], list[str]]:
    """(actual, predicted) columns of a predictions CSV (reports/eval/predictions.csv)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and not {"actual", "predicted"} <= set(rows[0]):
        raise NotComparable(f"{source}: expected columns 'actual' and 'predicted'.")
    return [r["actual"] for r in rows], [r["predicted"] for r in rows]


def check_lengths(actual, base_pred, head_pred) -> None:
    if not (len(actual) == len(base_pred) == len(head_pred)) or not len(actual):
        raise NotComparable(
            f"base has {len(base_pred)} predictions, head {len(head_pred)}, "
            f"test set {len(actual)}: not the same test items."
        )


def bootstrap_samples(n: int, resamples: int, seed: int, chunk: int = 100):
    """Seeded resamples of item indices [chunk, n], `resamples` rows in all, a chunk at a time
    so that memory stays bounded on a large test split; same seed, same samples."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < resamples:
        size = min(chunk, resamples - done)
        yield rng.integers(0, n, size=(size, n))
        done += size


def _ranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks (1-based) of values, and the size of each group of ties."""
    uniq, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    average = ends - (counts - 1) / 2.0
    return average[inverse], counts


def _exact_counts(n: int) -> np.ndarray:
    """Number of subsets of {1..n} with each rank sum 0..n(n+1)/2 (Wilcoxon's null)."""
    top = n * (n + 1) // 2
    counts = np.zeros(top + 1, dtype=np.int64)
    counts[0] = 1
    for k in range(1, n + 1):
        counts[k:] = counts[k:] + counts[: top + 1 - k].copy()
    return counts


def wilcoxon(d: np.ndarray) -> tuple[float, float, str]:
    """Two-sided Wilcoxon signed-rank test of paired differences d: (statistic, p-value, method).

    As scipy.stats.wilcoxon with its defaults (zero_method="wilcox": zero differences are
    dropped; no continuity correction): the exact null distribution when there are at most
    EXACT_MAX_N differences, no ties and no zeros; otherwise the normal approximation with the
    tie correction (where scipy would run a permutation test for n <= 13 with ties, this stays
    with the normal approximation). No non-zero difference: p = 1.
    """
    d = np.asarray(d, dtype=np.float64)
    zeros = int(np.sum(d == 0))
    nz = d[d != 0]
    n = len(nz)
    if n == 0:
        return 0.0, 1.0, "no differences"
    ranks, ties = _ranks(np.abs(nz))
    r_plus, r_minus = float(ranks[nz > 0].sum()), float(ranks[nz < 0].sum())
    statistic = min(r_plus, r_minus)
    has_ties = bool(np.any(ties > 1))
    if len(d) <= EXACT_MAX_N and not has_ties and not zeros:
        counts = _exact_counts(n)
        total = float(2**n)
        k = int(round(r_plus))
        cdf = float(counts[: k + 1].sum()) / total
        sf = float(counts[k:].sum()) / total
        return statistic, min(1.0, 2 * min(cdf, sf)), "exact"
    mean = n * (n + 1) / 4.0
    var = (n * (n + 1) * (2 * n + 1) - float(np.sum(ties**3 - ties)) / 2.0) / 24.0
    if var <= 0:
        return statistic, 1.0, "normal approximation"
    z = (r_plus - mean) / math.sqrt(var)
    return statistic, min(1.0, math.erfc(abs(z) / math.sqrt(2.0))), "normal approximation"
