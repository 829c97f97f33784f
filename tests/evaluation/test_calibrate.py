"""Threshold calibration: the grid optimum against a brute force with scikit-learn, the
operating point, and the JSON file that the audit reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from deepssim.auditing.decide import resolve_thresholds
from deepssim.classes import Thresholds
from deepssim.evaluation import calibrate, predict
from deepssim.classes import candidate_cuts


def _overlapping(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    return np.round(rng.normal(labels * 0.25 + 0.3, 0.12), 3), labels


def _sk_macro(scores: np.ndarray, labels: np.ndarray, lo: float, hi: float) -> float:
    pred = predict(scores, Thresholds(lo, hi))
    return f1_score(labels, pred, average="macro", zero_division=0)


def test_grid_optimum_equals_a_brute_force_with_scikit_learn() -> None:
    scores, labels = _overlapping()
    result = calibrate(scores, labels, target_precision=None)
    lo, hi = result.thresholds.pair
    assert lo <= hi and result.thresholds.source == "calibration"
    assert result.macro_f1 == pytest.approx(_sk_macro(scores, labels, lo, hi), abs=1e-12)
    cuts = candidate_cuts(scores)
    best = max(_sk_macro(scores, labels, a, b) for i, a in enumerate(cuts) for b in cuts[i:])
    assert result.macro_f1 == pytest.approx(best, abs=1e-12)
    # Any threshold pair can do no better: cuts between distinct scores cover every rule.
    rng = np.random.default_rng(1)
    for a, b in np.sort(rng.uniform(0, 1, (200, 2)), axis=1):
        assert _sk_macro(scores, labels, a, b) <= result.macro_f1 + 1e-12
    assert result.n_pairs == 40 and sum(result.class_counts.values()) == 40


def test_separable_classes_get_perfect_thresholds() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.5, 0.55, 0.9, 0.95])
    labels = np.array([0, 0, 0, 1, 1, 2, 2])
    result = calibrate(scores, labels)
    assert result.macro_f1 == 1.0
    assert result.thresholds.pair == pytest.approx((0.4, 0.725))  # midpoints of the gaps
    point = result.operating_point
    assert point is not None and (point.precision, point.recall) == (1.0, 1.0)
    assert point.duplicate_min == pytest.approx(0.725)


def test_operating_point_is_the_best_recall_at_the_target_precision() -> None:
    scores, labels = _overlapping(120, seed=2)
    result = calibrate(scores, labels, target_precision=0.8)
    point = result.operating_point
    assert point is not None and point.target_precision == 0.8
    positive = labels == 2
    flagged = scores > point.duplicate_min
    assert point.precision == pytest.approx(precision_score(positive, flagged))
    assert point.recall == pytest.approx(recall_score(positive, flagged))
    assert point.precision >= 0.8
    feasible = [recall_score(positive, scores > t) for t in candidate_cuts(scores)
                if (scores > t).any() and precision_score(positive, scores > t) >= 0.8]
    assert point.recall == pytest.approx(max(feasible))
    unreachable = calibrate(np.array([0.1, 0.9, 0.9]), np.array([0, 2, 0]), target_precision=0.99)
    assert unreachable.operating_point is None


def test_saved_file_is_read_by_the_audit(tmp_path: Path) -> None:
    scores, labels = _overlapping()
    result = calibrate(scores, labels, metric="deepssim", condition="perturbed", pairs_file="val.csv")
    path = result.save(tmp_path / "cal" / "calibration.json")
    data = json.loads(path.read_text())
    assert data["thresholds"] == list(result.thresholds.pair)
    assert data["metric"] == "deepssim" and data["condition"] == "perturbed" and data["n_pairs"] == 40
    # The format shared with an audit's holdout thresholds.
    assert (data["format"], data["source"], data["criterion"], data["scale"], data["n"]) == \
        ("deepssim-thresholds/1", "pairs", "macro_f1", "deepssim", 40)
    negatives = scores[labels != 2]
    rate = float((negatives > result.thresholds.duplicate_min).mean())
    assert data["false_alarm_rate"] == pytest.approx(rate)
    assert data["false_alarm_ci95"][0] <= rate <= data["false_alarm_ci95"][1]
    read = Thresholds.from_file(path)
    assert read.pair == result.thresholds.pair and read.source == "calibration"
    assert resolve_thresholds(None, path, {"thresholds": [0.6, 0.85]}).pair == result.thresholds.pair


def test_other_metrics_record_their_scale_and_the_audit_refuses_them(tmp_path: Path) -> None:
    scores, labels = _overlapping()
    for metric in ("l2", "ssim", "registered-ssim"):
        path = calibrate(scores, labels, metric=metric).save(tmp_path / f"{metric}.json")
        assert json.loads(path.read_text())["scale"] == metric
        with pytest.raises(ValueError, match=rf"{metric}\.json: its thresholds are on the '{metric}' scale"):
            resolve_thresholds(None, path, {})
    assert json.loads(calibrate(scores, labels).save(tmp_path / "none.json").read_text())["scale"] == "deepssim"


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="as many scores as labels"):
        calibrate(np.array([0.1, 0.2]), np.array([0]))
    with pytest.raises(ValueError, match="finite"):
        calibrate(np.array([0.1, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match="class indices"):
        calibrate(np.array([0.1, 0.2]), np.array([0, 5]))
    with pytest.raises(ValueError, match="target precision"):
        calibrate(np.array([0.1, 0.2]), np.array([0, 2]), target_precision=1.5)
