"""Near-copy families, stratified training pairs with reference-SSIM targets, image splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepssim.refssim import registered_ssim, ssim_pairs
from deepssim.training.presets import ALL_FAMILIES, get_preset
from deepssim.training.pairs import (
    BENCHMARK_FAMILIES,
    BLOCK_SIZE,
    CROSS_PREFIX,
    FAMILIES,
    KSPACE_MIN,
    RANDOM,
    REFERENCE_SIZE,
    PairSet,
    _even_quotas,
    build_pairs,
    split_by_image,
)

SIZE = 64


@pytest.fixture(scope="module")
def images(shared_data: Path) -> np.ndarray:
    """40 real slices from all four folders, resized to SIZE x SIZE, float32."""
    files = sorted((shared_data / "brain-tumor-mri" / "Training").glob("*/*.jpg"))[::140][:40]
    assert len(files) == 40
    return np.stack([
        np.asarray(Image.open(f).convert("L").resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float32)
        for f in files
    ])


@pytest.fixture(scope="module")
def pairs(images: np.ndarray) -> PairSet:
    return build_pairs(images, 600, families=list(FAMILIES), rng=np.random.default_rng(7))


def _mean_ssim(images: np.ndarray, name: str, strength: float) -> float:
    copies = [
        FAMILIES[name](im, strength, np.random.default_rng(k), partner=images[k + 1])
        for k, im in enumerate(images[:-1])
    ]
    return float(ssim_pairs(list(images[:-1]), copies, device="cpu").mean())


# --- families ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_keeps_shape_and_is_deterministic(images: np.ndarray, name: str) -> None:
    image, partner = images[0], images[1]
    first = FAMILIES[name](image, 0.7, np.random.default_rng(3), partner=partner)
    again = FAMILIES[name](image, 0.7, np.random.default_rng(3), partner=partner)
    assert first.shape == image.shape and first.dtype == np.float32
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, image)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_strength_zero_is_near_identity(images: np.ndarray, name: str) -> None:
    copy = FAMILIES[name](images[2], 0.0, np.random.default_rng(0), partner=images[3])
    assert ssim_pairs([images[2]], [copy], device="cpu")[0] > 0.99


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_ssim_falls_with_strength(images: np.ndarray, name: str) -> None:
    sample = images[::5]  # 8 images: 7 copies, each with the next image as partner
    weak, medium, strong = (_mean_ssim(sample, name, s) for s in (0.2, 0.6, 1.0))
    assert weak > medium > strong
    assert strong < 0.8  # strength 1 is a clear change, not a near-identity


def test_mix_without_partner_uses_a_stand_in(images: np.ndarray) -> None:
    copy = FAMILIES["mix"](images[0], 0.5, np.random.default_rng(0))
    assert copy.shape == images[0].shape and not np.array_equal(copy, images[0])


def test_kspace_removes_the_high_frequencies(images: np.ndarray) -> None:
    # Strength 1 keeps about KSPACE_MIN of each frequency axis (at most KSPACE_MIN ** 0.85,
    # plus a taper of 10% of the axis): the outer frequencies of the copy are empty, the
    # central ones untouched.
    image = images[4].astype(np.float64)
    copy = FAMILIES["kspace"](image, 1.0, np.random.default_rng(0))
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(copy)))
    before = np.abs(np.fft.fftshift(np.fft.fft2(image)))
    c = SIZE // 2
    outer = (KSPACE_MIN**0.85 + 0.1) * c + 1  # beyond this distance from the centre: nothing
    dist = np.abs(np.arange(SIZE) - c)
    empty = (dist[:, None] > outer) | (dist[None, :] > outer)
    assert empty.sum() > SIZE * SIZE // 2
    assert spectrum[empty].max() < 1e-6 * before.max()
    np.testing.assert_allclose(spectrum[c - 2 : c + 3, c - 2 : c + 3], before[c - 2 : c + 3, c - 2 : c + 3], rtol=1e-4)


@pytest.mark.parametrize("seed", range(6))
def test_ghost_adds_shifted_copies_along_one_axis(seed: int) -> None:
    # One bright dot: the copy holds the dimmed dot and two equal ghosts at +-d along one
    # axis (one ghost of twice the weight where +d and -d meet at half the field of view);
    # the total intensity is kept.
    image = np.zeros((SIZE, SIZE), np.float32)
    image[20, 30] = 1.0
    copy = FAMILIES["ghost"](image, 1.0, np.random.default_rng(seed))
    ghosts = {tuple(p) for p in np.argwhere(copy > 1e-6)} - {(20, 30)}
    assert copy[20, 30] == copy.max() and copy.sum() == pytest.approx(1.0, abs=1e-6)
    rows, cols = {g[0] for g in ghosts}, {g[1] for g in ghosts}
    axis = 0 if cols == {30} else 1
    assert (rows if axis == 1 else cols) == ({20} if axis == 1 else {30})  # one axis only
    offsets = {((g[axis] - (20, 30)[axis]) % SIZE) for g in ghosts}
    assert len(ghosts) in (1, 2) and offsets == {d % SIZE for d in (min(offsets), -min(offsets))}
    assert sum(copy[g] for g in ghosts) == pytest.approx(1.0 - copy[20, 30], abs=1e-6)


def test_blocks_change_each_block_on_its_own(images: np.ndarray) -> None:
    # Transform coding works block by block (BLOCK_SIZE at REFERENCE_SIZE, so 4 px at 64 px):
    # an edit inside one block changes the copy only inside that block.
    side = round(BLOCK_SIZE * SIZE / REFERENCE_SIZE)
    image = images[6].astype(np.float64)
    tiles = image.reshape(SIZE // side, side, SIZE // side, side)
    spread = tiles.max(axis=(1, 3)) - tiles.min(axis=(1, 3))
    by, bx = np.unravel_index(spread.argmax(), spread.shape)  # the block of most contrast
    r0, c0 = by * side, bx * side
    block = image[r0 : r0 + side, c0 : c0 + side]
    # Swap its darkest and brightest pixels: the histogram (and so the quantisation step, set
    # by the intensity range) stays the same.
    lo, hi = np.unravel_index(block.argmin(), block.shape), np.unravel_index(block.argmax(), block.shape)
    edited = image.copy()
    edited[r0 + lo[0], c0 + lo[1]], edited[r0 + hi[0], c0 + hi[1]] = block[hi], block[lo]
    a = FAMILIES["blocks"](image, 0.5, np.random.default_rng(2))
    b = FAMILIES["blocks"](edited, 0.5, np.random.default_rng(2))
    changed = np.argwhere(np.abs(a - b) > 1e-6)
    assert len(changed)
    assert changed[:, 0].min() >= r0 and changed[:, 0].max() < r0 + side
    assert changed[:, 1].min() >= c0 and changed[:, 1].max() < c0 + side


def test_fast_trains_on_all_families_the_others_and_the_benchmark_keep_the_seven() -> None:
    assert ALL_FAMILIES == tuple(FAMILIES)
    assert BENCHMARK_FAMILIES == ("noise", "blur", "elastic", "intensity", "resample", "mix", "texture")
    assert get_preset("fast").families == ALL_FAMILIES
    assert get_preset("paper").families == get_preset("plus").families == BENCHMARK_FAMILIES


def test_family_rejects_bad_input(images: np.ndarray) -> None:
    with pytest.raises(ValueError, match="strength"):
        FAMILIES["blur"](images[0], 1.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="2D"):
        FAMILIES["blur"](images[:2], 0.5, np.random.default_rng(0))


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
