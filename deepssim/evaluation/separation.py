"""How well scores separate the classes, whatever the thresholds: silhouette of the 1-D
scores, duplicate-vs-rest ROC-AUC and the true-positive rate at a false-positive rate.

All three equal scikit-learn's (``silhouette_score`` on the scores as a column,
``roc_auc_score``, and the best TPR among ``roc_curve`` points with FPR <= the target) and
are None where those are undefined (a single class).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def _as_1d(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return s, y


def _sum_abs_diff(x: np.ndarray, sorted_values: np.ndarray, prefix: np.ndarray) -> np.ndarray:
    """sum_j |x_i - v_j| for each x_i, with v sorted and ``prefix`` its cumulative sums (0-led)."""
    k = np.searchsorted(sorted_values, x, side="left")
    below = x * k - prefix[k]
    above = (prefix[-1] - prefix[k]) - x * (sorted_values.size - k)
    return below + above


def silhouette_1d(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Mean silhouette of the scores as 1-D points grouped by label (Euclidean distance).

    Exact in O(n log n) with sorted prefix sums instead of the n x n distance matrix.
    None unless there are 2..n-1 distinct labels.
    """
    s, y = _as_1d(scores, labels)
    classes = np.unique(y)
    if not 2 <= classes.size <= s.size - 1:
        return None
    mean_dist = np.empty((classes.size, s.size))
    sizes = np.empty(classes.size)
    for c, cls in enumerate(classes):
        values = np.sort(s[y == cls])
        prefix = np.concatenate([[0.0], np.cumsum(values)])
        mean_dist[c] = _sum_abs_diff(s, values, prefix)
        sizes[c] = values.size
    own = np.searchsorted(classes, y)
    n_own = sizes[own]
    # a(i): mean distance to the other members of its class (itself contributes 0).
    a = np.where(n_own > 1, mean_dist[own, np.arange(s.size)] / np.maximum(n_own - 1, 1), 0.0)
    other = mean_dist / sizes[:, None]
    other[own, np.arange(s.size)] = np.inf
    b = other.min(axis=0)
    denom = np.maximum(a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        sil = np.where(denom > 0, (b - a) / denom, 0.0)
    sil[n_own == 1] = 0.0  # scikit-learn: a point alone in its class scores 0
    return float(sil.mean())


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve of ``scores`` for the boolean ``positive`` (ties count one
    half, as the Mann-Whitney statistic). None without both positives and negatives."""
    s, pos = _as_1d(scores, positive)
    pos = pos.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return None
    ranks = rankdata(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def tpr_at_fpr(scores: np.ndarray, positive: np.ndarray, fpr: float = 0.05) -> float | None:
    """The highest true-positive rate of a rule ``score >= t`` whose false-positive rate is at
    most ``fpr``. None without both positives and negatives."""
    if not 0 <= fpr <= 1:
        raise ValueError(f"fpr must be in [0, 1], got {fpr}")
    s, pos = _as_1d(scores, positive)
    pos = pos.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return None
    order = np.argsort(-s, kind="stable")
    s_sorted, pos_sorted = s[order], pos[order]
    tp, fp = np.cumsum(pos_sorted), np.cumsum(~pos_sorted)
    # Only the last item of a run of equal scores is a reachable threshold.
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    tpr, fpr_curve = tp[last] / n_pos, fp[last] / n_neg
    ok = fpr_curve <= fpr + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0
