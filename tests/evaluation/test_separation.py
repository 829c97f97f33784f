"""Silhouette of 1-D scores, duplicate ROC-AUC and TPR at 5% FPR, against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve, silhouette_score

from deepssim.evaluation import roc_auc, silhouette_1d, tpr_at_fpr


def _cases() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    scores = rng.normal(labels * 0.3, 0.25)
    rounded = np.round(scores, 1)  # many ties
    return [
        (scores, labels),
        (rounded, labels),
        (np.array([0.1, 0.2, 0.9, 0.95, 0.5]), np.array([0, 0, 2, 2, 1])),  # a class of one
        (np.array([0.3, 0.3, 0.3, 0.7]), np.array([0, 2, 0, 2])),
    ]


@pytest.mark.parametrize("scores,labels", _cases())
def test_equal_to_scikit_learn(scores: np.ndarray, labels: np.ndarray) -> None:
    assert silhouette_1d(scores, labels) == pytest.approx(silhouette_score(scores[:, None], labels), abs=1e-12)
    positive = labels == 2
    assert roc_auc(scores, positive) == pytest.approx(roc_auc_score(positive, scores), abs=1e-12)
    fpr, tpr, _ = roc_curve(positive, scores, drop_intermediate=False)
    for target in (0.0, 0.05, 0.2, 1.0):
        assert tpr_at_fpr(scores, positive, target) == pytest.approx(tpr[fpr <= target].max())


def test_known_values_and_undefined_cases() -> None:
    separated = np.array([0.1, 0.2, 0.8, 0.9])
    assert roc_auc(separated, np.array([0, 0, 1, 1])) == 1.0
    assert roc_auc(separated, np.array([1, 1, 0, 0])) == 0.0
    assert tpr_at_fpr(separated, np.array([0, 0, 1, 1])) == 1.0
    # Two clusters: a = 0.1 for every point, b = 0.75 for the outer points and 0.65 for the inner.
    expected = 1 - 0.1 * (1 / 0.75 + 1 / 0.65) / 2
    assert silhouette_1d(separated, np.array([0, 0, 1, 1])) == pytest.approx(expected, abs=1e-12)
    assert silhouette_1d(separated, np.zeros(4)) is None
    assert roc_auc(separated, np.zeros(4)) is None and tpr_at_fpr(separated, np.ones(4)) is None
    with pytest.raises(ValueError, match="finite"):
        roc_auc(np.array([np.nan, 1.0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="2 scores but 3 labels"):
        silhouette_1d(np.array([0.1, 0.2]), np.array([0, 1, 1]))
