"""Input checks and the per-image statistics that every SSIM of an image reuses.

The reference SSIM (scikit-image ``structural_similarity`` defaults on z-scored images) only
averages the SSIM map over the region that skimage keeps after cropping ``(WIN - 1) // 2``
pixels from each border. Every 7 x 7 (7 x 7 x 7 for volumes) window centred in that region
lies inside the image, so the filtered maps are needed only over the "valid" region and no
border mode ever matters. Per image that is: the z-scored pixels, the local mean, the local
(sample) variance and the dynamic range; only the cross term depends on the pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WIN = 7
"""Side of the uniform window (scikit-image default)."""
K1 = 0.01
K2 = 0.03
COV_NORM = WIN * WIN / (WIN * WIN - 1.0)
"""Sample-covariance correction, ``use_sample_covariance=True`` in scikit-image."""
COV_NORM_3D = WIN**3 / (WIN**3 - 1.0)
"""The same correction for the 7 x 7 x 7 window of volumes."""
NDIMS = (2, 3)
"""Dimensions the engine takes: 2D images and 3D volumes."""
_KIND = {2: "2D grayscale image", 3: "3D volume (D, H, W)"}


def check_ndim(ndim: object) -> int:
    """``ndim`` itself, or ValueError when it is not 2 (images) or 3 (volumes)."""
    if isinstance(ndim, bool) or ndim not in NDIMS:
        raise ValueError(f"ndim must be 2 (images) or 3 (volumes), got {ndim!r}")
    return int(ndim)  # type: ignore[call-overload]


def check_image(image: object, name: str = "image", ndim: int = 2) -> np.ndarray:
    """Return ``image`` as a float64 array of ``ndim`` dimensions (2: an image, 3: a volume),
    or raise ValueError saying what is wrong."""
    ndim = check_ndim(ndim)
    arr = np.asarray(image)
    if arr.dtype.kind not in "biuf":
        kind = "complex" if arr.dtype.kind == "c" else f"dtype {arr.dtype}"
        raise ValueError(f"{name}: expected a numeric {ndim}D array, got {kind}")
    if arr.size == 0:
        raise ValueError(f"{name}: empty array (shape {arr.shape})")
    if arr.ndim != ndim:
        # 2D is the default: a 3D array may be a volume meant for ndim=3, or an RGB image.
        hint = "; for a volume pass ndim=3" if ndim == 2 and arr.ndim == 3 else ""
        if ndim == 3 and arr.ndim == 4:
            hint = "; a batch of volumes goes to ssim_pairs / ssim_matrix"
        raise ValueError(
            f"{name}: expected a {_KIND[ndim]}, got {arr.ndim}D array of shape {arr.shape}{hint}"
        )
    if min(arr.shape) < WIN:
        what = "image" if ndim == 2 else "volume"
        window = "x".join([str(WIN)] * ndim)
        raise ValueError(
            f"{name}: {what} of shape {arr.shape} is smaller than the {window} SSIM window"
        )
    arr = arr.astype(np.float64, copy=False)
    # One cheap reduction: the sum of squares is finite iff every pixel is finite and none is
    # so large (> ~1e154) that the z-score's moments would overflow.
    # einsum, not np.dot: BLAS's own threads fight the numba kernels' threads for the cores
    # (seen: 20 ms instead of 0.1 ms per 64^3 volume on 2 cores).
    flat = arr.ravel()
    if not np.isfinite(np.einsum("i,i->", flat, flat)):
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(np.isinf(arr).sum())
        if n_nan or n_inf:
            raise ValueError(f"{name}: contains {n_nan} NaN and {n_inf} infinite pixel(s)")
        # Huge but finite values: SSIM of z-scored images ignores a positive scale factor.
        arr = arr / np.abs(arr).max()
    return arr


def check_pair(a: object, b: object, ndim: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Both images checked as by ``check_image``, and of one size."""
    a64 = check_image(a, "a", ndim)
    b64 = check_image(b, "b", ndim)
    if a64.shape != b64.shape:
        raise ValueError(
            f"shape mismatch: a is {a64.shape}, b is {b64.shape}; SSIM compares images of one size"
        )
    return a64, b64


def zscore(image: np.ndarray, ndim: int = 2) -> np.ndarray:
    """Per-image z-score ``(x - mean) / std`` in float64 (population std) over the last
    ``ndim`` axes: a (..., H, W) stack of images, or with ``ndim=3`` of (D, H, W) volumes.

    A constant image (std 0) becomes all zeros instead of NaN.
    """
    x = np.asarray(image, dtype=np.float64)
    axes = tuple(range(-check_ndim(ndim), 0))
    mean = x.mean(axis=axes, keepdims=True)
    std = x.std(axis=axes, keepdims=True)
    centred = x - mean
    # std == 0 only for constant images; dividing by 1 there keeps them at exactly 0.
    return centred / np.where(std > 0, std, 1.0)


@dataclass(frozen=True)
class ImageStats:
    """Per-image quantities of a stack of same-size images (or volumes), all float64.

    Attributes:
        z: z-scored images, (N, H, W), or volumes, (N, D, H, W).
        mu: local means over the valid region, (N, H - 6, W - 6) or (N, D - 6, H - 6, W - 6).
        var: local sample variances over the valid region, shaped as ``mu``.
        drange: ``max - min`` of each z-scored image, (N,); SSIM's ``data_range``.
    """

    z: np.ndarray
    mu: np.ndarray
    var: np.ndarray
    drange: np.ndarray

    def __len__(self) -> int:
        return self.z.shape[0]

    @staticmethod
    def bytes_per_image(shape: tuple[int, ...]) -> int:
        full = int(np.prod(shape))
        valid = int(np.prod([n - WIN + 1 for n in shape]))
        return 8 * (full + 2 * valid)
