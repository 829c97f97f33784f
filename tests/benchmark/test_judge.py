"""Judging an audit against a benchmark's oracle, and the threshold that maximises copy F1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepssim.benchmark import AuditTruth
from deepssim.benchmark.judge import best_duplicate_threshold, folder_id, judge_audit


def test_precision_recall_and_top1(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    for name, data in [("a.png", b"A"), ("b.png", b"B"), ("a2.png", b"A"), ("c.png", b"C")]:
        (tmp_path / "train" / name).write_bytes(data)
    truth = [
        AuditTruth("synthetic/s1.png", "train/a.png", 0.95, True),
        AuditTruth("synthetic/s2.png", "train/b.png", 0.90, True, also_nearest=("train/c.png",)),
        AuditTruth("synthetic/s3.png", "train/c.png", 0.40, False),
        AuditTruth("synthetic/s4.png", "train/b.png", 0.88, True),
    ]
    decisions = [
        ("s1.png", "a2.png", "duplicate"),   # byte-identical to the oracle's answer: right
        ("s2.png", "c.png", "duplicate"),    # tied with the oracle's answer: right
        ("s3.png", "c.png", "duplicate"),    # a false flag
        ("s4.png", "a.png", "similar"),      # a missed copy, wrong source
    ]
    got = judge_audit(decisions, truth, tmp_path)
    assert (got.n_synthetic, got.n_copies, got.n_flagged, got.true_positives) == (4, 3, 3, 2)
    assert got.precision == pytest.approx(2 / 3) and got.recall == pytest.approx(2 / 3)
    assert got.f1 == pytest.approx(2 / 3)
    assert (got.top1_correct, got.top1_accuracy) == (2, pytest.approx(2 / 3))
    assert got.top1_group_correct == 2  # no train.csv: no groups
    with pytest.raises(ValueError, match="s4.png.*not in the audit"):
        judge_audit(decisions[:3], truth, tmp_path)


def test_top1_within_the_sources_group(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    for name in ("a.png", "a-mirrored.png", "b.png"):
        (tmp_path / "train" / name).write_bytes(name.encode())
    (tmp_path / "train.csv").write_text("train,origin_id,group\ntrain/a.png,a.jpg,7\n"
                                        "train/a-mirrored.png,a-m.jpg,7\ntrain/b.png,b.jpg,8\n")
    truth = [AuditTruth("synthetic/s1.png", "train/a.png", 0.95, True),
             AuditTruth("synthetic/s2.png", "train/a.png", 0.92, True)]
    got = judge_audit([("s1.png", "a-mirrored.png", "duplicate"), ("s2.png", "b.png", "duplicate")],
                      truth, tmp_path)
    assert (got.top1_correct, got.top1_group_correct) == (0, 1)
    assert got.top1_group_accuracy == pytest.approx(0.5)


def test_best_threshold_separates_and_matches_brute_force() -> None:
    scores = np.array([0.95, 0.91, 0.88, 0.86, 0.80, 0.70, 0.30])
    copies = np.array([True, True, False, True, False, False, False])
    t, f1 = best_duplicate_threshold(scores, copies)
    assert 0.80 < t < 0.86 and f1 == pytest.approx(2 * 3 / (4 + 3))
    rng = np.random.default_rng(0)
    s = rng.random(200)
    y = rng.random(200) < s  # higher scores are more often copies
    t, f1 = best_duplicate_threshold(s, y)
    brute = max(2 * ((s > c) & y).sum() / ((s > c).sum() + y.sum()) for c in np.append(s, -1.0))
    assert f1 == pytest.approx(brute)
    with pytest.raises(ValueError, match="as many"):
        best_duplicate_threshold(s, y[:5])


def test_folder_id() -> None:
    assert folder_id("synthetic/a/b.png") == "a/b.png" and folder_id("x.png") == "x.png"
