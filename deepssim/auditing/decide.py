"""From scores to decisions: the two thresholds, the three classes, the memorization rate.

A synthetic image is ``duplicate`` when its best-match score is above the high threshold,
``different`` when it is at or below the low one, ``similar`` in between (the paper's rule,
``score <= 0.60`` different, ``score > 0.85`` duplicate). Thresholds come, in this order of
precedence, from the caller, from a calibration file written by ``deepssim evaluate
--calibrate``, or from the model's own ``config.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

CLASSES = ("different", "similar", "duplicate")
"""The decision classes, from least to most suspicious."""


@dataclass(frozen=True)
class Thresholds:
    """``score <= different_max``: different; ``score > duplicate_min``: duplicate.

    ``source`` says where the values came from (``flags``, ``model``, ``calibration``) and
    ``file`` the calibration file, when there is one.
    """

    different_max: float = 0.60
    duplicate_min: float = 0.85
    source: str = "default"
    file: str | None = None

    def __post_init__(self) -> None:
        lo, hi = self.different_max, self.duplicate_min
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise ValueError(f"thresholds must be finite with low <= high, got {lo}, {hi}")

    @property
    def pair(self) -> tuple[float, float]:
        return (self.different_max, self.duplicate_min)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def parse(cls, text: str) -> Thresholds:
        """``"0.60,0.85"`` (the ``--thresholds`` flag)."""
        parts = [p.strip() for p in text.split(",")]
        try:
            lo, hi = (float(p) for p in parts)
        except ValueError:
            raise ValueError(f"--thresholds takes two numbers LOW,HIGH (e.g. 0.60,0.85), got {text!r}") from None
        return cls(lo, hi, source="flags")

    @classmethod
    def from_file(cls, path: str | Path) -> Thresholds:
        """Thresholds of a calibration JSON file: ``{"thresholds": [LOW, HIGH], ...}``.

        Raises:
            ValueError: the file is missing, not JSON, or has no valid ``thresholds``.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"{path}: calibration file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a JSON calibration file ({exc})") from None
        values = data.get("thresholds") if isinstance(data, dict) else None
        if isinstance(values, dict):
            values = [values.get("different_max"), values.get("duplicate_min")]
        if not (isinstance(values, list) and len(values) == 2
                and all(isinstance(v, (int, float)) for v in values)):
            raise ValueError(f"{path}: expected a 'thresholds' entry [LOW, HIGH]")
        return cls(float(values[0]), float(values[1]), source="calibration", file=str(path))


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
    lo, hi = model_config.get("thresholds", (0.60, 0.85))
    return Thresholds(float(lo), float(hi), source="model")


def classify(scores: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """Class name of each score (object array of ``CLASSES`` entries); NaN is refused."""
    s = np.asarray(scores, dtype=np.float64)
    if np.isnan(s).any():
        raise ValueError("cannot classify NaN scores")
    out = np.full(s.shape, CLASSES[1], dtype=object)
    out[s <= thresholds.different_max] = CLASSES[0]
    out[s > thresholds.duplicate_min] = CLASSES[2]
    return out


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sensible at 0 and n, unlike the normal one)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 and n the bounds are exactly 0 and 1; the formula gives them up to rounding.
    return (0.0 if successes == 0 else centre - half, 1.0 if successes == n else centre + half)
