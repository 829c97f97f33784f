"""Registered SSIM: the rigid-alignment oracle."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from deepssim.refssim import SearchGrid, apply_alignment, register, registered_ssim, ssim


def _phantom(seed: int, size: int = 64) -> np.ndarray:
    """A smooth, asymmetric blob image (no flip or rotation symmetry)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    image = np.zeros((size, size))
    for _ in range(6):
        cy, cx = rng.uniform(0.2, 0.8, 2)
        s = rng.uniform(0.04, 0.12)
        image += rng.uniform(0.5, 1.5) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return image + 0.02 * rng.random((size, size))


def test_grid_cost_is_as_documented() -> None:
    assert SearchGrid().n_evaluations() == 4 * 7 * 25 + 9 * 9 == 781


def test_identity_is_found_exactly() -> None:
    a = _phantom(0)
    found = register(a, a)
    assert found.score == pytest.approx(1.0, abs=1e-12)
    assert found.flip == (False, False)
    assert found.angle == 0.0
    assert found.shift == (0, 0)


def test_flipped_rotated_copy_is_recovered() -> None:
    a = _phantom(1)
    b = ndimage.rotate(a[:, ::-1], 8.0, reshape=False, order=1, mode="nearest")
    plain = ssim(a, b)
    found = register(a, b)
    assert plain < 0.6
    assert found.score > 0.95
    assert found.flip == (False, True)
    # Undoing the flip first, the rotation that re-aligns is the opposite of the one applied.
    # b = rotate(flip(a), +8); flipping b back turns that into a -8 rotation, undone by +8.
    assert found.angle == pytest.approx(8.0, abs=1.0)
    np.testing.assert_allclose(
        apply_alignment(b, found.flip, found.angle, found.shift), found.aligned, atol=1e-12
    )
    assert ssim(a, found.aligned) == pytest.approx(found.score, abs=1e-12)


def test_shifted_copy_is_recovered() -> None:
    a = _phantom(2)
    b = np.roll(a, (3, -2), axis=(0, 1))
    found = register(a, b)
    assert found.shift == (-3, 2)
    assert found.score > 0.9


def test_never_below_plain_ssim_and_different_images_stay_low() -> None:
    a, b = _phantom(3), _phantom(4)
    assert registered_ssim(a, b) >= ssim(a, b)
    assert registered_ssim(a, b) < 0.8


def test_grid_always_holds_the_identity_and_stays_within_max_angle() -> None:
    odd = SearchGrid(max_shift=4, shift_step=3, max_angle=10, angle_step=4)
    assert (0, 0) in odd.coarse_shifts()
    assert 0.0 in odd.coarse_angles()
    assert max(SearchGrid().fine_angles(15.0)) == 15.0
    a = _phantom(5)
    near = a + 0.01 * np.random.default_rng(0).random(a.shape)
    assert registered_ssim(a, near, grid=odd) >= ssim(a, near)
    # A rotation beyond the range is not "found" at an angle outside it.
    b = ndimage.rotate(a, -19.0, reshape=False, order=1, mode="nearest")
    assert abs(register(a, b).angle) <= 15.0


@pytest.mark.parametrize("field", ["angle_step", "fine_angle_step", "shift_step"])
def test_grid_steps_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match=f"SearchGrid.{field} must be > 0"):
        SearchGrid(**{field: 0})


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        register(np.zeros((16, 16)), np.zeros((16, 20)))
    with pytest.raises(ValueError, match="NaN"):
        registered_ssim(np.full((16, 16), np.nan), np.zeros((16, 16)))
