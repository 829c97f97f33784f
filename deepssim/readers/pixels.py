"""Turning decoded pixel arrays into the float32 2D/3D arrays every reader returns."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ReadError
from .limits import check_pixels

# ITU-R BT.601 luma weights, the ones PIL's convert("L") uses; applied in float here
# because convert("L") rounds to 8 bits and would hide small differences from SSIM.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Return 0.299 R + 0.587 G + 0.114 B of an (..., C>=3) array as float32.

    Channels past the third (alpha, padding) are ignored. The sum is taken in float64 so
    the result is the correctly rounded float32 of the exact weighted sum.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype in (np.uint8, np.uint16) and np.array_equal(rgb[..., 0], rgb[..., 1]) \
            and np.array_equal(rgb[..., 1], rgb[..., 2]):
        # Grey stored as RGB (common for scans saved as JPEG): the weights sum to 1 and the
        # weighted sum rounds back to the value itself for every 8- and 16-bit integer, so
        # this is the same result, without the float64 arithmetic.
        return rgb[..., 0].astype(np.float32)
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    return (LUMA_WEIGHTS[0] * r + LUMA_WEIGHTS[1] * g + LUMA_WEIGHTS[2] * b).astype(np.float32)


def image_shape(shape: tuple[int, ...], path: str | Path) -> tuple[int, ...]:
    """Return `shape` with trailing singleton dims dropped, checked to be a 2D or 3D image
    within the pixel limit (``limits.max_pixels``). Readers call it on header shapes, so
    that an image is refused before its data is decoded.

    Raises:
        ReadError: fewer than 2 or more than 3 dims remain, a dim is zero, or more
            elements than the pixel limit.
    """
    dims = tuple(int(d) for d in shape)
    # (H, W, 1) or (X, Y, Z, 1) are common ways of storing 2D / 3D data; a genuine
    # extra dim > 1 (time, channels, echoes) is not something SSIM can compare.
    while len(dims) > 2 and dims[-1] == 1:
        dims = dims[:-1]
    if 0 in dims:
        raise ReadError(path, f"empty array (shape {tuple(shape)})")
    if len(dims) < 2:
        raise ReadError(path, f"{len(dims)}D array (shape {tuple(shape)}), an image needs 2 or 3 dims")
    if len(dims) > 3:
        raise ReadError(
            path,
            f"{len(dims)}D data (shape {tuple(shape)}); only 2D images and 3D volumes are "
            "supported, split the extra dimension into separate files first",
        )
    check_pixels(dims, path)
    return dims


def check_dtype(dtype: np.dtype, path: str | Path) -> None:
    """Raise ReadError unless `dtype` is bool, integer or real float."""
    if np.dtype(dtype).kind not in "biuf":
        raise ReadError(path, f"unsupported array dtype {dtype} (need bool, integer or float)")


def as_image(array: np.ndarray, path: str | Path) -> np.ndarray:
    """Return `array` as a float32 2D or 3D array (trailing singleton dims dropped).

    Booleans become 0/1 and integers are converted exactly where float32 allows.

    Raises:
        ReadError: wrong number of dims, empty, or a non-numeric / complex dtype.
    """
    array = np.asarray(array)
    check_dtype(array.dtype, path)
    shape = image_shape(array.shape, path)
    return np.ascontiguousarray(array.reshape(shape), dtype=np.float32)


def check_finite(image: np.ndarray, where: str | Path) -> np.ndarray:
    """Return ``image`` if all its values are finite.

    Raises:
        ReadError: NaN or infinite values, counted, naming ``where`` (the file, or the id of
            the slice): such an image is unreadable, as SSIM and the network need numbers.
    """
    finite = np.isfinite(image)
    if not finite.all():
        bad = image.size - int(np.count_nonzero(finite))
        kinds = " and ".join(k for k, hit in (("NaN", np.isnan(image).any()), ("infinite", np.isinf(image).any())) if hit)
        raise ReadError(where, f"{bad:,} of {image.size:,} pixel values are {kinds}; an image must "
                               "hold finite numbers (fix the file, or leave it out with --skip-unreadable)")
    return image
