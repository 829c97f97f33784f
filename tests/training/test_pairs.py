"""Stratified training pairs with reference-SSIM targets, image splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepssim.refssim import registered_ssim, ssim_pairs
from deepssim.training.pairs import (
    CROSS_PREFIX,
    RANDOM,
    PairSet,
    _even_quotas,
    build_pairs,
    split_by_image,
)
from deepssim.transforms.nearcopy import FAMILIES

@pytest.fixture(scope="module")
def images(brain_slices_64: np.ndarray) -> np.ndarray:
    return brain_slices_64


@pytest.fixture(scope="module")
def pairs(images: np.ndarray) -> PairSet:
    return build_pairs(images, 600, families=list(FAMILIES), rng=np.random.default_rng(7))


# --- build_pairs ---------------------------------------------------------------------------


def test_targets_are_the_reference_ssim(pairs: PairSet) -> None:
    expected = ssim_pairs(list(pairs.images[pairs.a]), list(pairs.images[pairs.b]), device="cpu")
    np.testing.assert_allclose(pairs.target, expected, atol=1e-6)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_cuda_pairs_equal_the_cpu_ones(images: np.ndarray, pairs: PairSet) -> None:  # pragma: no cover - GPU only
    on_gpu = build_pairs(images, 600, families=list(FAMILIES), rng=np.random.default_rng(7), device="cuda")
    np.testing.assert_array_equal(on_gpu.a, pairs.a)
    np.testing.assert_array_equal(on_gpu.b, pairs.b)
    np.testing.assert_allclose(on_gpu.target, pairs.target, atol=1e-9)


def test_layout_and_families(images: np.ndarray, pairs: PairSet) -> None:
    assert len(pairs) == 600
    assert pairs.images.dtype == np.float32 and pairs.a.dtype == pairs.b.dtype == np.int64
    np.testing.assert_array_equal(pairs.images[: len(images)], images)  # inputs first
    assert np.all(pairs.a != pairs.b)
    random = pairs.family == RANDOM
    assert random.sum() == 300
    # Random pairs join two distinct inputs; every other pair involves a generated copy.
    assert np.all(pairs.a[random] < len(images)) and np.all(pairs.b[random] < len(images))
    assert np.all(pairs.b[~random] >= len(images))
    for name in FAMILIES:
        assert np.sum(pairs.family == name) > 0, name
    assert any(str(f).startswith(CROSS_PREFIX) for f in pairs.family)
    assert any("+" in str(f) for f in pairs.family)


def test_targets_cover_the_range(pairs: PairSet) -> None:
    stats = pairs.stats(n_bins=10)
    assert np.count_nonzero(stats.counts) >= 6
    assert stats.counts.sum() == len(pairs)
    assert pairs.target[np.isin(pairs.family, list(FAMILIES))].max() > 0.95
    assert "random" in str(stats)


def test_stratification_spreads_random_pairs(images: np.ndarray) -> None:
    built = build_pairs(images, 200, families=[], copy_fraction=0.0, rng=np.random.default_rng(1))
    # Plain random draws pile up around the median SSIM; stratified ones reach the tails.
    plain = ssim_pairs(list(images[:-1]), list(images[1:]), device="cpu")
    assert built.target.std() > plain.std()


def test_same_seed_same_pairs(images: np.ndarray, pairs: PairSet) -> None:
    again = build_pairs(images, 600, families=list(FAMILIES), rng=np.random.default_rng(7))
    other = build_pairs(images, 600, families=list(FAMILIES), rng=np.random.default_rng(8))
    for field in ("images", "a", "b", "target", "family"):
        np.testing.assert_array_equal(getattr(pairs, field), getattr(again, field))
    assert not np.array_equal(pairs.a, other.a)


def test_few_inputs_repeat_pairs_only_when_needed(images: np.ndarray) -> None:
    built = build_pairs(images[:4], 30, families=["noise"], copy_fraction=0.0, rng=np.random.default_rng(0))
    assert len(built) == 30 and np.all(built.a != built.b)
    # All 12 ordered pairs are used before any repeats.
    assert len(set(zip(built.a.tolist(), built.b.tolist()))) == 12


def test_registered_targets(images: np.ndarray) -> None:
    small = images[:6]
    built = build_pairs(small, 6, families=["elastic"], rng=np.random.default_rng(2), registered=True)
    plain = ssim_pairs(list(built.images[built.a]), list(built.images[built.b]), device="cpu")
    assert np.all(built.target >= plain - 1e-6)
    first = registered_ssim(built.images[built.a[0]], built.images[built.b[0]], device="cpu")
    assert built.target[0] == pytest.approx(first, abs=1e-6)


def test_save_load_round_trip(pairs: PairSet, tmp_path: Path) -> None:
    path = tmp_path / "pairs.npz"
    pairs.save(path)
    loaded = PairSet.load(path)
    for field in ("images", "a", "b", "target", "family"):
        np.testing.assert_array_equal(getattr(pairs, field), getattr(loaded, field))
    assert [p.name for p in tmp_path.iterdir()] == ["pairs.npz"]  # no temporary left behind


def test_subset_keeps_images(pairs: PairSet) -> None:
    part = pairs.subset(pairs.family == RANDOM)
    assert len(part) == 300 and part.images is pairs.images
    assert set(part.family.tolist()) == {RANDOM}


def test_bad_options_are_refused(images: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown families"):
        build_pairs(images, 10, families=["nope"], rng=rng)
    with pytest.raises(ValueError, match="N >= 2"):
        build_pairs(images[:1], 10, families=["blur"], rng=rng)


def test_even_quotas() -> None:
    rng = np.random.default_rng(0)
    counts = np.array([0, 3, 100, 100, 7])
    quotas = _even_quotas(counts, 50, rng)
    assert quotas.sum() == 50 and np.all(quotas <= counts)
    np.testing.assert_array_equal(quotas[[0, 1, 4]], [0, 3, 7])
    assert abs(int(quotas[2]) - int(quotas[3])) <= 1
    np.testing.assert_array_equal(_even_quotas(counts, 500, rng), counts)  # capped by counts


# --- split_by_image ------------------------------------------------------------------------


def test_split_by_image_is_disjoint_and_covering() -> None:
    train, val = split_by_image(50, 0.2, np.random.default_rng(0))
    assert len(val) == 10 and len(train) == 40
    assert not set(train) & set(val)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(50))
    again = split_by_image(50, 0.2, np.random.default_rng(0))
    np.testing.assert_array_equal(again[1], val)


def test_split_keeps_both_sides_non_empty() -> None:
    train, val = split_by_image(3, 0.01, np.random.default_rng(0))
    assert len(val) == 1 and len(train) == 2
    with pytest.raises(ValueError):
        split_by_image(10, 1.0, np.random.default_rng(0))
