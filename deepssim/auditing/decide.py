"""The audit's decision: the thresholds it decides with, and the class of every pair.

Thresholds come, in this order of precedence, from the caller, from a calibration file (written
by ``deepssim evaluate --calibrate`` or by an audit with a holdout), from the holdout
(``holdout.py``), or from the model's own ``config.json``; the classes and their rule are
``deepssim.classes``. A verified pair is classed by its verified SSIM, with the verification's
own thresholds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..classes import REFERENCE_THRESHOLDS, SCALES, Thresholds, classify, read_calibration


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
        return Thresholds(float(lo), float(hi), source="given")
    if calibration is not None:
        return audit_calibration(calibration)[0]
    lo, hi = model_config.get("thresholds", REFERENCE_THRESHOLDS.pair)
    return Thresholds(float(lo), float(hi), source="model")


def audit_calibration(path: str | Path) -> tuple[Thresholds, str]:
    """A calibration file's thresholds and scale, refused when an audit cannot apply them
    (fitted on another metric's scores)."""
    values, scale = read_calibration(path)
    if scale not in SCALES:
        raise ValueError(f"{path}: its thresholds are on the {scale!r} scale, not DeepSSIM scores or verified "
                         f"SSIMs: an audit can apply only {' or '.join(SCALES)} thresholds")
    return values, scale


def audit_thresholds(
    thresholds: Thresholds | tuple[float, float] | str | None,
    calibration: str | Path | None,
    model_config: dict[str, Any],
    verifying: bool,
    verify_thresholds: Thresholds | None = None,
) -> tuple[Thresholds, Thresholds | None]:
    """The DeepSSIM thresholds an audit decides with, and the verified-SSIM thresholds a
    calibration file sets (else None): as ``resolve_thresholds``, except that a file fitted
    on verified SSIMs (scale ``verified_ssim``, written by an audit with a holdout and
    verification) sets the verification's thresholds, and the DeepSSIM ones stay the model's.

    Raises:
        ValueError: as ``resolve_thresholds``; or such a file without verification, or with
            verification thresholds given (``verify_thresholds``) that it would override.
    """
    if calibration is None or thresholds is not None:
        return resolve_thresholds(thresholds, calibration, model_config), None
    values, scale = audit_calibration(calibration)
    if scale == "deepssim":
        return values, None
    if not verifying:
        raise ValueError(f"{calibration}: its thresholds apply to verified SSIMs (an audit with "
                         "verification wrote it): audit with --verify K to use it")
    if verify_thresholds is not None:
        raise ValueError(f"{calibration}: its thresholds apply to verified SSIMs, and --verify-thresholds "
                         "were given too: give one or the other")
    return resolve_thresholds(None, None, model_config), values


def classify_pairs(scores: np.ndarray, verified: np.ndarray, thresholds: Thresholds,
                   verified_thresholds: Thresholds) -> np.ndarray:
    """The class of every pair: by its verified SSIM with ``verified_thresholds`` where
    verified (finite), else by its DeepSSIM score with ``thresholds``."""
    labels = classify(scores, thresholds)
    checked = np.isfinite(verified)
    labels[checked] = classify(verified[checked], verified_thresholds)
    return labels
