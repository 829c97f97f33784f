"""Near-copies: the changes a memorizing generator makes to a training image, by family.

Training pairs (``deepssim.training.pairs``) and memorization benchmarks
(``deepssim.benchmark``) both make near-copies of real images with ``FAMILIES``: generator-like
changes (noise, blur, elastic warps, intensity drift, loss of
detail, blending, local texture edits, truncated k-space, motion ghosts, blockwise transform
coding, over-sharpening, edge-preserving smoothing, intensity quantisation) of controlled
strength.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
from scipy import ndimage

REFERENCE_SIZE = 128
"""Image size (pixels) at which the spatial constants below are stated; they scale with size."""


class Family(Protocol):
    """A near-copy generator: ``strength`` 0 is the identity, 1 a strong change (median SSIM
    to the source 0.3-0.75, depending on the family). Deterministic given ``rng``;
    ``partner`` is a second image of the same shape, used by families that blend images and
    ignored by the others."""

    def __call__(
        self,
        image: np.ndarray,
        strength: float,
        rng: np.random.Generator,
        *,
        partner: np.ndarray | None = None,
    ) -> np.ndarray: ...


FAMILIES: dict[str, Family] = {}
"""Near-copy generators by name."""

BENCHMARK_FAMILIES = ("noise", "blur", "elastic", "intensity", "resample", "mix", "texture")
"""The families ``deepssim benchmark build`` uses by default: the first seven, with which the
development benchmarks of docs/ were built (the later ones were added for training, and
leaving them out keeps those benchmarks rebuildable byte for byte)."""

_Impl = Callable[[np.ndarray, float, np.random.Generator, "np.ndarray | None"], np.ndarray]


def _family(name: str) -> Callable[[_Impl], Family]:
    """Register an implementation under ``name`` behind one input check and float32 output."""

    def register(impl: _Impl) -> Family:
        def family(
            image: np.ndarray,
            strength: float,
            rng: np.random.Generator,
            *,
            partner: np.ndarray | None = None,
        ) -> np.ndarray:
            x = np.asarray(image, dtype=np.float64)
            if x.ndim != 2:
                raise ValueError(f"{name}: expected a 2D image, got shape {x.shape}")
            if not 0.0 <= strength <= 1.0:
                raise ValueError(f"{name}: strength must be in [0, 1], got {strength}")
            if partner is not None and np.shape(partner) != x.shape:
                raise ValueError(f"{name}: partner shape {np.shape(partner)} differs from {x.shape}")
            p = None if partner is None else np.asarray(partner, dtype=np.float64)
            return impl(x, float(strength), rng, p).astype(np.float32)

        family.__name__ = name
        family.__doc__ = impl.__doc__
        FAMILIES[name] = family
        return family

    return register


# --- helpers shared by the families -------------------------------------------------------


def _pixel_scale(image: np.ndarray) -> float:
    """Spatial constants are stated for REFERENCE_SIZE pixels; this rescales them."""
    return min(image.shape) / REFERENCE_SIZE


def _intensity_range(image: np.ndarray) -> tuple[float, float]:
    """Robust (1st, 99th percentile) intensity range: a few hot pixels must not set the scale."""
    lo, hi = np.percentile(image, [1.0, 99.0])
    if hi <= lo:
        lo, hi = float(image.min()), float(image.max())
    return float(lo), float(hi if hi > lo else lo + 1.0)


def _smooth_field(shape: tuple[int, ...], cells: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field in [-1, 1]: Gaussian values on a coarse grid, cubic-upsampled."""
    coarse = rng.standard_normal((cells, cells))
    field = ndimage.zoom(coarse, (shape[0] / cells, shape[1] / cells), order=3, mode="nearest")
    peak = np.abs(field).max()
    return field / peak if peak > 0 else field


