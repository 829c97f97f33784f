"""The thresholds an audit decides with: given by the caller, a calibration file, or the model.

Thresholds come, in this order of precedence, from the caller, from a calibration file written
by ``deepssim evaluate --calibrate``, or from the model's own ``config.json``; the classes and
their rule are ``deepssim.classes``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..classes import REFERENCE_THRESHOLDS, Thresholds


def resolve_thresholds(
    thresholds: Thresholds | tuple[float, float] | str | None,
    calibration: str | Path | None,
    model_config: dict[str, Any],
) -> Thresholds:
    """The thresholds an audit uses: explicit ones, else a calibration file, else the model's."""
    if thresholds is not None and calibration is not None:
        raise ValueError("give thresholds or a calibration file, not both")
    if isinstance(thresholds, Thresholds):
        return thresholds
    if isinstance(thresholds, str):
        return Thresholds.parse(thresholds)
    if thresholds is not None:
        lo, hi = thresholds
        return Thresholds(float(lo), float(hi), source="flags")
    if calibration is not None:
        return Thresholds.from_file(calibration)
    lo, hi = model_config.get("thresholds", REFERENCE_THRESHOLDS.pair)
    return Thresholds(float(lo), float(hi), source="model")
