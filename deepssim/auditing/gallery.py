"""The gallery's pairs: each synthetic image beside its training match and their difference
after the best rigid alignment, as PNG ``data:`` URIs for the report."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from ..refssim import apply_alignment, register, zscore

THUMB = 144
"""Longest side of a gallery thumbnail, in pixels."""
ALIGN_MAX_SIDE = 192
"""Pairs are aligned at the training image's shape, shrunk to this longest side if larger:
the grid search costs ~0.3 s a pair at this size but ~2.5 s at 512 x 512."""
DIFF_VMAX = 2.0
"""Top of the fixed colour scale of |z(train) - z(aligned synthetic)|, in standard deviations;
one scale for every row so that differences compare between rows."""
DIFF_CMAP = "magma"


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no truth value, compare by identity
class GalleryPair:
    """One suspicious pair of the gallery.

    Attributes:
        synthetic: Id of the synthetic image (e.g. "gen/sample-17.png", "vol.nii.gz#axis2:40").
        train: Id of its matched training image.
        score: DeepSSIM score of the pair.
        label: "duplicate", "similar" or "different".
        synthetic_image: The synthetic image as read, 2D, any size and intensity range.
        train_image: The training image as read, 2D; may differ in size from the synthetic one.
        rank: Rank of ``train`` among the synthetic image's matches (1 = best match).
        verified_ssim: The pair's verified reference SSIM when it was verified, else None.
    """

    synthetic: str
    train: str
    score: float
    label: str
    synthetic_image: np.ndarray = field(repr=False)
    train_image: np.ndarray = field(repr=False)
    rank: int = 1
    verified_ssim: float | None = None


def _as_2d(image: np.ndarray) -> np.ndarray:
    """A finite float64 2D image: channels averaged, NaN/inf set to the finite median."""
    arr = np.squeeze(np.asarray(image, dtype=np.float64))
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3].mean(axis=-1)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"expected a 2D image, got shape {np.shape(image)}")
    bad = ~np.isfinite(arr)
    if bad.any():
        arr = np.where(bad, np.median(arr[~bad]) if (~bad).any() else 0.0, arr)
    return arr


def _resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if image.shape == shape:
        return image
    # PIL's float mode gives exactly the requested shape (ndimage.zoom may round off by one).
    out = Image.fromarray(image.astype(np.float32), mode="F").resize(
        (shape[1], shape[0]), Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.float64)


def _window(image: np.ndarray) -> np.ndarray:
    """uint8 image with intensities windowed to the 1st-99th percentile."""
    lo, hi = np.percentile(image, (1, 99))
    if hi <= lo:
        lo, hi = float(image.min()), float(image.max())
    if hi <= lo:
        return np.full(image.shape, 128, np.uint8)
    return (np.clip((image - lo) / (hi - lo), 0, 1) * 255 + 0.5).astype(np.uint8)


def _png_uri(pixels: np.ndarray) -> str:
    """``data:`` URI of a uint8 image (2D grey or HxWx3), longest side scaled to THUMB."""
    img = Image.fromarray(pixels)
    scale = THUMB / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    # Downscale smoothly; upscale with nearest so small images show their true pixels.
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST
    buf = io.BytesIO()
    img.resize(size, resample).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _colourmap(values: np.ndarray) -> np.ndarray:
    """uint8 RGB of ``values`` on the fixed 0..DIFF_VMAX scale."""
    import matplotlib

    lut = (matplotlib.colormaps[DIFF_CMAP](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    return lut[(np.clip(values / DIFF_VMAX, 0, 1) * 255).astype(np.intp)]


def _describe(alignment: Any, scale: float) -> str:
    """HTML caption of an alignment (only numbers and fixed words: nothing to escape)."""
    flip = {(False, False): "none", (True, False): "up-down", (False, True): "left-right",
            (True, True): "both"}[tuple(alignment.flip)]
    # Shifts are found at the (possibly shrunk) alignment size; report training-image pixels.
    dy, dx = (round(s * scale) for s in alignment.shift)
    return (f"flip {flip} · rotation {alignment.angle:+g}°<br>shift ({dy:+d}, {dx:+d}) px"
            f"<br>registered SSIM <b>{alignment.score:.3f}</b>")


def pair_cells(pair: GalleryPair) -> tuple[str, str, str, str]:
    """(synthetic URI, training URI, difference URI, alignment caption) of one pair.

    Raises:
        ValueError: an image that is not 2D, or too small to align.
    """
    syn = _as_2d(pair.synthetic_image)
    train = _as_2d(pair.train_image)
    shrink = min(1.0, ALIGN_MAX_SIDE / max(train.shape))
    shape = (max(1, round(train.shape[0] * shrink)), max(1, round(train.shape[1] * shrink)))
    a = _resize(train, shape)
    b = _resize(syn, shape)
    found = register(a, b)
    aligned = apply_alignment(b, found.flip, found.angle, found.shift)
    diff = _colourmap(np.abs(zscore(a) - zscore(aligned)))
    # A faint grey training image under the colours: an exact copy still shows its outline
    # instead of a black square that looks like a missing image.
    diff = np.maximum(diff, (_window(a) * 0.22).astype(np.uint8)[..., None])
    return (_png_uri(_window(syn)), _png_uri(_window(train)), _png_uri(diff),
            _describe(found, train.shape[0] / shape[0]))


def scale_bar_uri() -> str:
    """``data:`` URI of the difference's colour scale, 0 to ``DIFF_VMAX``, left to right."""
    return _png_uri(_colourmap(np.tile(np.linspace(0, DIFF_VMAX, 256), (12, 1))))
