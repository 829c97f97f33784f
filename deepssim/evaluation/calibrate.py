"""Calibrated thresholds: the two cuts that maximise the macro F1 on validation pairs.

The search is exhaustive over candidate cuts: the midpoints between consecutive distinct
scores (plus one below the lowest and one above the highest, so a class may be left empty),
thinned to ``MAX_CANDIDATES`` quantiles on large sets. Every pair ``low <= high`` of
candidates is scored at once from per-class cumulative counts. The result also carries an
operating point for a target precision of ``duplicate``: the lowest high cut whose duplicate
precision reaches the target, i.e. the best duplicate recall at that precision.

``Calibration.save`` writes the thresholds file format shared with an audit's holdout
(``classes.calibration_document``: ``thresholds`` [LOW, HIGH], source ``pairs``, criterion
``macro_f1``, ``n``, the false-alarm rate of the high cut on the non-duplicate pairs with its
Wilson interval), the file that ``deepssim audit --calibration`` (``Thresholds.from_file``) reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..classes import CLASSES, MAX_CANDIDATES, Thresholds, calibration_document, candidate_cuts, wilson_interval
from ..storage import atomic_write_bytes
from .classification import N_CLASSES, macro_f1_of

DEFAULT_TARGET_PRECISION = 0.95
DUPLICATE = CLASSES.index("duplicate")


@dataclass(frozen=True)
class OperatingPoint:
    """A high cut (``score > duplicate_min`` is duplicate) with its duplicate precision and
    recall on the calibration pairs, chosen for ``target_precision``."""

    target_precision: float
    duplicate_min: float
    precision: float
    recall: float

    def to_dict(self) -> dict[str, float]:
        return dict(vars(self))


@dataclass(frozen=True)
class Calibration:
    """Thresholds found on validation pairs, with what they achieved there."""

    thresholds: Thresholds
    macro_f1: float
    n_pairs: int
    operating_point: OperatingPoint | None = None
    metric: str | None = None
    condition: str | None = None
    pairs_file: str | None = None
    class_counts: dict[str, int] = field(default_factory=dict)
    false_alarms: int = 0
    """Pairs whose true class is not duplicate that score above the high cut."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (``classes.calibration_document``): ``thresholds`` as [LOW, HIGH],
        the shared fields, then the provenance."""
        negatives = self.n_pairs - self.class_counts.get("duplicate", 0)
        rate = self.false_alarms / negatives if negatives else None
        return calibration_document(
            self.thresholds, source="pairs", criterion="macro_f1", n=self.n_pairs, false_alarm_rate=rate,
            scale=calibration_scale(self.metric),
            false_alarm_ci95=wilson_interval(self.false_alarms, negatives) if negatives else None,
            metric=self.metric, condition=self.condition, pairs_file=self.pairs_file, n_pairs=self.n_pairs,
            class_counts=self.class_counts, macro_f1=self.macro_f1,
            duplicate_operating_point=self.operating_point.to_dict() if self.operating_point else None)

    def save(self, path: str | Path) -> Path:
        """Write the JSON document atomically; ``Thresholds.from_file`` reads it."""
        path = Path(path)
        atomic_write_bytes(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode())
        return path


def _counts_at_or_below(scores: np.ndarray, labels: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """(3, C): pairs of each true class with score <= each cut."""
    out = np.empty((N_CLASSES, cuts.size), dtype=np.int64)
    for k in range(N_CLASSES):
        out[k] = np.searchsorted(np.sort(scores[labels == k]), cuts, side="right")
    return out


def _operating_point(scores: np.ndarray, labels: np.ndarray, cuts: np.ndarray, target: float
                     ) -> OperatingPoint | None:
    positive = labels == DUPLICATE
    if not positive.any():
        return None
    above_pos = positive.sum() - np.searchsorted(np.sort(scores[positive]), cuts, side="right")
    above_all = scores.size - np.searchsorted(np.sort(scores), cuts, side="right")
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(above_all > 0, above_pos / above_all, np.nan)
    ok = np.flatnonzero(precision >= target)
    if not ok.size:
        return None
    k = int(ok[0])  # cuts ascend: the lowest cut that reaches the target recalls the most
    return OperatingPoint(target, float(cuts[k]), float(precision[k]), float(above_pos[k] / positive.sum()))


def calibration_scale(metric: str | None) -> str:
    """The ``scale`` a thresholds file fitted on ``metric``'s scores records: ``deepssim`` for
    DeepSSIM (or no metric named), else the metric's name, which an audit refuses to apply."""
    return "deepssim" if metric in (None, "deepssim") else str(metric)


def calibrate(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    target_precision: float | None = DEFAULT_TARGET_PRECISION,
    max_candidates: int = MAX_CANDIDATES,
    metric: str | None = None,
    condition: str | None = None,
    pairs_file: str | Path | None = None,
) -> Calibration:
    """The thresholds (low <= high) of best macro F1 on ``scores`` with true ``labels``
    (class indices of ``CLASSES``). Ties go to the lowest low cut, then the lowest high cut.

    Raises:
        ValueError: empty or mismatched input, non-finite scores, labels outside 0..2.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.int64).ravel()
    if s.shape != y.shape or not s.size:
        raise ValueError(f"calibration needs as many scores as labels (>= 1), got {s.size} and {y.size}")
    if not np.isfinite(s).all():
        raise ValueError("calibration scores must be finite")
    if y.min() < 0 or y.max() >= N_CLASSES:
        raise ValueError(f"labels must be class indices 0..{N_CLASSES - 1}")
    if target_precision is not None and not 0 < target_precision <= 1:
        raise ValueError(f"target precision must be in (0, 1], got {target_precision}")
    cuts = candidate_cuts(s, max_candidates)
    le = _counts_at_or_below(s, y, cuts)
    total = np.bincount(y, minlength=N_CLASSES)
    # conf[i, j, true, pred] for low cut i and high cut j: different = <= low, duplicate = > high.
    n_diff = le[:, :, None]
    n_dup = total[:, None, None] - le[:, None, :]
    n_sim = le[:, None, :] - le[:, :, None]
    conf = np.stack(np.broadcast_arrays(n_diff, n_sim, n_dup), axis=-1)  # (3, C, C, 3)
    f1 = macro_f1_of(np.moveaxis(conf, 0, 2))  # (C, C)
    f1[np.tril_indices(cuts.size, -1)] = -1.0  # low > high is not a rule
    i, j = np.unravel_index(int(np.argmax(f1)), f1.shape)
    point = None if target_precision is None else _operating_point(s, y, cuts, target_precision)
    return Calibration(
        thresholds=Thresholds(float(cuts[i]), float(cuts[j]), source="calibration"),
        macro_f1=float(f1[i, j]),
        n_pairs=int(s.size),
        operating_point=point,
        metric=metric,
        condition=condition,
        pairs_file=None if pairs_file is None else str(pairs_file),
        class_counts={name: int(c) for name, c in zip(CLASSES, total)},
        false_alarms=int(((s > cuts[j]) & (y != DUPLICATE)).sum()),
    )
