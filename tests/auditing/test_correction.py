"""The verified SSIM's lean taken off: the monotone fit, the map, its fit on near-copies and
its place in the cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deepssim.auditing import correction as corr
from deepssim.auditing.correction import VerifyCorrection, fit_correction, monotone_knots, obtain_correction
from deepssim.auditing.options import VerifyGrid

GRID = VerifyGrid(size=32)


def test_monotone_knots_pool_violators_and_increase() -> None:
    x = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    y = np.array([0.1, 0.3, 0.2, 0.5, 0.4])
    kx, ky = monotone_knots(x, y)
    # (0.2, 0.3) and (0.3, 0.2) pool to (0.25, 0.25); (0.4, 0.5) and (0.5, 0.4) to (0.45, 0.45).
    np.testing.assert_allclose(kx, [0.1, 0.25, 0.45])
    np.testing.assert_allclose(ky, [0.1, 0.25, 0.45])
    rng = np.random.default_rng(0)
    x = rng.uniform(size=500)
    kx, ky = monotone_knots(x, x + rng.normal(0, 0.1, 500))
    assert np.all(np.diff(kx) > 0) and np.all(np.diff(ky) > 0)


def test_the_map_is_linear_between_knots_shifted_outside_and_keeps_one() -> None:
    c = VerifyCorrection((0.5, 0.9), (0.4, 0.85), 10, ("noise",))
    np.testing.assert_allclose(c(np.array([0.5, 0.7, 0.9])), [0.4, 0.625, 0.85])
    np.testing.assert_allclose(c(np.array([0.3, 0.95, 1.0])), [0.2, 0.925, 1.0])  # slope 1 below; up to (1, 1)
    assert np.isnan(c(np.array([np.nan]))[0])
    assert VerifyCorrection.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ValueError, match="increasing"):
        VerifyCorrection((0.5, 0.4), (0.4, 0.5), 10, ())


def test_fit_on_near_copies_takes_off_an_upward_lean(brain_slices_64: np.ndarray) -> None:
    """Fitted on near-copies of real slices, the map lowers verified SSIMs of near-copies (the
    maximum over the grid reads high) and checks against a second, independent draw."""
    images = list(brain_slices_64[:20])
    c = fit_correction(images, GRID, pairs=150, seed=0)
    verified, clean = corr.near_copy_pairs(images, GRID, pairs=150, seed=1)
    band = (clean > 0.6) & (clean < 0.95)
    assert band.sum() > 30
    raw_bias = float(np.mean(verified[band] - clean[band]))
    fixed_bias = float(np.mean(c(verified[band]) - clean[band]))
    assert raw_bias > 0.01
    assert abs(fixed_bias) < raw_bias / 2
    assert c(np.array([0.85]))[0] < 0.85


def test_kept_in_the_cache_and_refitted_when_tampered(brain_slices_64: np.ndarray, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(corr, "PAIRS", 30)
    images = list(brain_slices_64[:8])
    keys = [f"k{i}" for i in range(len(images))]
    secret = b"s" * 32
    loads: list[int] = []

    def load(i: int) -> np.ndarray:
        loads.append(i)
        return images[i]

    first, cached = obtain_correction(load, len(images), keys, GRID, tmp_path, secret)
    assert not cached and loads
    loads.clear()
    again, cached = obtain_correction(load, len(images), keys, GRID, tmp_path, secret)
    assert cached and again == first and not loads
    other, cached = obtain_correction(load, len(images), keys[:-1] + ["changed"], GRID, tmp_path, secret)
    assert not cached  # another training set: another map
    path = tmp_path / "corrections" / f"{corr.correction_key(keys, GRID, 30)[:32]}.json"
    record = json.loads(path.read_text())
    record["map"]["y"] = [v - 0.1 for v in record["map"]["y"]]  # edited, MAC kept
    path.write_text(json.dumps(record))
    refit, cached = obtain_correction(load, len(images), keys, GRID, tmp_path, secret)
    assert not cached and refit == first
