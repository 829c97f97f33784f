"""The SSIM engine against scikit-image, on real images, and its defined edge cases."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from deepssim.refssim import resolve_device, ssim, ssim_against, ssim_matrix, ssim_pairs, zscore

from .conftest import skimage_reference

TOL = 1e-6


def _load_gray(path: Path, size: int | None = None) -> np.ndarray:
    img = Image.open(path).convert("L")
    if size is not None:
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.float64)


@pytest.fixture(scope="module")
def jpeg_paths(shared_data: Path) -> list[Path]:
    with open(shared_data / "brain-tumor-mri" / "manifest.csv") as fh:
        rows = list(csv.DictReader(fh))
    # A fixed, spread-out subset of both modes (L and RGB) and all four classes.
    picked = rows[::27][:210]
    return [shared_data / "brain-tumor-mri" / r["path"] for r in picked]


@pytest.mark.parametrize("size", [None, 128])
def test_equals_skimage_on_200_real_pairs(jpeg_paths: list[Path], size: int | None) -> None:
    images = [_load_gray(p, size) for p in jpeg_paths]
    a, b = images[:-1], images[1:]
    got = ssim_pairs(a, b, device="cpu")
    want = np.array([skimage_reference(x, y) for x, y in zip(a, b)])
    assert len(got) >= 200
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    # A spread of values, not a degenerate set: near-copies and unrelated pairs alike.
    assert want.min() < 0.3 and want.max() > 0.6
    # The single-pair entry point agrees too.
    for k in range(0, len(a), 40):
        assert abs(ssim(a[k], b[k]) - want[k]) <= TOL


def test_equals_skimage_on_volume_slices_of_other_sizes(shared_data: Path) -> None:
    import nibabel as nib

    pairs = []
    t1 = nib.load(shared_data / "volumes" / "kirby21-113" / "113-02-MPRAGE.nii.gz").get_fdata()
    t2 = nib.load(shared_data / "volumes" / "kirby21-113" / "113-02-T2w.nii.gz").get_fdata()
    for k in (70, 85, 100):  # 256 x 256, 170 x 256 and 170 x 256 slices through the brain
        pairs.append((t1[k], t2[k]))
        pairs.append((t1[:, k + 30], t1[:, k + 33]))
        pairs.append((t1[:, :, k + 30], t2[:, :, k + 31]))
    bx = nib.load(shared_data / "volumes" / "brainix" / "nifti" / "T1.nii.gz").get_fdata()
    pairs.append((bx[:, :, 10], bx[:, :, 11]))  # 512 x 512
    assert all(p[0].std() > 0 and p[1].std() > 0 for p in pairs)
    shapes = {p[0].shape for p in pairs}
    assert len(shapes) >= 3
    got = ssim_pairs([p[0] for p in pairs], [p[1] for p in pairs], device="cpu")
    want = np.array([skimage_reference(x, y) for x, y in pairs])
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


def test_matrix_equals_pairs_and_is_independent_of_blocks_and_threads(
    jpeg_paths: list[Path],
) -> None:
    images = [_load_gray(p, 64) for p in jpeg_paths[:30]]
    a, b = images[:12], images[12:]
    full = ssim_matrix(a, b, device="cpu")
    assert full.shape == (12, 18)
    ia, ib = np.meshgrid(np.arange(12), np.arange(18), indexing="ij")
    flat = ssim_pairs([a[i] for i in ia.ravel()], [b[j] for j in ib.ravel()], device="cpu")
    np.testing.assert_allclose(full.ravel(), flat, rtol=0, atol=1e-12)
    # Tiny memory budget: both sides tiled into blocks of a few images.
    tiled = ssim_matrix(a, b, device="cpu", max_memory=5 * 8 * 64 * 64 * 3)
    np.testing.assert_allclose(tiled, full, rtol=0, atol=1e-12)
    one_thread = ssim_matrix(a, b, device="cpu", num_threads=1)
    np.testing.assert_allclose(one_thread, full, rtol=0, atol=1e-12)
    stack = ssim_matrix(np.stack(a), np.stack(b), device="cpu")
    np.testing.assert_allclose(stack, full, rtol=0, atol=1e-12)
    want = np.array([[skimage_reference(x, y) for y in b] for x in a])
    np.testing.assert_allclose(full, want, rtol=0, atol=TOL)


def test_reused_images_take_the_shared_statistics_path_with_equal_results() -> None:
    rng = np.random.default_rng(6)
    a = [rng.random((24, 20)) for _ in range(3)]
    b = [rng.random((24, 20)) for _ in range(5)]
    pairs = [(i, j) for i in range(3) for j in range(5)] * 2
    # The same objects in many pairs (statistics computed once) ...
    shared = ssim_pairs([a[i] for i, _ in pairs], [b[j] for _, j in pairs], device="cpu")
    # ... and a fresh copy for every pair (statistics computed per pair).
    copies = ssim_pairs(
        [a[i].copy() for i, _ in pairs], [b[j].copy() for _, j in pairs], device="cpu"
    )
    np.testing.assert_allclose(shared, copies, rtol=0, atol=1e-12)
    matrix = ssim_matrix(a, b, device="cpu")
    np.testing.assert_allclose(shared, [matrix[i, j] for i, j in pairs], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ssim_against(a[1], b, device="cpu"), matrix[1], rtol=0, atol=1e-12)


def test_torch_backend_matches_numba(jpeg_paths: list[Path]) -> None:
    images = [_load_gray(p, 48) for p in jpeg_paths[:16]]
    numba_result = ssim_matrix(images[:6], images, device="cpu", backend="numba")
    torch_result = ssim_matrix(images[:6], images, device="cpu", backend="torch")
    np.testing.assert_allclose(torch_result, numba_result, rtol=0, atol=1e-12)
    # Constant images follow the same defined rule on both backends.
    flat = [np.full((20, 20), 2.0), np.full((20, 20), -1.0)]
    for backend in ("numba", "torch"):
        np.testing.assert_allclose(
            ssim_matrix(flat, flat, device="cpu", backend=backend), np.ones((2, 2))
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(jpeg_paths: list[Path]) -> None:  # pragma: no cover - GPU only
    images = [_load_gray(p, 128) for p in jpeg_paths[:20]]
    np.testing.assert_allclose(
        ssim_matrix(images, images, device="cuda"),
        ssim_matrix(images, images, device="cpu"),
        rtol=0,
        atol=1e-10,
    )


def test_pairs_of_mixed_sizes_keep_their_order() -> None:
    rng = np.random.default_rng(0)
    a = [rng.random((20, 30)), rng.random((16, 16)), rng.random((20, 30)), rng.random((9, 40))]
    b = [x + 0.3 * rng.random(x.shape) for x in a]
    got = ssim_pairs(a, b, device="cpu")
    want = [skimage_reference(x, y) for x, y in zip(a, b)]
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


def test_invariant_to_affine_intensity_and_uses_first_range() -> None:
    rng = np.random.default_rng(1)
    a = rng.random((32, 32))
    b = rng.random((32, 32))
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert ssim(a, 3.0 * a + 7.0) == pytest.approx(1.0, abs=1e-12)
    # data_range comes from the first image: the two orders differ, each matches skimage.
    assert ssim(a, b) == pytest.approx(skimage_reference(a, b), abs=TOL)
    assert ssim(b, a) == pytest.approx(skimage_reference(b, a), abs=TOL)
    assert ssim(a, b) != ssim(b, a)
    np.testing.assert_allclose(zscore(a).mean(), 0.0, atol=1e-12)
    np.testing.assert_allclose(zscore(a).std(), 1.0, atol=1e-12)


def test_integer_and_float32_input_give_the_float64_result() -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(0, 255, (24, 24)).astype(np.uint8)
    b = rng.integers(0, 255, (24, 24)).astype(np.uint8)
    want = skimage_reference(a, b)
    assert ssim(a, b) == pytest.approx(want, abs=TOL)
    assert ssim(a.astype(np.float32), b.astype(np.float32)) == pytest.approx(want, abs=TOL)


def test_constant_images_are_defined_not_nan() -> None:
    rng = np.random.default_rng(3)
    flat = np.full((16, 16), 5.0)
    other_flat = np.zeros((16, 16))
    image = rng.random((16, 16))
    assert ssim(flat, other_flat) == 1.0
    for value in (ssim(flat, image), ssim(image, flat)):
        assert np.isfinite(value)
        assert -1.0 <= value <= 1.0
        assert value < 0.1  # no shared structure
    # With a structured first image the value is scikit-image's own.
    assert ssim(image, flat) == pytest.approx(
        float(structural_similarity(zscore(image), zscore(flat), data_range=np.ptp(zscore(image)))),
        abs=TOL,
    )


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (np.full((16, 16), np.nan), np.zeros((16, 16)), "NaN"),
        (np.where(np.eye(16) > 0, np.inf, 0.0), np.zeros((16, 16)), "infinite"),
        (np.zeros((0, 16)), np.zeros((0, 16)), "empty"),
        (np.zeros(16), np.zeros(16), "2D"),
        (np.zeros((16, 16, 3)), np.zeros((16, 16, 3)), "2D"),
        (np.zeros((5, 16)), np.zeros((5, 16)), "smaller than the 7x7"),
        (np.zeros((16, 16)), np.zeros((16, 17)), "shape mismatch"),
        (np.array([["a"] * 8] * 8), np.zeros((8, 8)), "numeric"),
    ],
)
def test_bad_input_raises_a_clear_error(a: np.ndarray, b: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ssim(a, b)


def test_bad_sets_name_the_offending_image() -> None:
    good = [np.random.default_rng(4).random((16, 16)) for _ in range(3)]
    with pytest.raises(ValueError, match=r"a\[1\]: shape \(16, 17\)"):
        ssim_matrix([good[0], np.zeros((16, 17))], good)
    bad = [good[0], good[1].copy()]
    bad[1][3, 3] = np.nan
    with pytest.raises(ValueError, match=r"b\[1\]: contains 1 NaN"):
        ssim_matrix(good, bad, device="cpu")
    with pytest.raises(ValueError, match="as many a as b"):
        ssim_pairs(good, good[:2])
    with pytest.raises(ValueError, match=r"pair 0: shape mismatch"):
        ssim_pairs([np.zeros((16, 16))], [np.zeros((16, 18))])
    with pytest.raises(ValueError, match="empty set"):
        ssim_matrix([], good)
    with pytest.raises(ValueError, match="one 2D image"):
        ssim_matrix(good[0], good)


def test_tiny_images_and_unknown_backends_are_clear_errors() -> None:
    tiny = [np.ones((2, 8)), np.ones((2, 8))]
    with pytest.raises(ValueError, match=r"a\[0\]: image of shape \(2, 8\) is smaller"):
        ssim_matrix(tiny, tiny)
    with pytest.raises(ValueError, match=r"a\[0\]: image of shape \(2, 8\) is smaller"):
        ssim_pairs(tiny, tiny)
    good = [np.random.default_rng(7).random((16, 16))]
    for backend in ("cuda", "Torch", ""):
        with pytest.raises(ValueError, match="unknown backend"):
            ssim_matrix(good, good, backend=backend)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown device|unsupported device"):
        ssim_matrix(good, good, device="tpu")
    with pytest.raises(ValueError, match="num_threads must be >= 1"):
        ssim_matrix(good, good, num_threads=0)


def test_huge_finite_values_are_rescaled_not_overflowed() -> None:
    rng = np.random.default_rng(8)
    a, b = rng.random((20, 20)), rng.random((20, 20))
    want = ssim(a, b)
    assert want < 0.5
    with np.errstate(over="ignore"):
        assert ssim(a * 1e300, b * 1e300) == pytest.approx(want, abs=1e-9)


def test_progress_bar_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    images = [np.random.default_rng(5).random((16, 16)) for _ in range(4)]
    ssim_matrix(images, images, device="cpu", progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "16.0/16.0" in captured.err and "ssim matrix" in captured.err


def test_cuda_request_without_cuda_is_an_error() -> None:
    if torch.cuda.is_available():  # pragma: no cover - GPU machines
        assert resolve_device("cuda").type == "cuda"
        return
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(RuntimeError, match="no CUDA device"):
        ssim_matrix([np.zeros((8, 8))], [np.zeros((8, 8))], device="cuda")
