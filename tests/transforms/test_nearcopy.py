"""Near-copy families: shapes, determinism, strength, and what each family changes."""

from __future__ import annotations


import numpy as np
import pytest

from deepssim.refssim import ssim_pairs
from deepssim.training.presets import get_preset
from deepssim.transforms.nearcopy import (
    ALL_FAMILIES,
    BENCHMARK_FAMILIES,
    BLOCK_SIZE,
    FAMILIES,
    KSPACE_MIN,
    REFERENCE_SIZE,
)

SIZE = 64
"""Side of the ``brain_slices_64`` images."""


@pytest.fixture(scope="module")
def images(brain_slices_64: np.ndarray) -> np.ndarray:
    return brain_slices_64


def _mean_ssim(images: np.ndarray, name: str, strength: float) -> float:
    copies = [
        FAMILIES[name](im, strength, np.random.default_rng(k), partner=images[k + 1])
        for k, im in enumerate(images[:-1])
    ]
    return float(ssim_pairs(list(images[:-1]), copies, device="cpu").mean())


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


def test_bias_is_a_smooth_multiplicative_field_and_keeps_the_minimum() -> None:
    rng = np.random.default_rng(0)
    x = np.linspace(10.0, 200.0, 64 * 64).reshape(64, 64)
    out = FAMILIES["bias"](x, 0.5, rng)
    ratio = (out - 10.0)[1:, 1:] / (x - 10.0)[1:, 1:]
    assert out.min() == pytest.approx(10.0) and ratio.std() > 0.01
    assert np.abs(np.diff(ratio, axis=1)).max() < 0.05  # smooth: no pixel-to-pixel change
    np.testing.assert_allclose(FAMILIES["bias"](x, 0.0, rng), x, rtol=1e-6)


def test_fast_trains_on_all_families_the_others_and_the_benchmark_keep_the_seven() -> None:
    assert ALL_FAMILIES + ("bias",) == tuple(FAMILIES)  # bias alone: for benchmarks, not training
    assert len(ALL_FAMILIES) == 13
    assert BENCHMARK_FAMILIES == ("noise", "blur", "elastic", "intensity", "resample", "mix", "texture")
    assert get_preset("fast").families == ALL_FAMILIES
    assert get_preset("paper").families == get_preset("plus").families == BENCHMARK_FAMILIES


def test_family_rejects_bad_input(images: np.ndarray) -> None:
    with pytest.raises(ValueError, match="strength"):
        FAMILIES["blur"](images[0], 1.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="2D"):
        FAMILIES["blur"](images[:2], 0.5, np.random.default_rng(0))
