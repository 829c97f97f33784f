"""The audit's decision: the thresholds it decides with, and the class of every pair.

Thresholds come, in this order of precedence, from the caller, from a calibration file written
by ``deepssim evaluate --calibrate``, or from the model's own ``config.json``; the classes and
their rule are ``deepssim.classes``. A verified pair is classed by its verified SSIM, with the
verification's own thresholds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..classes import REFERENCE_THRESHOLDS, Thresholds, classify


def resolve_thresholds(
    thresholds: Thresholds | tuple[float, float] | str | None,
    calibration: str | Path | None,
    model_config: dict[str, Any],
    what: str = "--thresholds",
) -> Thresholds:
    """The thresholds an audit uses: explicit ones, else a calibration file, else the model's;
    ``what`` names the setting in error messages."""
    if thresholds is not None and calibration is not None:
        raise ValueError("give thresholds or a calibration file, not both")
    if isinstance(thresholds, Thresholds):
        return thresholds
    if isinstance(thresholds, str):
        return Thresholds.parse(thresholds, what)
    if thresholds is not None:
        lo, hi = thresholds
        return Thresholds(float(lo), float(hi), source="flags")
    if calibration is not None:
        return Thresholds.from_file(calibration)
    lo, hi = model_config.get("thresholds", REFERENCE_THRESHOLDS.pair)
    return Thresholds(float(lo), float(hi), source="model")


def classify_pairs(scores: np.ndarray, verified: np.ndarray, thresholds: Thresholds,
                   verified_thresholds: Thresholds) -> np.ndarray:
    """The class of every pair: by its verified SSIM with ``verified_thresholds`` where
    verified (finite), else by its DeepSSIM score with ``thresholds``."""
    labels = classify(scores, thresholds)
    checked = np.isfinite(verified)
    labels[checked] = classify(verified[checked], verified_thresholds)
    return labels
