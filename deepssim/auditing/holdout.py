"""Thresholds from the user's own holdout: what a best match of a non-copy scores on this data.

The holdout is real images of the same source that were not in the training set. The audit
scores them against the training set as the synthetic images (same embedding, search,
verification settings and deciding score; with verification every holdout image is verified,
so that the null is on one scale), and their best-match scores, less the holdout images that
are themselves copies of training images, are the null. From it:

- the duplicate threshold at a false-alarm rate ``fpr``: the k-th largest null score with
  ``k = floor(fpr * (n + 1))``, so that a new non-copy scores above it with probability at
  most ``fpr`` (the conformal rank; its empirical rate on the null is at most ``fpr`` too);
  the null must hold ``n >= 1/fpr - 1`` scores, else there is no such rank;
- the similar threshold the same way at the looser rate ``similar_rate(fpr)``;
- the uncertainty of both: the 95% order-statistic interval of the null's ``1 - fpr``
  quantile, and the 95% interval of the threshold's true false-alarm rate, Beta(k, n + 1 - k);
- an empirical p-value for any score, ``(1 + #null >= s) / (1 + n)``: a synthetic image is a
  duplicate by these thresholds exactly when its p-value is at most ``fpr``;
- the excess memorization rate: the synthetic set's duplicate rate minus the null's (its
  expected rate k / (n + 1) when the thresholds were fitted on it), with a hybrid interval.

A holdout image is flagged as a copy of a training image, and left out of the null, when its
content equals a training image's, or when its score is above ``COPY_SCORE`` and a robust
outlier of the holdout's scores (more than ``COPY_ROBUST_Z`` robust standard deviations,
1.4826 MAD, above their median): the same scan twice or a re-export, whatever the fpr.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from ..classes import REFERENCE_THRESHOLDS, Thresholds, calibration_document, newcombe_interval, wilson_interval

if TYPE_CHECKING:
    from .images import ImageSet

SIMILAR_RATE_FACTOR = 10.0
SIMILAR_RATE_MAX = 0.5
"""``similar`` is the looser rate ``min(0.5, 10 * fpr)``: unusually close for a non-copy of
this data, but common enough among non-copies that it is no evidence of copying."""
COPY_SCORE = 0.95
"""A holdout image scoring above it (and a robust outlier) is flagged as a training copy."""
COPY_ROBUST_Z = 3.0
"""Robust standard deviations above the holdout's median score that make a copy an outlier."""
SATURATED = 1.0 - 1e-6
"""A duplicate threshold at or above it leaves no score above it (scores are at most 1)."""
FLOOR = REFERENCE_THRESHOLDS.different_max
"""A duplicate threshold below the reference similar threshold (0.60) gets a warning."""
FEW_ABOVE = 5
"""Fewer null scores than this at or above the threshold: the summary warns that the
threshold is a far-tail estimate with a wide interval."""


def check_fpr(fpr: float) -> float:
    """``fpr`` as a float strictly between 0 and 1.

    Raises:
        ValueError: anything else.
    """
    if isinstance(fpr, bool) or not isinstance(fpr, (int, float)) or not 0.0 < float(fpr) < 1.0:
        raise ValueError(f"fpr must be a number strictly between 0 and 1, got {fpr!r}")
    return float(fpr)


def similar_rate(fpr: float) -> float:
    """The false-alarm rate the ``similar`` threshold is set at (``SIMILAR_RATE_FACTOR``)."""
    return max(fpr, min(SIMILAR_RATE_MAX, SIMILAR_RATE_FACTOR * fpr))


def min_null_size(fpr: float) -> int:
    """The smallest null that has a threshold at ``fpr``: ``floor(fpr * (n + 1)) >= 1``."""
    return max(1, math.ceil(1.0 / fpr - 1.0 - 1e-9))


def check_holdout_size(n: int, fpr: float, flagged: int = 0) -> None:
    """Refuse a null of ``n`` scores (``flagged`` holdout copies already left out) too small
    to hold a threshold at ``fpr``; the audit checks the holdout's image count right after
    the scan, before any training or embedding.

    Raises:
        ValueError: ``n < min_null_size(fpr)``, saying how many it has and needs.
    """
    need = min_null_size(fpr)
    if n < need:
        left = f" ({flagged} flagged as training copies and left out)" if flagged else ""
        raise ValueError(f"--holdout: {n} holdout image(s){left} are too few for --fpr {fpr:g}: "
                         f"a threshold at that rate needs at least {need} (n >= 1/fpr - 1); "
                         "add holdout images or raise --fpr")


