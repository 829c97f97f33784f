"""Frozen preprocessing steps shared by several metrics (a metric that rescales differently
is a different metric, so each step is defined once here)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from ...refssim import check_image, zscore


def unit_range(image: np.ndarray) -> np.ndarray:
    """``image`` min-max scaled to [0, 1], float32; a constant image becomes all zeros."""
    x = check_image(image)
    lo, hi = x.min(), x.max()
    return ((x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)).astype(np.float32)


def zscore_pair(real: np.ndarray, synthetic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both images z-scored, then divided by the range of the z-scored real image.

    SSIM with ``data_range`` R equals SSIM with data range 1 of the images divided by R, so
    this brings each pair to the reference SSIM's convention (z-score, range of the first
    image) for libraries that take one data range for a whole batch.
    """
    za, zb = zscore(check_image(real, "real")), zscore(check_image(synthetic, "synthetic"))
    span = za.max() - za.min()
    if span == 0:  # constant real image: the reference engine uses the other image's range
        span = zb.max() - zb.min()
    span = span if span > 0 else 1.0
    return (za / span).astype(np.float32), (zb / span).astype(np.float32)


def batches(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` items covering ``range(n)``."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def shape_groups(images: Sequence[np.ndarray]) -> dict[tuple[int, ...], list[int]]:
    """Indices of the items of each shape (batched libraries need one shape per batch)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, image in enumerate(images):
        groups.setdefault(tuple(np.shape(image)), []).append(k)
    return groups