def _rescale_like(source: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``source`` with the mean and standard deviation of ``like``."""
    std = source.std()
    z = (source - source.mean()) / std if std > 0 else np.zeros_like(source)
    return z * like.std() + like.mean()


# --- the families --------------------------------------------------------------------------

NOISE_MAX = 0.18
"""Noise standard deviation at strength 1, as a fraction of the robust intensity range."""
BLUR_MAX = 3.0
"""Gaussian blur sigma at strength 1 (pixels at REFERENCE_SIZE)."""
ELASTIC_MAX = 8.0
"""Largest displacement at strength 1 (pixels at REFERENCE_SIZE)."""
ELASTIC_CELLS = 6
"""Coarse grid of the displacement field: a few independent bends across the image."""
BIAS_MAX = 1.2
"""Log-amplitude of the multiplicative bias field at strength 1 (exp(+-1): x0.37 to x2.7)."""
BIAS_CELLS = 3
CURVE_MAX = 0.7
"""|log gamma| of the monotonic intensity curve at strength 1."""
RESAMPLE_MAX = 4.0
"""Down-sampling factor at strength 1."""
MIX_MAX = 0.6
"""Weight of the partner image at strength 1."""
TEXTURE_PATCHES = 12
"""Patches replaced at strength 1."""
KSPACE_MIN = 0.1
"""Fraction of each frequency axis kept by ``kspace`` at strength 1 (``KSPACE_MIN ** strength``
in general)."""
GHOST_MAX = 0.5
"""Weight of the ghosts at strength 1."""
SHARPEN_MAX = 4.0
"""Gain of the unsharp mask at strength 1."""
MEDIAN_MAX = 9
"""Median window side at strength 1 (pixels at REFERENCE_SIZE)."""
POSTERIZE_LEVELS = 4
"""Intensity levels left at strength 1 (256 at strength 0)."""
BLOCK_SIZE = 8
"""Side of the blocks of ``blocks`` (pixels at REFERENCE_SIZE), like JPEG's or a latent grid's."""
BLOCK_STEP_MAX = 0.8
"""Quantisation step of ``blocks``' lowest frequencies at strength 1, as a fraction of the
image's robust intensity range (higher frequencies: up to 4.5 times as coarse)."""
TEXTURE_SIZE = (0.15, 0.35)
"""Patch side as a fraction of the image side."""


@_family("noise")
def _noise(x: np.ndarray, s: float, rng: np.random.Generator, partner: np.ndarray | None) -> np.ndarray:
    """Magnitude noise as in MRI: Gaussian noise on a real and an imaginary channel, then the
    modulus, which is near-Gaussian on tissue and Rician (biased up) on dark background."""
    lo, hi = _intensity_range(x)
    sigma = s**1.5 * NOISE_MAX * (hi - lo)
    base = x - x.min()  # the modulus needs a non-negative signal
    real = base + sigma * rng.standard_normal(x.shape)
    imag = sigma * rng.standard_normal(x.shape)
    return np.hypot(real, imag) + x.min()


@_family("blur")
def _blur(x: np.ndarray, s: float, rng: np.random.Generator, partner: np.ndarray | None) -> np.ndarray:
    """Gaussian blur, sigma up to BLUR_MAX pixels (at REFERENCE_SIZE), slightly anisotropic."""
    sigma = s**0.75 * BLUR_MAX * rng.uniform(0.8, 1.0, size=2)
    return ndimage.gaussian_filter(x, sigma, mode="nearest")


@_family("elastic")
def _elastic(x: np.ndarray, s: float, rng: np.random.Generator, partner: np.ndarray | None) -> np.ndarray:
    """Smooth random warp whose largest displacement is ELASTIC_MAX pixels (at REFERENCE_SIZE)."""
    dy = _smooth_field(x.shape, ELASTIC_CELLS, rng)
    dx = _smooth_field(x.shape, ELASTIC_CELLS, rng)
    peak = np.hypot(dy, dx).max()
    gain = s * ELASTIC_MAX * _pixel_scale(x) / peak if peak > 0 else 0.0
    rows, cols = np.indices(x.shape, dtype=np.float64)
    return ndimage.map_coordinates(x, [rows + gain * dy, cols + gain * dx], order=1, mode="nearest")


@_family("intensity")
def _intensity(x: np.ndarray, s: float, rng: np.random.Generator, partner: np.ndarray | None) -> np.ndarray:
    """A mild monotonic curve (gamma) on the normalised image, then a smooth multiplicative
    bias field, like a scanner's or a generator's intensity drift."""
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return x.copy()
    u = (x - lo) / (hi - lo)
    gamma = np.exp(s * CURVE_MAX * rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0))
    bias = np.exp(s * BIAS_MAX * _smooth_field(x.shape, BIAS_CELLS, rng))
    return lo + (hi - lo) * u**gamma * bias


@_family("resample")
def _resample(x: np.ndarray, s: float, rng: np.random.Generator, partner: np.ndarray | None) -> np.ndarray:
    """Down-sample by up to RESAMPLE_MAX (anti-aliased) and back up with cubic splines: the
    loss of fine detail of a decoder working at a coarser resolution."""
    factor = 1.0 + s * (RESAMPLE_MAX - 1.0)
    if factor <= 1.0:
        return x.copy()
    small = tuple(max(2, round(n / factor)) for n in x.shape)
    smooth = ndimage.gaussian_filter(x, 0.5 * (factor - 1.0), mode="nearest")
    return _zoom_to(_zoom_to(smooth, small, order=1), x.shape, order=3)


