"""The reference SSIM of volumes (``ndim=3``) against scikit-image on 3D arrays, on generated
and real MRI volumes, across entry points and backends, and its input errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from deepssim.refssim import ssim, ssim_against, ssim_matrix, ssim_pairs, zscore

from .conftest import skimage_reference

TOL = 1e-6


def _smooth(rng: np.random.Generator, shape: tuple[int, ...], sigma: float = 1.5) -> np.ndarray:
    return ndimage.gaussian_filter(rng.random(shape), sigma)


@pytest.fixture(scope="module")
def volumes() -> list[np.ndarray]:
    """Eight 32^3 volumes: four smooth ones and a noisy copy of each (a spread of SSIMs)."""
    rng = np.random.default_rng(0)
    smooth = [_smooth(rng, (32, 32, 32)) for _ in range(4)]
    return smooth + [v + 0.03 * rng.standard_normal(v.shape) for v in smooth]


def test_equals_skimage_on_generated_volumes_of_several_shapes() -> None:
    rng = np.random.default_rng(1)
    shapes = [(32, 32, 32), (9, 20, 33), (7, 7, 7), (16, 8, 12), (32, 32, 32)]
    a = [_smooth(rng, s) for s in shapes]
    b = [x + 0.05 * rng.random(x.shape) for x in a[:3]] + [rng.random(s) for s in shapes[3:]]
    got = ssim_pairs(a, b, device="cpu", ndim=3)
    want = np.array([skimage_reference(x, y) for x, y in zip(a, b)])
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    assert want.min() < 0.1 and want.max() > 0.8
    for x, y, w in zip(a, b, want):
        assert ssim(x, y, ndim=3) == pytest.approx(w, abs=TOL)
    # Integer and float32 volumes give the float64 result.
    ints = (a[0] * 1000).astype(np.int16), (b[0] * 1000).astype(np.int16)
    assert ssim(*ints, ndim=3) == pytest.approx(skimage_reference(*ints), abs=TOL)
    f32 = a[1].astype(np.float32), b[1].astype(np.float32)
    assert ssim(*f32, ndim=3) == pytest.approx(skimage_reference(*f32), abs=TOL)


def _resampled(volume: np.ndarray, box: tuple[slice, ...], shape: tuple[int, ...]) -> np.ndarray:
    crop = np.asarray(volume[box], dtype=np.float64)
    return ndimage.zoom(crop, [n / m for n, m in zip(shape, crop.shape)], order=1)


def test_equals_skimage_on_real_volumes(shared_data: Path) -> None:
    import nibabel as nib

    kirby = shared_data / "volumes" / "kirby21-113"
    brain = (slice(20, 150), slice(30, 226), slice(30, 226))
    t1 = nib.load(kirby / "113-02-MPRAGE.nii.gz").get_fdata(dtype=np.float32)
    t2 = nib.load(kirby / "113-02-T2w.nii.gz").get_fdata(dtype=np.float32)
    shifted = (slice(26, 156), slice(30, 226), slice(34, 230))
    k1 = _resampled(t1, brain, (32, 32, 32))
    pairs = [
        (k1, _resampled(t2, brain, (32, 32, 32))),  # same anatomy, other contrast
        (k1, _resampled(t1, shifted, (32, 32, 32))),  # same volume, moved a few mm
        (k1, k1[::-1].copy()),  # flipped
        (_resampled(t1, brain, (20, 28, 24)), _resampled(t2, brain, (20, 28, 24))),
    ]
    bx = shared_data / "volumes" / "brainix" / "nifti"
    bt1 = nib.load(bx / "T1.nii.gz").get_fdata(dtype=np.float32)  # 512 x 512 x 22
    bt2 = nib.load(bx / "T2.nii.gz").get_fdata(dtype=np.float32)
    bfl = nib.load(bx / "FLAIR.nii.gz").get_fdata(dtype=np.float32)  # 288 x 288 x 22
    whole = (slice(None),) * 3
    small = (40, 40, 22)
    b1 = _resampled(bt1, whole, small)
    pairs += [(b1, _resampled(bt2, whole, small)), (b1, _resampled(bfl, whole, small))]
    assert all(x.std() > 0 and y.std() > 0 for x, y in pairs)
    got = ssim_pairs([p[0] for p in pairs], [p[1] for p in pairs], device="cpu", ndim=3)
    want = np.array([skimage_reference(x, y) for x, y in pairs])
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    assert want.max() - want.min() > 0.2  # real spread: contrasts, motion, flips
    got_torch = ssim_pairs(
        [p[0] for p in pairs], [p[1] for p in pairs], device="cpu", ndim=3, backend="torch"
    )
    np.testing.assert_allclose(got_torch, want, rtol=0, atol=TOL)


def test_pairs_matrix_and_against_agree_with_ssim(volumes: list[np.ndarray]) -> None:
    a, b = volumes[:3], volumes[3:]
    full = ssim_matrix(a, b, device="cpu", ndim=3)
    assert full.shape == (3, 5)
    want = np.array([[skimage_reference(x, y) for y in b] for x in a])
    np.testing.assert_allclose(full, want, rtol=0, atol=TOL)
    ia, ib = np.meshgrid(np.arange(3), np.arange(5), indexing="ij")
    flat = ssim_pairs([a[i] for i in ia.ravel()], [b[j] for j in ib.ravel()], device="cpu", ndim=3)
    np.testing.assert_allclose(flat, full.ravel(), rtol=0, atol=1e-12)
    # Fresh copies in every pair (statistics per pair, not shared) give the same values.
    copies = ssim_pairs([a[i].copy() for i in ia.ravel()], [b[j].copy() for j in ib.ravel()],
                        device="cpu", ndim=3)
    np.testing.assert_allclose(copies, flat, rtol=0, atol=1e-12)
    assert ssim(a[2], b[4], ndim=3) == pytest.approx(full[2, 4], abs=1e-12)
    np.testing.assert_allclose(ssim_against(a[1], b, device="cpu", ndim=3), full[1], atol=1e-12)
    # Stacks, a budget of two volumes' statistics (tiled blocks), and one thread: same matrix.
    stack = ssim_matrix(np.stack(a), np.stack(b), device="cpu", ndim=3)
    np.testing.assert_allclose(stack, full, rtol=0, atol=1e-12)
    tiled = ssim_matrix(a, b, device="cpu", ndim=3, max_memory=2 * 8 * (32**3 + 2 * 26**3))
    np.testing.assert_allclose(tiled, full, rtol=0, atol=1e-12)
    one_thread = ssim_matrix(a, b, device="cpu", ndim=3, num_threads=1)
    np.testing.assert_allclose(one_thread, full, rtol=0, atol=1e-12)


def test_torch_backend_matches_numba(volumes: list[np.ndarray]) -> None:
    numba_result = ssim_matrix(volumes[:3], volumes, device="cpu", backend="numba", ndim=3)
    torch_result = ssim_matrix(volumes[:3], volumes, device="cpu", backend="torch", ndim=3)
    np.testing.assert_allclose(torch_result, numba_result, rtol=0, atol=1e-12)
    pairs = ssim_pairs(volumes[:4], volumes[4:], device="cpu", backend="torch", ndim=3)
    want = ssim_pairs(volumes[:4], volumes[4:], device="cpu", backend="numba", ndim=3)
    np.testing.assert_allclose(pairs, want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(pairs[:3], numba_result[[0, 1, 2], [4, 5, 6]], rtol=0, atol=1e-12)
    flat = [np.full((8, 9, 10), 2.0), np.full((8, 9, 10), -1.0)]
    for backend in ("numba", "torch"):
        np.testing.assert_allclose(
            ssim_matrix(flat, flat, device="cpu", backend=backend, ndim=3), np.ones((2, 2))
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(volumes: list[np.ndarray]) -> None:  # pragma: no cover - GPU only
    np.testing.assert_allclose(
        ssim_matrix(volumes, volumes, device="cuda", ndim=3),
        ssim_matrix(volumes, volumes, device="cpu", ndim=3),
        rtol=0,
        atol=1e-10,
    )


def test_constant_volumes_and_first_range_rule() -> None:
    rng = np.random.default_rng(2)
    flat = np.full((10, 10, 10), 3.0)
    volume = _smooth(rng, (10, 10, 10))
    assert ssim(flat, np.zeros((10, 10, 10)), ndim=3) == 1.0
    assert np.isfinite(ssim(flat, volume, ndim=3))
    assert ssim(volume, 2.0 * volume + 5.0, ndim=3) == pytest.approx(1.0, abs=1e-12)
    other = _smooth(rng, (10, 10, 10))
    assert ssim(volume, other, ndim=3) != ssim(other, volume, ndim=3)
    z = zscore(volume, ndim=3)
    assert z.mean() == pytest.approx(0.0, abs=1e-12) and z.std() == pytest.approx(1.0, abs=1e-12)
    # A stack of volumes is z-scored volume by volume.
    np.testing.assert_allclose(zscore(np.stack([volume, other]), ndim=3)[0], z, atol=1e-12)


V = np.zeros((8, 8, 8))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ssim(np.zeros((2, 8, 8, 8)), np.zeros((2, 8, 8, 8)), ndim=3),
         r"a: expected a 3D volume \(D, H, W\), got 4D array .*a batch of volumes"),
        (lambda: ssim(V, np.zeros((8, 8, 9)), ndim=3), "shape mismatch"),
        (lambda: ssim(np.zeros((8, 6, 8)), np.zeros((8, 6, 8)), ndim=3),
         r"a: volume of shape \(8, 6, 8\) is smaller than the 7x7x7 SSIM window"),
        (lambda: ssim(V, V), "expected a 2D grayscale image.*for a volume pass ndim=3"),
        (lambda: ssim(np.zeros((8, 8)), np.zeros((8, 8)), ndim=3),
         r"expected a 3D volume \(D, H, W\), got 2D"),
        (lambda: ssim(V, V, ndim=4), "ndim must be 2 .images. or 3 .volumes., got 4"),
        (lambda: ssim_matrix(V, [V], ndim=3), r"a: got one volume of shape \(8, 8, 8\)"),
        (lambda: ssim_matrix(np.zeros((2, 2, 8, 8, 8)), [V], ndim=3), r"\(N, D, H, W\) stack"),
        (lambda: ssim_pairs(np.zeros((2, 8, 8, 8)), np.zeros((2, 8, 8, 8))),
         "for volumes pass ndim=3"),
        (lambda: ssim_pairs([V], [np.zeros((8, 8, 9))], ndim=3), r"pair 0: shape mismatch"),
        (lambda: ssim_matrix([V, np.zeros((9, 8, 8))], [V], ndim=3), r"a\[1\]: shape \(9, 8, 8\)"),
        (lambda: ssim_matrix([V], [V, np.where(V == 0, np.nan, 0.0)], ndim=3, device="cpu"),
         r"b\[1\]: contains 512 NaN"),
    ],
)
def test_bad_volume_input_is_a_clear_error(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        call()
