"""Confusion matrix, per-class and macro / weighted F1, bootstrap interval, against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import f1_score, precision_recall_fscore_support

from deepssim.classes import Thresholds
from deepssim.evaluation import (
    bootstrap_macro_f1,
    confusion_matrix,
    macro_f1_of,
    per_class,
    predict,
    weighted_f1_of,
)

LABELS = [0, 1, 2]


def _cases() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    true = rng.integers(0, 3, 200)
    noisy = np.where(rng.random(200) < 0.7, true, rng.integers(0, 3, 200))
    return [
        (true, noisy),
        (np.array([0, 0, 1, 1, 2, 2, 2]), np.array([0, 1, 1, 1, 2, 0, 2])),
        (np.array([0, 0, 1, 2, 2]), np.array([0, 0, 0, 2, 2])),  # "similar" never predicted
        (np.array([0, 0, 0, 2]), np.array([0, 1, 0, 2])),  # "similar" never true
        (np.array([0, 1, 2]), np.array([0, 1, 2])),
        (np.array([0, 0, 2, 2]), np.array([0, 0, 2, 0])),  # "similar" neither true nor predicted
    ]


@pytest.mark.parametrize("true,pred", _cases())
def test_figures_equal_scikit_learn(true: np.ndarray, pred: np.ndarray) -> None:
    conf = confusion_matrix(true, pred)
    np.testing.assert_array_equal(conf, sk_confusion(true, pred, labels=LABELS))
    p, r, f, s = precision_recall_fscore_support(true, pred, labels=LABELS, zero_division=0)
    figures = per_class(conf)
    assert list(figures) == ["different", "similar", "duplicate"]
    for k, fig in enumerate(figures.values()):
        assert (fig.precision, fig.recall, fig.f1, fig.support) == pytest.approx((p[k], r[k], f[k], s[k]))
    assert macro_f1_of(conf) == pytest.approx(f1_score(true, pred, average="macro", zero_division=0))
    assert weighted_f1_of(conf) == pytest.approx(
        f1_score(true, pred, labels=LABELS, average="weighted", zero_division=0))


def test_predict_uses_the_audit_rule() -> None:
    scores = np.array([0.1, 0.6, 0.6001, 0.85, 0.8501, 1.0])
    np.testing.assert_array_equal(predict(scores, Thresholds()), [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(predict(scores, Thresholds(0.05, 0.95)), [1, 1, 1, 1, 1, 2])
    with pytest.raises(ValueError, match="NaN"):
        predict(np.array([np.nan]), Thresholds())


def test_bootstrap_interval() -> None:
    true, pred = _cases()[0]
    point = macro_f1_of(confusion_matrix(true, pred))
    lo, hi = bootstrap_macro_f1(true, pred, n_resamples=500, seed=3)
    assert (lo, hi) == bootstrap_macro_f1(true, pred, n_resamples=500, seed=3)  # seeded
    assert (lo, hi) != bootstrap_macro_f1(true, pred, n_resamples=500, seed=4)
    assert lo < point < hi and 0.05 < hi - lo < 0.25
    # The same interval, up to resampling noise, as a plain loop with scikit-learn.
    rng = np.random.default_rng(11)
    values = []
    for _ in range(500):
        idx = rng.integers(0, true.size, true.size)
        values.append(f1_score(true[idx], pred[idx], average="macro", zero_division=0))
    ref_lo, ref_hi = np.quantile(values, [0.025, 0.975])
    assert lo == pytest.approx(ref_lo, abs=0.03) and hi == pytest.approx(ref_hi, abs=0.03)
    # More pairs, a narrower interval; a perfect decision, no interval at all.
    big_lo, big_hi = bootstrap_macro_f1(np.tile(true, 9), np.tile(pred, 9), n_resamples=300)
    assert big_hi - big_lo < (hi - lo) / 2
    assert bootstrap_macro_f1(true, true, n_resamples=50) == (1.0, 1.0)


def test_bad_labels_are_refused() -> None:
    with pytest.raises(ValueError, match="3 true labels but 2 predictions"):
        confusion_matrix(np.array([0, 1, 2]), np.array([0, 1]))
    with pytest.raises(ValueError, match="class indices 0..2"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]))
    with pytest.raises(ValueError, match="no pairs"):
        bootstrap_macro_f1(np.array([], int), np.array([], int))
