"""Registered SSIM of volumes: the rigid-alignment oracle in 3D."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from deepssim.refssim import (
    SearchGrid3D,
    apply_alignment3d,
    register3d,
    registered_ssim3d,
    ssim,
)
from deepssim.refssim.registered3d import rotate3d


def _phantom(seed: int, size: int = 32) -> np.ndarray:
    """A smooth volume of a few blobs, with no flip or rotation symmetry."""
    rng = np.random.default_rng(seed)
    grid = np.mgrid[:size, :size, :size] / size
    volume = np.zeros((size,) * 3)
    for _ in range(8):
        centre = rng.uniform(0.25, 0.75, 3)
        s = rng.uniform(0.05, 0.12)
        dist = sum((g - c) ** 2 for g, c in zip(grid, centre))
        volume += rng.uniform(0.5, 1.5) * np.exp(-dist / (2 * s * s))
    return volume + 0.02 * rng.random(volume.shape)


def test_single_axis_rotation_is_scipy_rotate_in_the_other_two_axes() -> None:
    volume = np.random.default_rng(0).random((12, 14, 16))
    for axis in range(3):
        angles = [0.0, 0.0, 0.0]
        angles[axis] = 7.0
        others = tuple(k for k in range(3) if k != axis)
        want = ndimage.rotate(volume, 7.0, axes=others, reshape=False, order=1, mode="nearest")
        np.testing.assert_allclose(rotate3d(volume, tuple(angles)), want, atol=1e-12)
    assert rotate3d(volume, (0.0, 0.0, 0.0)) is volume


def test_grid_cost_and_checks() -> None:
    grid = SearchGrid3D()
    assert len(grid.coarse_rotations()) == 1 + 3 * 4
    assert grid.n_coarse() == 8 * 13 * 27 == 2808
    assert (0, 0, 0) in grid.coarse_shifts()
    assert max(max(r) for r in grid.fine_rotations((10.0, 0.0, -10.0), 2.0)) == 10.0
    assert len(grid.fine_rotations((0.0, 0.0, 0.0), 2.0)) == 27
    with pytest.raises(ValueError, match="SearchGrid3D.angle_step must be > 0"):
        SearchGrid3D(angle_step=0)
    with pytest.raises(ValueError, match="fine_angle_steps must all be > 0"):
        SearchGrid3D(fine_angle_steps=(2.0, 0.0))


def test_flipped_rotated_shifted_copy_is_recovered() -> None:
    a = _phantom(1)
    flip, angles, shift = (True, False, True), (0.0, 8.0, 0.0), (1, -2, 0)
    # b is the copy that flip, then rotation, then shift maps back onto a.
    b = np.roll(a, tuple(-d for d in shift), axis=(0, 1, 2))
    b = rotate3d(b, tuple(-x for x in angles))[::-1, :, ::-1].copy()
    assert ssim(a, b, ndim=3) < 0.5
    found = register3d(a, b, device="cpu")
    assert found.flip == flip
    assert found.shift == shift
    np.testing.assert_allclose(found.angles, angles, atol=1.0)
    assert found.score > 0.99
    assert found.evaluations > SearchGrid3D().n_coarse()
    np.testing.assert_allclose(
        apply_alignment3d(b, found.flip, found.angles, found.shift), found.aligned, atol=1e-12
    )
    assert ssim(a, found.aligned, ndim=3) == pytest.approx(found.score, abs=1e-12)


def test_never_below_plain_ssim_and_different_volumes_stay_low() -> None:
    a, b = _phantom(3, 20), _phantom(4, 20)
    best = registered_ssim3d(a, b, device="cpu")
    assert best >= ssim(a, b, ndim=3)
    assert best < 0.8


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        register3d(np.zeros((8, 8, 8)), np.zeros((8, 8, 9)))
    with pytest.raises(ValueError, match=r"expected a 3D volume"):
        registered_ssim3d(np.zeros((16, 16)), np.zeros((16, 16)))
    with pytest.raises(ValueError, match="NaN"):
        register3d(np.full((8, 8, 8), np.nan), np.zeros((8, 8, 8)))
