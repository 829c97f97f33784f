"""Three-class figures of a decision: confusion matrix, per-class and macro / weighted F1,
and a bootstrap interval of the macro F1.

Classes are the indices of ``CLASSES`` (0 different, 1 similar, 2 duplicate). The definitions
are scikit-learn's with ``zero_division=0``: a class never predicted has precision 0, one
never true recall 0, and the macro F1 averages the classes that occur (as true or predicted
labels), so that a subset without, say, any duplicate pair is not marked down for it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..classes import CLASSES, Thresholds, classify

N_CLASSES = len(CLASSES)
DEFAULT_BOOTSTRAP = 1000
BOOTSTRAP_CHUNK = 100
"""Bootstrap resamples drawn at once (memory: chunk x n_pairs indices)."""


@dataclass(frozen=True)
class ClassFigures:
    """Precision, recall, F1 and support (true pairs) of one class."""

    precision: float
    recall: float
    f1: float
    support: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def predict(scores: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """Class index (int64) of each score under ``thresholds`` (the audit's rule)."""
    names = classify(scores, thresholds)
    lookup = {name: k for k, name in enumerate(CLASSES)}
    return np.array([lookup[n] for n in names.ravel()], dtype=np.int64).reshape(names.shape)


def _check(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(true, dtype=np.int64).ravel(), np.asarray(pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"{t.size} true labels but {p.size} predictions")
    for name, arr in (("true", t), ("predicted", p)):
        if arr.size and (arr.min() < 0 or arr.max() >= N_CLASSES):
            raise ValueError(f"{name} labels must be class indices 0..{N_CLASSES - 1}")
    return t, p


def confusion_matrix(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(3, 3) int64 counts: rows true class, columns predicted class, in ``CLASSES`` order."""
    t, p = _check(true, pred)
    return np.bincount(t * N_CLASSES + p, minlength=N_CLASSES**2).reshape(N_CLASSES, N_CLASSES)


def _f1_parts(conf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1, support of each class of confusion matrices (..., 3, 3)."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    predicted = conf.sum(axis=-2)
    support = conf.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denom = predicted + support
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
    return precision, recall, f1, support


def macro_f1_of(conf: np.ndarray) -> np.ndarray:
    """Macro F1 of confusion matrices (..., 3, 3), over the classes that occur in each."""
    _, _, f1, _ = _f1_parts(conf)
    conf = np.asarray(conf)
    occurs = (conf.sum(axis=-1) + conf.sum(axis=-2)) > 0
    return (f1 * occurs).sum(axis=-1) / np.maximum(occurs.sum(axis=-1), 1)


def per_class(conf: np.ndarray) -> dict[str, ClassFigures]:
    """Figures of each class of one confusion matrix, by class name."""
    precision, recall, f1, support = _f1_parts(conf)
    return {name: ClassFigures(float(precision[k]), float(recall[k]), float(f1[k]), int(support[k]))
            for k, name in enumerate(CLASSES)}


def weighted_f1_of(conf: np.ndarray) -> float:
    """F1 of each class weighted by its support (true pairs)."""
    _, _, f1, support = _f1_parts(conf)
    total = support.sum()
    return float((f1 * support).sum() / total) if total > 0 else 0.0


def bootstrap_macro_f1(
    true: np.ndarray, pred: np.ndarray, *, n_resamples: int = DEFAULT_BOOTSTRAP, seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the macro F1, resampling pairs with replacement.

    Deterministic given ``seed``.
    """
    t, p = _check(true, pred)
    if not t.size:
        raise ValueError("no pairs to bootstrap")
    if n_resamples < 1 or not 0 < level < 1:
        raise ValueError(f"need n_resamples >= 1 and 0 < level < 1, got {n_resamples}, {level}")
    rng = np.random.default_rng(seed)
    codes = t * N_CLASSES + p
    values = []
    for start in range(0, n_resamples, BOOTSTRAP_CHUNK):
        n = min(BOOTSTRAP_CHUNK, n_resamples - start)
        drawn = codes[rng.integers(0, codes.size, size=(n, codes.size))]
        offsets = np.arange(n)[:, None] * N_CLASSES**2
        counts = np.bincount((drawn + offsets).ravel(), minlength=n * N_CLASSES**2)
        values.append(macro_f1_of(counts.reshape(n, N_CLASSES, N_CLASSES)))
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(np.concatenate(values), [alpha, 1.0 - alpha])
    return float(lo), float(hi)
