"""The three classes, their thresholds and the memorization-rate interval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deepssim.classes import Thresholds, class_of, classify, newcombe_interval, wilson_interval


def test_classes_follow_the_papers_rule() -> None:
    t = Thresholds(0.60, 0.85)
    got = classify(np.array([-0.2, 0.60, 0.600001, 0.85, 0.850001, 1.0]), t)
    assert got.tolist() == ["different", "different", "similar", "similar", "duplicate", "duplicate"]
    with pytest.raises(ValueError, match="NaN"):
        classify(np.array([0.5, np.nan]), t)
    assert [class_of(v) for v in (0.60, 0.600001, 0.850001)] == ["different", "similar", "duplicate"]


@pytest.mark.parametrize("text", ["0.6", "a,b", "0.9,0.6", "0.1,0.2,0.3", "nan,0.5"])
def test_bad_threshold_flags(text: str) -> None:
    with pytest.raises(ValueError):
        Thresholds.parse(text)


def test_bad_calibration_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        Thresholds.from_file(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=f"{bad}: not a JSON"):
        Thresholds.from_file(bad)
    bad.write_text(json.dumps({"thresholds": [0.5]}))
    with pytest.raises(ValueError, match="thresholds"):
        Thresholds.from_file(bad)


def test_wilson_interval_known_values() -> None:
    # Reference values: statsmodels proportion_confint(method="wilson").
    lo, hi = wilson_interval(10, 100)
    assert lo == pytest.approx(0.05522914, abs=1e-6) and hi == pytest.approx(0.17436566, abs=1e-6)
    lo, hi = wilson_interval(0, 50)
    assert lo == 0.0 and hi == pytest.approx(0.07134759, abs=1e-6)
    assert wilson_interval(50, 50)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_newcombe_interval_matches_the_published_examples() -> None:
    """Newcombe (1998), Statistics in Medicine 17:873, table II, method 10."""
    assert newcombe_interval(56, 70, 48, 80) == pytest.approx((0.0524, 0.3339), abs=1e-4)
    assert newcombe_interval(9, 10, 3, 10) == pytest.approx((0.1705, 0.8090), abs=1e-4)
    assert newcombe_interval(0, 10, 0, 20) == pytest.approx((-0.1611, 0.2775), abs=1e-4)
