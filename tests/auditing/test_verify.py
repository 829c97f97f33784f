"""Verified SSIM: undoing flips, rotations and contrast changes before the reference SSIM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from deepssim import ssim
from deepssim.auditing import verify
from deepssim.auditing.verify import VerifyGrid, verified_ssim, verify_candidates, verify_pairs
from deepssim.transforms.perturb import PerturbParams, apply_params, apply_to_image


def _brainish(seed: int, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.random((size, size)), 2.0)
    yy, xx = np.mgrid[:size, :size]
    return (image * (((yy - 30) ** 2 + (xx - 34) ** 2) < 26**2)).astype(np.float32)


def test_identity_is_on_the_grid() -> None:
    a = _brainish(0)
    assert verified_ssim(a, a, VerifyGrid(size=64)) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("flip0,flip1,degrees,gamma", [(True, False, 0.0, 1.0), (False, True, 7.0, 0.6),
                                                        (True, True, -10.0, 1.5)])
def test_a_perturbed_copy_is_recovered(flip0: bool, flip1: bool, degrees: float, gamma: float) -> None:
    a = _brainish(1)
    copy = apply_to_image(a, PerturbParams(np.array([flip0]), np.array([flip1]), np.array([degrees]),
                                           np.array([gamma])))
    grid = VerifyGrid(size=64)
    got = verified_ssim(a, copy, grid)
    assert got > 0.93  # two bilinear rotations blur a 64 px image a little
    assert got >= ssim(a, copy)


def _off_centre(seed: int, size: int = 64) -> np.ndarray:
    """A textured disc away from the centre: rotating it moves it by a few pixels."""
    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.random((size, size)), 1.5)
    yy, xx = np.mgrid[:size, :size]
    return (image * (((yy - 20) ** 2 + (xx - 44) ** 2) < 14**2)).astype(np.float32)


@pytest.mark.parametrize("degrees", [9.5, -9.5, 7.0])
def test_an_off_centre_rotated_copy_is_aligned_after_the_move(degrees: float) -> None:
    # The shift that best aligns the unrotated image compensates part of the rotation's move;
    # chosen before the move it put the search 2-3 px off (0.93-0.94 here, 0.65 on a real copy).
    a = _off_centre(int(abs(degrees)))
    copy = apply_to_image(a, PerturbParams(np.array([False]), np.array([True]), np.array([degrees]),
                                           np.array([0.63])))
    assert verified_ssim(a, copy, VerifyGrid(size=64)) > 0.99


def test_each_geometry_gets_the_shift_of_best_correlation_after_its_move() -> None:
    # Against a brute force: every shift's dot product of the moved, z-scored training image
    # (edge-padded, as ``_best`` shifts it) with the z-scored synthetic image.
    rng = np.random.default_rng(0)
    grid = VerifyGrid(size=48, max_shift=3)
    trains = torch.from_numpy(rng.random((2, 48, 48)).astype(np.float32))
    synthetic = np.roll(trains[1].numpy(), (2, -1), axis=(0, 1))
    f0, f1 = np.tile(np.array(verify.FLIPS).T, 2)
    flipped = apply_params(trains.repeat_interleave(4, 0),
                           PerturbParams(f0, f1, np.zeros(8), np.ones(8))).reshape(2, 4, 48, 48)
    moves = verify._Moves(flipped)
    coarse = grid.coarse()
    z = verify._z(synthetic)
    got = verify._geometry_shifts(moves, [coarse, coarse], torch.from_numpy(z), grid.shifts())
    geometries, moved = moves([coarse, coarse])
    start = 0
    for k, (unique, which) in enumerate(geometries):
        for c, g in enumerate(which.ravel()):
            padded = verify._pad(verify._z(moved[start + g].numpy())[None], grid.shifts())[0]
            values = [np.vdot(verify._view(padded, z.shape, dy, dx), z) for dy, dx in grid.shifts()]
            assert got[k][c] == grid.shifts()[int(np.argmax(values))]
        start += len(unique)
    # The copy's own geometry (no flip, no rotation) is found at its shift.
    assert got[1][list(zip(coarse.flip0, coarse.flip1, coarse.degrees)).index((False, False, 0.0))] == (2, -1)


def test_fine_levels_halve_the_spacing() -> None:
    grid = VerifyGrid()
    best = PerturbParams(np.array([True]), np.array([False]), np.array([5.0]), np.array([1.0]))
    one, two = grid.fine(best, 1), grid.fine(best, 2)
    assert sorted(set(one.degrees)) == [2.5, 3.75, 5.0, 6.25, 7.5]
    assert sorted(set(two.degrees)) == [4.375, 5.0, 5.625]
    coarse = 2.0 ** 0.5  # the ratio of neighbouring coarse gammas 2 ** (k / 2)
    np.testing.assert_allclose(sorted(set(one.gamma)), coarse ** np.array([-0.25, 0.0, 0.25]))
    np.testing.assert_allclose(sorted(set(two.gamma)), coarse ** np.array([-0.125, 0.0, 0.125]))
    assert one.flip0.all() and not two.flip1.any()
    with pytest.raises(ValueError, match="level"):
        grid.fine(best, 3)


def test_unrelated_images_stay_low_and_pairs_agree() -> None:
    a, b = _brainish(2), _brainish(3)
    grid = VerifyGrid(size=64)
    low = verified_ssim(a, b, grid)
    assert ssim(a, b) <= low < 0.7
    np.testing.assert_allclose(verify_pairs([(a, b), (a, a)], grid), [low, 1.0], atol=1e-9)
    with pytest.raises(ValueError):
        VerifyGrid(angle_step=0)


def test_a_shifted_copy_is_recovered_within_max_shift() -> None:
    a = _brainish(4)
    copy = np.roll(a, (2, -1), axis=(0, 1))  # the background is 0 at the edges: a pure shift
    assert verified_ssim(a, copy, VerifyGrid(size=64, max_shift=2)) == pytest.approx(1.0, abs=1e-6)
    unshifted = verified_ssim(a, copy, VerifyGrid(size=64, max_shift=0))
    assert unshifted < 0.95
    assert verified_ssim(a, copy, VerifyGrid(size=64, max_shift=1)) < 1.0 - 1e-3
    assert VerifyGrid(max_shift=1).shifts()[0] == (0, 0) and len(VerifyGrid(max_shift=1).shifts()) == 9
    with pytest.raises(ValueError):
        VerifyGrid(max_shift=-1)


def test_candidates_verified_together_score_as_one_at_a_time() -> None:
    """Batching candidates of different shift ranges and mixed synthetic images changes nothing."""
    grid = VerifyGrid(size=64)
    synthetic = apply_to_image(_brainish(5), PerturbParams(np.array([False]), np.array([True]),
                                                           np.array([6.0]), np.array([0.7])))
    shifted = np.roll(_brainish(5), (2, 0), axis=(0, 1))
    trains = [_brainish(6), _brainish(5), shifted, _brainish(7)]
    alone = [verified_ssim(t, synthetic, grid) for t in trains]
    together = verify_candidates(trains, synthetic, grid)
    np.testing.assert_array_equal(together, alone)
    assert int(np.argmax(together)) == 1 and together[1] > 0.9
    other = _brainish(8)
    pairs = [(trains[0], synthetic), (trains[0], other), (trains[1], synthetic), (other, other)]
    np.testing.assert_allclose(verify_pairs(pairs, grid),
                               [alone[0], verified_ssim(trains[0], other, grid), alone[1], 1.0], rtol=0, atol=1e-12)
    assert verify_candidates([], synthetic, grid).shape == (0,)


def test_many_candidates_are_verified_by_chunks(monkeypatch) -> None:
    grid = VerifyGrid(size=64)
    trains = [_brainish(s) for s in range(9, 14)]
    whole = verify_candidates(trains, _brainish(9), grid)
    per_candidate = verify._COPIES_PER_CANDIDATE * 8 * (grid.size + 2 * grid.max_shift) ** 2
    monkeypatch.setattr(verify, "BATCH_BYTES", 2 * per_candidate)  # two candidates per chunk
    np.testing.assert_array_equal(verify_candidates(trains, _brainish(9), grid), whole)
