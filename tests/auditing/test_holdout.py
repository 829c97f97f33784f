"""Thresholds, p-values and the excess rate from a holdout: the statistics on drawn scores,
then the audit and the command on tiny images with a tiny random model."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage, stats

from deepssim.auditing import audit
from deepssim.auditing.decide import audit_thresholds
from deepssim.auditing.holdout import (
    calibrate_holdout,
    excess_rate,
    flag_copies,
    min_null_size,
    p_values,
    similar_rate,
    threshold_rank,
)
from deepssim.classes import CALIBRATION_FORMAT, Thresholds, read_calibration


def _ids(n: int, stem: str = "h") -> list[str]:
    return [f"{stem}{k}.png" for k in range(n)]


def test_thresholds_at_fpr_keep_false_alarms_under_the_rate_and_find_the_known_copies() -> None:
    rng = np.random.default_rng(0)
    null = rng.beta(8, 6, 500)  # best matches of non-copies: 0.3 - 0.85
    cal = calibrate_holdout(null, np.zeros(500, bool), _ids(500), _ids(500, "t"), 0.01)
    k = threshold_rank(500, 0.01)
    assert k == 5 and cal.rank == 5 and cal.n == 500 and not cal.flagged and not cal.warnings
    assert cal.thresholds.duplicate_min == np.sort(null)[-5] and cal.thresholds.source == "holdout"
    assert cal.false_alarms / cal.n <= 0.01  # on the null itself, at or under the rate
    # On fresh non-copies the rate is the true one: within the stated interval.
    fresh = rng.beta(8, 6, 20000)
    lo, hi = cal.fpr_ci95
    assert lo <= (fresh > cal.thresholds.duplicate_min).mean() <= hi and lo < 0.01 < hi
    q = stats.beta(8, 6).ppf(0.99)
    t_lo, t_hi = cal.threshold_ci95
    assert t_lo is not None and t_hi is not None and t_lo <= q <= t_hi
    assert cal.thresholds.different_max == np.sort(null)[-threshold_rank(500, similar_rate(0.01))]
    # A synthetic set with 60 known copies of 300: all flagged, the excess rate near the truth.
    synth = np.concatenate([rng.uniform(0.9, 1.0, 60), rng.beta(8, 6, 240)])
    dup = synth > cal.thresholds.duplicate_min
    assert dup[:60].all()
    p = cal.p_values(synth)
    assert np.array_equal(p <= 0.01, dup)  # duplicate exactly when p <= fpr
    ex = excess_rate(int(dup.sum()), 300, cal.false_alarms, cal.n)
    assert ex["excess_memorization_rate_ci95"][0] <= 0.2 <= ex["excess_memorization_rate_ci95"][1]
    doc = cal.to_dict(["holdout/"])
    assert doc["format"] == CALIBRATION_FORMAT and doc["source"] == "holdout" and doc["criterion"] == "fpr"
    assert doc["n"] == 500 and doc["fpr"] == 0.01 and doc["thresholds"] == list(cal.thresholds.pair)


def test_p_values_of_a_holdout_split_in_two_are_uniform() -> None:
    """Best-match cosines of random embeddings: one half is the null, the other is scored."""
    rng = np.random.default_rng(1)
    train = rng.standard_normal((200, 16))
    held = rng.standard_normal((600, 16))
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    held /= np.linalg.norm(held, axis=1, keepdims=True)
    best = (held @ train.T).max(axis=1)
    p = p_values(best[:300], best[300:])
    assert p.min() >= 1 / 301 and p.max() <= 1.0
    assert stats.kstest(p, "uniform").pvalue > 0.01
    assert p_values(np.array([0.1, 0.2, 0.3]), np.array([0.3, 0.05, 0.31])).tolist() == [0.5, 1.0, 0.25]


def test_rank_rule_refuses_a_null_too_small_for_the_rate() -> None:
    assert min_null_size(0.01) == 99 and threshold_rank(99, 0.01) == 1 and threshold_rank(98, 0.01) == 0
    assert min_null_size(0.1) == 9 and similar_rate(0.01) == pytest.approx(0.1) and similar_rate(0.2) == 0.5
    scores = np.linspace(0.2, 0.7, 98)
    with pytest.raises(ValueError, match=r"98 holdout image\(s\) are too few for --fpr 0.01.*at least 99"):
        calibrate_holdout(scores, np.zeros(98, bool), _ids(98), _ids(98), 0.01)
    cal = calibrate_holdout(np.linspace(0.2, 0.7, 99), np.zeros(99, bool), _ids(99), _ids(99), 0.01)
    assert cal.thresholds.duplicate_min == 0.7 and cal.warnings  # the null's maximum: a far tail
    for bad in (0, 1, 1.5, -0.1, True):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            calibrate_holdout(scores, np.zeros(98, bool), _ids(98), _ids(98), bad)


def test_copies_in_the_holdout_are_flagged_by_content_or_as_high_outliers() -> None:
    rng = np.random.default_rng(2)
    scores = rng.normal(0.6, 0.05, 200)
    scores[[3, 7]] = [0.99, 0.97]  # a re-export and the same scan twice
    exact = np.zeros(200, bool)
    exact[11] = True  # identical content, whatever its score
    flagged = flag_copies(scores, exact)
    assert np.flatnonzero(flagged).tolist() == [3, 7, 11]
    # Scores above 0.95 are no copies where the whole holdout is that close.
    assert not flag_copies(rng.normal(0.97, 0.01, 200), np.zeros(200, bool)).any()
    cal = calibrate_holdout(scores, exact, _ids(200), _ids(200, "t"), 0.05)
    assert cal.n == 197 and cal.n_holdout == 200 and len(cal.flagged) == 3
    assert [f["holdout"] for f in cal.flagged] == ["h3.png", "h7.png", "h11.png"]
    assert cal.flagged[2]["reason"] == "identical content" and cal.flagged[0]["train"] == "t3.png"
    assert cal.thresholds.duplicate_min < 0.9  # the copies do not raise the threshold


def _smooth(rng: np.random.Generator) -> np.ndarray:
    image = ndimage.gaussian_filter(rng.random((36, 36)), 2.0)
    return (255 * (image - image.min()) / np.ptp(image)).astype(np.uint8)


@pytest.fixture(scope="module")
def held_sets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 training images; 30 new holdout images plus a byte copy and a re-export (+-2 grey
    levels) of training images; 10 new synthetic images and one byte copy."""
    root = tmp_path_factory.mktemp("held")
    rng = np.random.default_rng(0)
    for name in ("train", "synthetic", "holdout", "empty"):
        (root / name).mkdir()
    train = [_smooth(rng) for _ in range(20)]
    for k, image in enumerate(train):
        Image.fromarray(image).save(root / "train" / f"t{k:02d}.png")
    for k in range(30):
        Image.fromarray(_smooth(rng)).save(root / "holdout" / f"h{k:02d}.png")
    shutil.copy(root / "train" / "t03.png", root / "holdout" / "copy_exact.png")
    noisy = np.clip(train[5].astype(int) + rng.integers(-2, 3, train[5].shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(root / "holdout" / "copy_reexport.png")
    for k in range(10):
        Image.fromarray(_smooth(rng)).save(root / "synthetic" / f"s{k}.png")
    shutil.copy(root / "train" / "t07.png", root / "synthetic" / "copy.png")
    return root


@pytest.fixture(scope="module")
def smooth_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import _tiny_model

    return _tiny_model(tmp_path_factory.mktemp("smooth") / "model", smooth_stats=True)


def test_audit_with_a_holdout_flags_its_copies_and_decides_by_its_thresholds(
    held_sets: Path, smooth_model_dir: Path
) -> None:
    r = audit(held_sets / "train", held_sets / "synthetic", smooth_model_dir, holdout=held_sets / "holdout",
              fpr=0.1, device="cpu", cache_dir=None, verify=0)
    cal = r.holdout
    assert cal is not None and cal.n_holdout == 32 and cal.n == 30
    assert {f["holdout"]: f["train"] for f in cal.flagged} == {"copy_exact.png": "t03.png",
                                                               "copy_reexport.png": "t05.png"}
    t = r.summary["thresholds"]
    assert t["source"] == "holdout" and t["duplicate_min"] == cal.thresholds.duplicate_min
    assert t["holdout"]["used"] is True and t["holdout"]["n"] == 30 and t["holdout"]["n_flagged"] == 2
    assert r.thresholds == cal.thresholds
    held = r.summary["holdout"]
    assert held["n_images"] == 32 and held["n_null"] == 30
    dup = r.summary["counts"]["duplicate"]
    assert held["excess_memorization_rate"] == pytest.approx(dup / 11 - held["holdout_rate"])
    first = {m.synthetic: m for m in r.matches if m.rank == 1}
    assert first["copy.png"].p_value == pytest.approx(1 / 31) and first["copy.png"].label == "duplicate"
    for m in r.matches:
        assert (m.p_value is None) == (m.rank != 1)
        if m.rank == 1:
            assert (m.label == "duplicate") == (m.p_value <= 0.1)
    # Given thresholds win; the holdout's are still reported, and the p-values stay.
    given = audit(held_sets / "train", held_sets / "synthetic", smooth_model_dir, holdout=held_sets / "holdout",
                  thresholds=(0.5, 0.99), fpr=0.1, device="cpu", cache_dir=None, verify=0)
    assert given.summary["thresholds"]["source"] == "given" and given.thresholds.duplicate_min == 0.99
    assert given.summary["thresholds"]["holdout"]["used"] is False
    assert np.allclose(given.p_values, r.p_values)
    with pytest.raises(ValueError, match="--fpr needs --holdout"):
        audit(held_sets / "train", held_sets / "synthetic", smooth_model_dir, fpr=0.1, device="cpu", cache_dir=None, verify=0)


def test_holdout_thresholds_with_verification_set_the_verified_thresholds(
    held_sets: Path, smooth_model_dir: Path, tmp_path: Path
) -> None:
    from deepssim.auditing import VerifyGrid, VerifyOptions

    verify = VerifyOptions(top=1, grid=VerifyGrid(size=32, max_angle=0.0, gamma_steps=1, max_shift=0))
    r = audit(held_sets / "train", held_sets / "synthetic", smooth_model_dir, holdout=held_sets / "holdout",
              fpr=0.1, verify=verify, device="cpu", cache_dir=None)
    assert r.holdout is not None and r.holdout.scale == "verified_ssim"
    assert r.summary["thresholds"]["source"] == "model"  # the DeepSSIM scores choose what is verified
    assert r.decision_thresholds == r.holdout.thresholds
    assert r.summary["verify"]["thresholds"]["source"] == "holdout"
    path = tmp_path / "t.json"
    path.write_text(json.dumps(r.holdout.to_dict()))
    assert read_calibration(path)[1] == "verified_ssim"
    with pytest.raises(ValueError, match="apply to verified SSIMs.*--verify"):
        audit(held_sets / "train", held_sets / "synthetic", smooth_model_dir, calibration=path, device="cpu",
              cache_dir=None, verify=0)
    again = audit(held_sets / "train", held_sets / "synthetic", smooth_model_dir, calibration=path, verify=verify,
                  device="cpu", cache_dir=None)
    assert again.decision_thresholds.pair == r.holdout.thresholds.pair
    assert [m.label for m in again.matches] == [m.label for m in r.matches]


def test_verified_null_is_one_scale_and_duplicate_exactly_when_p_at_most_fpr(
    held_sets: Path, smooth_model_dir: Path, tmp_path: Path
) -> None:
    """The model's thresholds set high (0.78 / 0.90), as in a model whose gate leaves most of
    the holdout unverified: every holdout image is verified all the same."""
    from deepssim.auditing import VerifyGrid, VerifyOptions

    model = tmp_path / "model"
    shutil.copytree(smooth_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(config | {"thresholds": [0.78, 0.9]}))
    verify = VerifyOptions(top=1, grid=VerifyGrid(size=32, max_angle=0.0, gamma_steps=1, max_shift=0))
    r = audit(held_sets / "train", held_sets / "synthetic", model, holdout=held_sets / "holdout",
              fpr=0.1, verify=verify, device="cpu", cache_dir=None)
    cal, held = r.holdout, r.summary["holdout"]
    assert cal is not None and cal.scale == "verified_ssim" and cal.deepssim_null is not None
    assert held["verify"]["pairs"] >= 31  # every holdout image but the byte copy, whatever its score
    first = {m.synthetic: m for m in r.matches if m.rank == 1}
    unverified = [m for m in first.values() if m.verified_ssim is None]
    for k, name in enumerate(r.synthetic_ids):
        m = first[name]
        assert (m.label == "duplicate") == (r.p_values[k] <= 0.1), name
        scale_null = cal.null if m.verified_ssim is not None else cal.deepssim_null
        score = m.verified_ssim if m.verified_ssim is not None else m.score
        assert r.p_values[k] == pytest.approx((1 + (scale_null >= score).sum()) / (1 + cal.n))
    gate = min(0.78, cal.deepssim_gate)
    assert all(m.score <= gate for m in unverified)
    # The null's rate and the file's false-alarm rate are the same figure: k / (n + 1).
    t = r.summary["thresholds"]["holdout"]
    assert held["holdout_rate"] == t["false_alarm_rate"] == pytest.approx(cal.rank / (cal.n + 1))
    assert held["holdout_rate_basis"] == "expected" and held["holdout_rate_ci95"] == t["false_alarm_ci95"]
    # A verified calibration file and --verify-thresholds: one or the other.
    path = tmp_path / "t.json"
    path.write_text(json.dumps(cal.to_dict()))
    asked = VerifyOptions(top=1, thresholds=(0.3, 0.99), grid=verify.grid)
    with pytest.raises(ValueError, match="t.json: its thresholds apply to verified SSIMs, and --verify-thresholds"):
        audit(held_sets / "train", held_sets / "synthetic", model, calibration=path, verify=asked,
              device="cpu", cache_dir=None)


def test_excess_rate_of_non_copies_is_unbiased_and_its_interval_covers_zero() -> None:
    """Non-copies only (true excess 0): the null's rate is the expected k / (n + 1)."""
    rng = np.random.default_rng(3)
    for n, m, fpr in [(99, 2000, 0.01), (19, 2000, 0.05)]:
        excess, covered = [], 0
        for _ in range(200):
            # Scores under 0.9: none is flagged as a copy.
            cal = calibrate_holdout(0.9 * rng.random(n), np.zeros(n, bool), _ids(n), _ids(n), fpr)
            dup = int((0.9 * rng.random(m) > cal.thresholds.duplicate_min).sum())
            e = excess_rate(dup, m, cal.false_alarms, cal.n, rank=cal.rank)
            assert e["holdout_rate"] == cal.rank / (n + 1) and e["holdout_rate_basis"] == "expected"
            excess.append(e["excess_memorization_rate"])
            lo, hi = e["excess_memorization_rate_ci95"]
            covered += lo <= 0 <= hi
        assert abs(np.mean(excess)) < 0.004 and covered / 200 >= 0.9


def test_a_collapsed_model_warns_and_byte_copies_stay_duplicates(held_sets: Path, tiny_model_dir: Path) -> None:
    """Noise BatchNorm statistics: every image embeds to nearly one vector (all scores ~1)."""
    r = audit(held_sets / "train", held_sets / "synthetic", tiny_model_dir, holdout=held_sets / "holdout",
              fpr=0.1, device="cpu", cache_dir=None, verify=0)
    first = {m.synthetic: m for m in r.matches if m.rank == 1}
    assert first["copy.png"].exact_copy and first["copy.png"].label == "duplicate"
    assert r.holdout is not None and r.holdout.thresholds.duplicate_min >= 0.999
    assert any("cannot separate copies" in w for w in r.summary["thresholds"]["holdout"]["warnings"])
    low = calibrate_holdout(np.linspace(0.05, 0.2, 99), np.zeros(99, bool), _ids(99), _ids(99), 0.05)
    assert any("below the reference similar threshold 0.60" in w for w in low.warnings)


def test_holdout_too_small_stops_before_training(held_sets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import deepssim.auditing.api as api

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained before checking the holdout's size")

    monkeypatch.setattr(api, "obtain_model", no_training)
    with pytest.raises(ValueError, match=r"32 holdout image\(s\) are too few for --fpr 0.01.*at least 99"):
        audit(held_sets / "train", held_sets / "synthetic", holdout=held_sets / "holdout", fpr=0.01,
              device="cpu", cache_dir=None, verify=0)


def test_old_calibration_files_still_read(tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"thresholds": [0.5, 0.8], "metric": "deepssim"}))
    assert read_calibration(old) == (Thresholds(0.5, 0.8, source="calibration", file=str(old)), "deepssim")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"thresholds": [0.5, 0.8], "scale": "pixels"}))
    assert read_calibration(bad)[1] == "pixels"  # read as it is; an audit refuses it
    with pytest.raises(ValueError, match="bad.json: its thresholds are on the 'pixels' scale"):
        audit_thresholds(None, bad, {}, verifying=True)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deepssim", "audit", *args], capture_output=True, text=True,
                          timeout=300)


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``deepssim audit ARGS`` in this process (argparse's exit as its code), and stderr."""
    from deepssim.cli import main

    try:
        code = main(["audit", *args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def test_cli_holdout_end_to_end_and_reuse_of_its_thresholds(
    held_sets: Path, smooth_model_dir: Path, tmp_path: Path
) -> None:
    base = ["--train", str(held_sets / "train"), "--synthetic", str(held_sets / "synthetic"),
            "--model", str(smooth_model_dir), "--device", "cpu", "--no-cache", "--no-progress", "--verify", "0"]
    out = tmp_path / "audit"
    run = _cli(*base, "--out", str(out), "--holdout", str(held_sets / "holdout"), "--fpr", "0.1")
    assert run.returncode == 0, run.stderr
    assert "holdout: 30 images in the null (2 flagged" in run.stdout and "excess memorization rate" in run.stdout
    assert "warning: the duplicate threshold" in run.stderr
    with open(out / "matches.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert all((r["p_value"] != "") == (r["rank"] == "1") for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    saved = json.loads((out / "thresholds.json").read_text())
    assert saved["thresholds"] == [summary["thresholds"]["different_max"], summary["thresholds"]["duplicate_min"]]
    assert summary["files"]["thresholds"] == "thresholds.json" and "used" not in saved
    html = (out / "report.html").read_text()
    assert "<h2>Holdout calibration</h2>" in html and "copy_reexport.png" in html
    again = audit(held_sets / "train", held_sets / "synthetic", smooth_model_dir,
                  calibration=out / "thresholds.json", device="cpu", cache_dir=None, verify=0)
    assert again.summary["counts"] == summary["counts"]
    assert again.summary["thresholds"]["source"] == "calibration"


@pytest.mark.parametrize(("extra", "message"), [
    (["--holdout", "{empty}"], "empty: no readable image found (in the holdout set)"),
    (["--holdout", "{holdout}", "--fpr", "0"], "argument --fpr: must be a number > 0 and < 1, got 0"),
    (["--holdout", "{holdout}", "--fpr", "1"], "argument --fpr: must be a number > 0 and < 1, got 1"),
    (["--fpr", "0.05"], "--fpr needs --holdout"),
])
def test_cli_bad_holdout_input_is_one_clear_line(
    held_sets: Path, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    extra: list[str], message: str,
) -> None:
    args = [a.format(empty=held_sets / "empty", holdout=held_sets / "holdout") for a in extra]
    code, err = _main(capsys, "--train", str(held_sets / "train"), "--synthetic", str(held_sets / "synthetic"),
                      "--model", str(tiny_model_dir), "--device", "cpu", "--no-cache", "--no-progress",
                      "--out", str(tmp_path / "o"), *args)
    lines = err.strip().splitlines()
    assert code != 0 and message in lines[-1]
    assert sum("error" in line for line in lines) == 1  # above it, argparse's usage at most
    assert not (tmp_path / "o").exists()