def threshold_rank(n: int, fpr: float) -> int:
    """k: the threshold is the k-th largest of ``n`` null scores (0 when there is none)."""
    return int(math.floor(fpr * (n + 1) + 1e-9))


def p_values(null: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Empirical p-value of every score against the null: ``(1 + #null >= s) / (1 + n)``."""
    ordered = np.sort(np.asarray(null, dtype=np.float64))
    s = np.asarray(scores, dtype=np.float64)
    at_or_above = ordered.size - np.searchsorted(ordered, s, side="left")
    return (1.0 + at_or_above) / (1.0 + ordered.size)


def quantile_interval(ordered: np.ndarray, q: float) -> tuple[float | None, float | None]:
    """95% distribution-free interval of the ``q`` quantile from ascending ``ordered``: the
    order statistics (l, u) with Binomial(n, q) mass at least 0.95 between them, 2.5% each
    side; None where the sample cannot bound that side."""
    n = ordered.size
    lo = int(stats.binom.ppf(0.025, n, q))  # P(X(lo) <= quantile) >= 0.975, 1-based rank
    hi = int(stats.binom.ppf(0.975, n, q)) + 1
    return (float(ordered[lo - 1]) if lo >= 1 else None, float(ordered[hi - 1]) if hi <= n else None)


def flag_copies(scores: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Which holdout images are copies of a training image (see the module's rule)."""
    s = np.asarray(scores, dtype=np.float64)
    median = float(np.median(s)) if s.size else 0.0
    spread = max(1.4826 * float(np.median(np.abs(s - median))) if s.size else 0.0, 1e-6)
    return np.asarray(exact, dtype=bool) | ((s > COPY_SCORE) & ((s - median) / spread > COPY_ROBUST_Z))


@dataclass(frozen=True)
class HoldoutCalibration:
    """Thresholds fitted on a holdout's null, with their uncertainty and the copies flagged.

    Attributes:
        thresholds: (similar, duplicate) thresholds at ``similar_fpr`` and ``fpr``.
        scale: ``deepssim`` or ``verified_ssim``: what the null's scores are.
        fpr / similar_fpr: The false-alarm rates asked for.
        n_holdout: Holdout images scored; ``null`` their scores less the flagged copies.
        rank: k, the threshold's rank from the top of the null.
        threshold_ci95: Interval of the null's ``1 - fpr`` quantile (None: unbounded side).
        fpr_ci95: Interval of the threshold's true false-alarm rate.
        false_alarms: Null scores above the duplicate threshold.
        flagged: The flagged copies: ``{"holdout", "train", "score", "reason"}``.
        warnings: Plain sentences for the summary (a far-tail threshold, many copies).
    """

    thresholds: Thresholds
    scale: str
    fpr: float
    similar_fpr: float
    n_holdout: int
    null: np.ndarray = field(repr=False)
    rank: int
    threshold_ci95: tuple[float | None, float | None]
    fpr_ci95: tuple[float, float]
    false_alarms: int
    flagged: list[dict[str, Any]]
    warnings: list[str]
    is_copy: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, bool))
    """Per holdout image (scan order), whether it was flagged."""
    deepssim_null: np.ndarray | None = field(repr=False, default=None)
    """On the ``verified_ssim`` scale: the same images' best DeepSSIM scores, the null of a
    synthetic image that was not verified (its deciding score is a DeepSSIM score)."""

    @property
    def n(self) -> int:
        """The null's size."""
        return int(self.null.size)

    @property
    def expected_false_alarm_rate(self) -> float:
        """k / (n + 1): the duplicate threshold's expected false-alarm rate on a new non-copy
        (exact for continuous scores, at most it with ties). The null's own share above the
        threshold, (k - 1) / n, reads low: the threshold was fitted on those very scores."""
        return self.rank / (self.n + 1)

    @property
    def deepssim_gate(self) -> float | None:
        """On the ``verified_ssim`` scale: the k-th largest DeepSSIM null score. A synthetic
        image whose DeepSSIM score is at most this has a DeepSSIM p-value above ``fpr``; the
        audit verifies every image above it (and above the model's low threshold)."""
        if self.deepssim_null is None or not self.deepssim_null.size:
            return None
        return float(np.sort(self.deepssim_null)[self.deepssim_null.size - self.rank])

    def p_values(self, scores: np.ndarray, unverified: np.ndarray | None = None) -> np.ndarray:
        """Empirical p-values of ``scores`` against the null of their own scale: on the
        ``verified_ssim`` scale, the scores marked ``unverified`` (DeepSSIM scores) against
        ``deepssim_null``, the others against the verified null."""
        out = p_values(self.null, scores)
        if unverified is not None and self.deepssim_null is not None:
            mask = np.asarray(unverified, dtype=bool)
            out[mask] = p_values(self.deepssim_null, np.asarray(scores, dtype=np.float64)[mask])
        return out

    def to_dict(self, sources: Sequence[str] = ()) -> dict[str, Any]:
        """The thresholds file (``classes.calibration_document``, source ``holdout``, criterion
        ``fpr``) with the holdout's own fields."""
        return calibration_document(
            self.thresholds, source="holdout", criterion="fpr", n=self.n, scale=self.scale,
            false_alarm_rate=self.expected_false_alarm_rate, false_alarm_ci95=self.fpr_ci95,
            null_above_threshold=self.false_alarms,
            fpr=self.fpr, similar_fpr=self.similar_fpr, rank=self.rank,
            threshold_ci95=list(self.threshold_ci95), holdout_sources=list(sources),
            n_holdout=self.n_holdout, n_flagged=len(self.flagged), flagged_copies=self.flagged,
            warnings=self.warnings)


def calibrate_holdout(
    scores: np.ndarray, exact: np.ndarray, ids: Sequence[str], matched: Sequence[str], fpr: float,
    *, scale: str = "deepssim", deepssim_scores: np.ndarray | None = None,
) -> HoldoutCalibration:
    """Thresholds at ``fpr`` from the holdout's deciding scores (``scores``; ``exact``: its
    images whose content equals a training image's; ``ids`` and ``matched``: each image and
    its best training match, for the list of flagged copies). On the ``verified_ssim``
    scale, ``deepssim_scores`` are the same images' best DeepSSIM scores (the null of the
    synthetic images that are not verified).

    Raises:
        ValueError: ``fpr`` not in (0, 1), or too few holdout images once the copies are left
            out (fewer than ``min_null_size(fpr)``).
    """
    fpr = check_fpr(fpr)
    s = np.asarray(scores, dtype=np.float64)
    flagged = flag_copies(s, exact)
    null = np.sort(s[~flagged])
    n = null.size
    check_holdout_size(n, fpr, int(flagged.sum()))
    sim_fpr = similar_rate(fpr)
    k, k_sim = threshold_rank(n, fpr), threshold_rank(n, sim_fpr)
    high, low = float(null[n - k]), float(null[n - k_sim])
    copies = [{"holdout": ids[i], "train": matched[i], "score": round(float(s[i]), 6),
               "reason": "identical content" if exact[i] else f"score > {COPY_SCORE} and a robust outlier"}
              for i in np.flatnonzero(flagged)]
    copies.sort(key=lambda c: (-c["score"], c["holdout"]))
    warnings = []
    if k < FEW_ABOVE:
        warnings.append(f"the duplicate threshold is the null's {_ordinal(k)} largest score of {n}: "
                        f"a far-tail estimate (see its interval); {math.ceil(FEW_ABOVE / fpr - 1)} "
                        f"holdout images would put {FEW_ABOVE} above it")
    if flagged.mean() > fpr:
        warnings.append(f"{int(flagged.sum())} of {s.size} holdout images are copies of training images: "
                        "check the split (the same scan twice, re-exports)")
    if high >= SATURATED:
        warnings.append(f"the duplicate threshold is {high:.3f}, the highest score there is: the holdout's "
                        "non-copies score like copies, so the holdout cannot separate copies on this model "
                        "(only byte-identical copies are duplicates)")
    elif high < FLOOR:
        warnings.append(f"the duplicate threshold is {high:.3f}, below the reference similar threshold "
                        f"{FLOOR:.2f}: the holdout's non-copies score so low that weak resemblance counts as "
                        "a copy; the holdout cannot separate copies on this model")
    return HoldoutCalibration(
        thresholds=Thresholds(low, high, source="holdout"), scale=scale, fpr=fpr, similar_fpr=sim_fpr,
        n_holdout=int(s.size), null=null, rank=k, threshold_ci95=quantile_interval(null, 1.0 - fpr),
        fpr_ci95=(float(stats.beta.ppf(0.025, k, n + 1 - k)), float(stats.beta.ppf(0.975, k, n + 1 - k))),
        false_alarms=int((null > high).sum()), flagged=copies, warnings=warnings, is_copy=flagged,
        deepssim_null=None if deepssim_scores is None else np.sort(np.asarray(deepssim_scores, np.float64)[~flagged]))


def excess_rate(synthetic_duplicates: int, n_synthetic: int, null_duplicates: int, n_null: int,
                *, rank: int | None = None) -> dict[str, Any]:
    """The excess memorization rate: the synthetic set's duplicate rate minus the null's, with
    its 95% interval, and the null's rate with its interval.

    The null's rate is ``measured`` (``null_duplicates / n_null``, Wilson interval; Newcombe's
    hybrid interval of the difference) when the thresholds were not fitted on the null. When
    they were (``rank``: the duplicate threshold is the null's ``rank``-th largest score), the
    null's share above its own threshold, (k - 1) / n, is biased low, so its rate is the
    ``expected`` false-alarm rate k / (n + 1) with the Beta(k, n + 1 - k) interval of the true
    rate, combined with the synthetic set's Wilson interval the same hybrid way.
    """
    synth = synthetic_duplicates / n_synthetic if n_synthetic else 0.0
    if rank is None:
        rate, basis = (null_duplicates / n_null if n_null else 0.0), "measured"
        rate_ci = wilson_interval(null_duplicates, n_null)
        excess_ci = newcombe_interval(synthetic_duplicates, n_synthetic, null_duplicates, n_null)
    else:
        rate, basis = rank / (n_null + 1), "expected"
        rate_ci = (float(stats.beta.ppf(0.025, rank, n_null + 1 - rank)),
                   float(stats.beta.ppf(0.975, rank, n_null + 1 - rank)))
        lo, hi = wilson_interval(synthetic_duplicates, n_synthetic)
        d = synth - rate
        excess_ci = (max(-1.0, d - math.hypot(synth - lo, rate_ci[1] - rate)),
                     min(1.0, d + math.hypot(hi - synth, rate - rate_ci[0])))
    return {"holdout_duplicates": int(null_duplicates), "holdout_rate": rate, "holdout_rate_basis": basis,
            "holdout_rate_ci95": list(rate_ci), "excess_memorization_rate": synth - rate,
            "excess_memorization_rate_ci95": list(excess_ci)}


def holdout_summary(
    calibration: HoldoutCalibration, holdout: ImageSet, *, used: bool, synthetic_labels: np.ndarray,
    holdout_labels: np.ndarray,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The summary's ``thresholds.holdout`` entry (the thresholds file, whether it decided,
    and on what scale) and its ``holdout`` entry (the set, its null and the excess
    memorization rate; ``*_labels``: the classes of every synthetic and holdout image as the
    audit decided them)."""
    entry = calibration.to_dict(holdout.sources) | {
        "used": used,
        "applies_to": "verified SSIMs (verification's thresholds)" if calibration.scale == "verified_ssim"
        else "DeepSSIM scores",
    }
    if not used:
        entry["note"] = "thresholds were given (thresholds, calibration file or verification thresholds): they win"
    null_dups = int((np.asarray(holdout_labels)[~calibration.is_copy] == "duplicate").sum())
    synth_dups = int((np.asarray(synthetic_labels) == "duplicate").sum())
    return entry, {
        "sources": holdout.sources, "n_images": len(holdout.ids), "n_null": calibration.n,
        "n_flagged": len(calibration.flagged), "skipped_unreadable": holdout.skipped,
        "p_value": "(1 + #null >= s) / (1 + n) of each synthetic image's deciding score"
                   + (", against the holdout's verified SSIMs where verified, else its DeepSSIM scores"
                      if calibration.deepssim_null is not None else ""),
        **excess_rate(synth_dups, len(synthetic_labels), null_dups, calibration.n,
                      rank=calibration.rank if used else None),
    }


def _ordinal(k: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(k, f"{k}th")