def _zoom_to(x: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    """Resample ``x`` to exactly ``shape``, pixel areas aligned (grid mode)."""
    factors = [m / n for m, n in zip(shape, x.shape)]
    return ndimage.zoom(x, factors, order=order, mode="nearest", grid_mode=True)


@_family("mix")
def _mix(x: np.ndarray, s: float, rng: np.random.Generator, partner: np.ndarray | None) -> np.ndarray:
    """Blend with ``partner`` (rescaled to the image's mean and spread), weight up to MIX_MAX.

    Without a partner the image's left-right mirror stands in: a second image with the same
    intensities and a different layout, so the family works on its own too.
    """
    other = x[:, ::-1] if partner is None else partner
    w = s * MIX_MAX * rng.uniform(0.8, 1.0)
    return (1.0 - w) * x + w * _rescale_like(other, x)


def _feather(n: int) -> np.ndarray:
    """A 1D window of length n, 1 inside and ramping to 0 at both ends (soft patch edges)."""
    ramp = max(1, n // 4)
    t = np.minimum(np.arange(n) + 1, np.arange(n)[::-1] + 1) / (ramp + 1)
    return np.minimum(t, 1.0)


@_family("texture")
def _texture(x: np.ndarray, s: float, rng: np.random.Generator, partner: np.ndarray | None) -> np.ndarray:
    """Replace up to TEXTURE_PATCHES random patches with smoothed content moved from elsewhere
    in the image (soft-edged): local edits that leave the rest of the image untouched."""
    n_patches = int(np.ceil(s * TEXTURE_PATCHES - 1e-9))
    out = x.copy()
    if n_patches == 0:
        return out
    # Weak edits fade the patches in too, so that small strengths stay near the identity.
    opacity = min(1.0, 2.0 * s)
    smooth = ndimage.gaussian_filter(x, rng.uniform(0.5, 1.5) * max(1.0, 2 * _pixel_scale(x)), mode="nearest")
    h, w = x.shape
    for _ in range(n_patches):
        ph, pw = (max(3, int(round(rng.uniform(*TEXTURE_SIZE) * n))) for n in (h, w))
        y0, x0 = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
        sy, sx = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
        mask = opacity * np.outer(_feather(ph), _feather(pw))
        window = out[y0 : y0 + ph, x0 : x0 + pw]
        window += mask * (smooth[sy : sy + ph, sx : sx + pw] - window)
    return out


@_family("kspace")
def _kspace(x: np.ndarray, s: float, rng: np.random.Generator, partner: np.ndarray | None) -> np.ndarray:
    """Truncated k-space, as in an MRI acquisition of lower resolution: only the central
    fraction of the spatial frequencies along each axis is kept (down to KSPACE_MIN at
    strength 1; the two axes differ a little), with a short taper, so fine detail goes and
    Gibbs ringing appears along edges."""
    if s == 0.0:
        return x.copy()
    spectrum = np.fft.fftshift(np.fft.fft2(x))
    mask = np.ones(x.shape)
    for axis, n in enumerate(x.shape):
        keep = KSPACE_MIN ** (s * rng.uniform(0.85, 1.0))
        freq = np.abs(np.arange(n) - n // 2) / (n / 2)  # 0 at the centre, 1 at Nyquist
        # Full weight up to keep, then a cosine taper over 10% of the axis.
        taper = np.clip((freq - keep) / 0.1, 0.0, 1.0)
        weights = 0.5 * (1.0 + np.cos(np.pi * taper))
        mask *= weights.reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    return np.real(np.fft.ifft2(np.fft.ifftshift(spectrum * mask)))


@_family("ghost")
def _ghost(x: np.ndarray, s: float, rng: np.random.Generator, partner: np.ndarray | None) -> np.ndarray:
    """Motion ghosts, as in MRI: faint copies of the image shifted along one axis (the
    phase-encoding direction) by a large fraction of the field of view, weight up to
    GHOST_MAX; the image itself is dimmed by the same amount."""
    axis = int(rng.integers(0, 2))
    n = x.shape[axis]
    shift = int(round(n * rng.uniform(0.2, 0.5)))
    w = s * GHOST_MAX * rng.uniform(0.8, 1.0)
    ghosts = 0.5 * (np.roll(x, shift, axis=axis) + np.roll(x, -shift, axis=axis))
    return (1.0 - w) * x + w * ghosts


@_family("blocks")
def _blocks(x: np.ndarray, s: float, rng: np.random.Generator, partner: np.ndarray | None) -> np.ndarray:
    """Blockwise transform coding, as in JPEG or a decoder working on a latent grid: each
    BLOCK_SIZE block's 2D DCT coefficients are quantised with a step that grows with
    strength and with frequency, so blocks lose detail independently and seams appear."""
    if s == 0.0:
        return x.copy()
    from scipy.fft import dctn, idctn

    side = max(2, int(round(BLOCK_SIZE * _pixel_scale(x))))
    h, w = x.shape
    ph, pw = -h % side, -w % side
    padded = np.pad(x, ((0, ph), (0, pw)), mode="edge")
    tiles = padded.reshape(padded.shape[0] // side, side, padded.shape[1] // side, side).transpose(0, 2, 1, 3)
    coef = dctn(tiles, axes=(2, 3), norm="ortho")
    lo, hi = _intensity_range(x)
    u = np.arange(side)
    ramp = 1.0 + 2.0 * (u[:, None] + u[None, :]) / side  # coarser steps for higher frequencies
    # Orthonormal DCT coefficients of a pattern grow with the block side: so does the step,
    # so that a strength means the same at any image size.
    step = s * BLOCK_STEP_MAX * (hi - lo) * (side / BLOCK_SIZE) * ramp * rng.uniform(0.8, 1.0)
    step[0, 0] *= 0.25  # the block means are kept more finely
    quantised = np.round(coef / step) * step
    out = idctn(quantised, axes=(2, 3), norm="ortho").transpose(0, 2, 1, 3).reshape(padded.shape)
    return out[:h, :w]


@_family("sharpen")
def _sharpen(x: np.ndarray, s: float, rng: np.random.Generator, partner: np.ndarray | None) -> np.ndarray:
    """Unsharp masking, as generators and scanner software over-sharpen: the difference to
    a Gaussian blur (sigma 1-2 pixels at REFERENCE_SIZE) is added back with a gain up to
    SHARPEN_MAX, which amplifies edges, fine texture and noise."""
    if s == 0.0:
        return x.copy()
    sigma = rng.uniform(1.0, 2.0) * _pixel_scale(x)
    gain = s * SHARPEN_MAX * rng.uniform(0.8, 1.0)
    return x + gain * (x - ndimage.gaussian_filter(x, sigma, mode="nearest"))


@_family("median")
def _median(x: np.ndarray, s: float, rng: np.random.Generator, partner: np.ndarray | None) -> np.ndarray:
    """Edge-preserving smoothing, like a denoiser's: a median filter whose window grows with
    strength (up to MEDIAN_MAX pixels at REFERENCE_SIZE), blended in by strength, so flat
    regions turn waxy and fine texture goes while edges stay."""
    if s == 0.0:
        return x.copy()
    side = max(3, 2 * int(round(0.5 * s * MEDIAN_MAX * _pixel_scale(x))) + 1)
    w = min(1.0, 2.0 * s)
    return (1.0 - w) * x + w * ndimage.median_filter(x, size=side, mode="nearest")


@_family("posterize")
def _posterize(x: np.ndarray, s: float, rng: np.random.Generator, partner: np.ndarray | None) -> np.ndarray:
    """Intensity quantisation, as in a low bit-depth export or a coarse latent code: the
    robust intensity range is cut into fewer and fewer levels (down to POSTERIZE_LEVELS at
    strength 1), with a little noise first so that the contours are ragged, not straight."""
    if s == 0.0:
        return x.copy()
    lo, hi = _intensity_range(x)
    levels = POSTERIZE_LEVELS * (256.0 / POSTERIZE_LEVELS) ** (1.0 - s)
    step = (hi - lo) / levels
    dithered = x + 0.25 * step * rng.standard_normal(x.shape)
    return lo + np.round((dithered - lo) / step) * step


ALL_FAMILIES = tuple(FAMILIES)
"""Every family above, in the order of ``FAMILIES`` (the ``fast`` preset trains on all of them)."""


@_family("bias")
def _bias(x: np.ndarray, s: float, rng: np.random.Generator, partner: np.ndarray | None) -> np.ndarray:
    """A smooth multiplicative bias field alone (intensity non-uniformity, no contrast curve):
    for benchmarks whose copies must not carry a change the perturbation's gamma can undo."""
    lo = float(x.min())
    return lo + (x - lo) * np.exp(s * BIAS_MAX * _smooth_field(x.shape, BIAS_CELLS, rng))
