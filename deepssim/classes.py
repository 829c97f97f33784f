"""The three classes of a memorization audit and the thresholds that separate them.

A pair (or a synthetic image, by its best match) is ``duplicate`` when its score is above the
high threshold, ``different`` when it is at or below the low one, and ``similar`` in between.
The reference values are the paper's, stated on the reference SSIM: ``<= 0.60`` different,
``> 0.85`` duplicate. Every stage that decides, labels or calibrates uses these definitions.
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

COLOURS = {"duplicate": "#c62828", "similar": "#e69b00", "different": "#8a8f98"}
"""The colour of each class in histograms and reports."""

SIMILAR_THRESHOLD = 0.60
"""Reference SSIM above which a pair is at least ``similar``."""
DUPLICATE_THRESHOLD = 0.85
"""Reference SSIM above which a pair is a ``duplicate`` (and a synthetic image a copy)."""


@dataclass(frozen=True)
class Thresholds:
    """``score <= different_max``: different; ``score > duplicate_min``: duplicate.

    ``source`` says where the values came from (``given``, ``model``, ``calibration``,
    ``holdout``, ``reference``) and ``file`` the calibration file, when there is one.
    """

    different_max: float = SIMILAR_THRESHOLD
    duplicate_min: float = DUPLICATE_THRESHOLD
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
    def parse(cls, text: str, what: str | None = None) -> Thresholds:
        """``"0.60,0.85"``; ``what`` names the setting in the error message."""
        parts = [p.strip() for p in text.split(",")]
        try:
            lo, hi = (float(p) for p in parts)
        except ValueError:
            lead = f"{what} takes" if what else "expected"
            raise ValueError(f"{lead} two numbers LOW,HIGH (e.g. 0.60,0.85), got {text!r}") from None
        return cls(lo, hi, source="given")

    @classmethod
    def from_file(cls, path: str | Path) -> Thresholds:
        """Thresholds of a calibration JSON file: ``{"thresholds": [LOW, HIGH], ...}``
        (``read_calibration``).

        Raises:
            ValueError: the file is missing, not JSON, or has no valid ``thresholds``.
        """
        return read_calibration(path)[0]

    @classmethod
    def from_value(cls, values: object, *, source: str, file: str | None = None) -> Thresholds:
        """Thresholds recorded in a JSON file: ``[LOW, HIGH]`` or ``{"different_max": LOW,
        "duplicate_min": HIGH}``.

        Raises:
            ValueError: not two finite numbers with LOW <= HIGH (the caller names the file).
        """
        if isinstance(values, dict):
            values = [values.get("different_max"), values.get("duplicate_min")]
        if not (isinstance(values, list) and len(values) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
            raise ValueError(f"expected [LOW, HIGH], two numbers, got {values!r}")
        return cls(float(values[0]), float(values[1]), source=source, file=file)


REFERENCE_THRESHOLDS = Thresholds(SIMILAR_THRESHOLD, DUPLICATE_THRESHOLD, source="reference")
"""The paper's thresholds, on the reference SSIM."""


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


def newcombe_interval(successes1: int, n1: int, successes2: int, n2: int,
                      z: float = 1.959963984540054) -> tuple[float, float]:
    """95% interval of the difference of two independent proportions ``s1/n1 - s2/n2``:
    Newcombe's hybrid score interval, built from the two Wilson intervals (his method 10)."""
    p1 = successes1 / n1 if n1 > 0 else 0.0
    p2 = successes2 / n2 if n2 > 0 else 0.0
    l1, u1 = wilson_interval(successes1, n1, z)
    l2, u2 = wilson_interval(successes2, n2, z)
    d = p1 - p2
    return (max(-1.0, d - math.hypot(p1 - l1, u2 - p2)), min(1.0, d + math.hypot(u1 - p1, p2 - l2)))


def class_of(value: float, thresholds: Thresholds = REFERENCE_THRESHOLDS) -> str:
    """The class of one score (by default a reference SSIM against the reference thresholds)."""
    return str(classify(np.asarray([value]), thresholds)[0])


MAX_CANDIDATES = 512
"""Cut candidates at most (a calibration's search costs candidates^2 / 2 evaluations)."""


def candidate_cuts(scores: np.ndarray, max_candidates: int = MAX_CANDIDATES) -> np.ndarray:
    """Sorted cut candidates: midpoints of consecutive distinct scores and one cut outside
    each end; quantiles of the scores when there would be more than ``max_candidates``."""
    values = np.unique(np.asarray(scores, dtype=np.float64))
    if not values.size:
        raise ValueError("no scores to calibrate on")
    if values.size + 1 > max_candidates:
        values = np.unique(np.quantile(values, np.linspace(0, 1, max_candidates - 1)))
    span = max(float(values[-1] - values[0]), 1e-6)
    inner = (values[1:] + values[:-1]) / 2
    return np.concatenate([[values[0] - 0.01 * span], inner, [values[-1] + 0.01 * span]])


CALIBRATION_FORMAT = "deepssim-thresholds/1"
"""The ``format`` of a thresholds file fitted on data: by ``deepssim evaluate --calibrate``
(on labelled pairs) and by an audit with a holdout (``thresholds.json``)."""
SCALES = ("deepssim", "verified_ssim")
"""The scales an audit applies a thresholds file to: DeepSSIM scores, or verified SSIMs (an
audit with verification). A file fitted on another metric's scores records that metric's name
as its scale (``evaluate --metric l2 --save-calibration``) and an audit refuses it."""


def calibration_document(
    thresholds: Thresholds, *, source: str, criterion: str, n: int, false_alarm_rate: float | None,
    false_alarm_ci95: tuple[float, float] | list[float] | None, scale: str = "deepssim", **details: Any,
) -> dict[str, Any]:
    """The JSON document of thresholds fitted on data, the one format both writers share.

    Fields: ``format``, ``thresholds`` [LOW, HIGH], ``scale`` (``SCALES``, or the name of the
    metric whose scores they cut), ``source``
    (``pairs``: labelled benchmark pairs; ``holdout``: an audit's holdout), ``criterion``
    (``macro_f1`` or ``fpr``), ``n`` (scores fitted on: pairs, or the holdout's null),
    ``false_alarm_rate`` (share of the non-copies it was fitted on scoring above the high
    threshold) with ``false_alarm_ci95``, then the writer's own ``details``.
    """
    if not isinstance(scale, str) or not scale:
        raise ValueError(f"scale must be a scale or metric name, got {scale!r}")
    return {
        "format": CALIBRATION_FORMAT,
        "thresholds": [thresholds.different_max, thresholds.duplicate_min],
        "scale": scale,
        "source": source,
        "criterion": criterion,
        "n": int(n),
        "false_alarm_rate": false_alarm_rate,
        "false_alarm_ci95": None if false_alarm_ci95 is None else [float(v) for v in false_alarm_ci95],
        **details,
    }


def read_calibration(path: str | Path) -> tuple[Thresholds, str]:
    """The thresholds of a calibration JSON file and the scale they apply to (``SCALES``, or
    another metric's name; ``deepssim`` for files without one, as older ``evaluate
    --save-calibration`` wrote).

    Raises:
        ValueError: the file is missing, not JSON, or has no valid ``thresholds`` or ``scale``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: calibration file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a JSON calibration file ({exc})") from None
    if not (isinstance(data, dict) and "thresholds" in data):
        raise ValueError(f"{path}: expected a 'thresholds' entry [LOW, HIGH]")
    try:
        thresholds = Thresholds.from_value(data["thresholds"], source="calibration", file=str(path))
    except ValueError as exc:
        raise ValueError(f"{path}: thresholds: {exc}") from None
    scale = data.get("scale", SCALES[0])
    if not isinstance(scale, str):
        raise ValueError(f"{path}: 'scale' must be a name such as {SCALES[0]!r}, not {scale!r}")
    return thresholds, scale
