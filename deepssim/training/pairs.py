"""Training pairs with reference-SSIM targets that cover the whole SSIM range.

Random pairs of one image set are nearly all "different" (SSIM 0.1-0.4), while the audit is
about near-copies such as a memorizing generator makes. ``build_pairs`` therefore mixes
SSIM-stratified pairs of distinct inputs with pairs of an input and a generated near-copy.
Near-copies come from ``FAMILIES``: generator-like changes (noise, blur, elastic warps,
intensity drift, loss of detail, blending, local texture edits, truncated k-space, motion
ghosts, blockwise transform coding, over-sharpening, edge-preserving smoothing, intensity
quantisation) of controlled strength.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from deepssim.model.checkpoint import atomic_write
from deepssim.refssim import registered_ssim, ssim_pairs

RANDOM = "random"
"""``PairSet.family`` of a pair of two distinct inputs."""
CROSS_PREFIX = "cross:"
"""``PairSet.family`` prefix of (input, copy of a different input), e.g. ``cross:blur``."""
COPY_JOIN = "+"
"""``PairSet.family`` of two copies of one source joins their families, e.g. ``blur+noise``."""

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


# --- the pair set --------------------------------------------------------------------------

_FORMAT_VERSION = 1
_FIELDS = ("images", "a", "b", "target", "family")


@dataclass(frozen=True)
class PairStats:
    """Summary of a PairSet's targets: a histogram over [min(0, lowest target), 1] and the
    count and mean target of each family label."""

    edges: np.ndarray
    counts: np.ndarray
    by_family: dict[str, tuple[int, float]]

    def __str__(self) -> str:
        edges = zip(self.edges, self.edges[1:], self.counts)
        bins = " ".join(f"[{lo:.2f},{hi:.2f}):{c}" for lo, hi, c in edges)
        fams = ", ".join(f"{k} {n} (mean {m:.3f})" for k, (n, m) in sorted(self.by_family.items()))
        return f"targets {bins}\nfamilies {fams}"


@dataclass
class PairSet:
    """Training pairs: indices into one image stack and the reference SSIM of each pair.

    ``images`` holds the N clean inputs first, then generated near-copies. ``family`` is
    ``"random"`` for two distinct inputs, a family name when ``b`` was made from ``a`` by it,
    ``"f1+f2"`` for two copies of one source made by f1 and f2, and ``"cross:f"`` for an
    input against a copy (by f) of a different input.
    """

    images: np.ndarray
    a: np.ndarray
    b: np.ndarray
    target: np.ndarray
    family: np.ndarray

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images, dtype=np.float32)
        self.a = np.asarray(self.a, dtype=np.int64)
        self.b = np.asarray(self.b, dtype=np.int64)
        self.target = np.asarray(self.target, dtype=np.float32)
        self.family = np.asarray(self.family, dtype=np.str_)
        if self.images.ndim != 3:
            raise ValueError(f"images must be an (K, H, W) stack, got shape {self.images.shape}")
        n = len(self.a)
        for name in ("b", "target", "family"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"PairSet.{name} has shape {getattr(self, name).shape}, expected ({n},)")
        for name in ("a", "b"):
            idx = getattr(self, name)
            if n and (idx.min() < 0 or idx.max() >= len(self.images)):
                raise ValueError(f"PairSet.{name} indexes outside the {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.a)

    def subset(self, mask: np.ndarray) -> PairSet:
        """The pairs selected by a boolean mask or an index array; images are shared, not copied."""
        return PairSet(self.images, self.a[mask], self.b[mask], self.target[mask], self.family[mask])

    def stats(self, n_bins: int = 10) -> PairStats:
        """Histogram of the targets and per-family counts, for logging."""
        lo = min(0.0, float(self.target.min())) if len(self) else 0.0
        counts, edges = np.histogram(self.target, bins=n_bins, range=(lo, 1.0))
        by_family = {
            str(name): (int(np.sum(self.family == name)), float(self.target[self.family == name].mean()))
            for name in np.unique(self.family)
        }
        return PairStats(edges=edges, counts=counts, by_family=by_family)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write one .npz file atomically: a temporary file beside it, then a rename."""
        arrays = {k: getattr(self, k) for k in _FIELDS}
        atomic_write(Path(path), lambda fh: np.savez(fh, version=np.int64(_FORMAT_VERSION), **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PairSet:
        """Read a file written by ``save``."""
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("version", *_FIELDS) if k not in data]
            if missing:
                raise ValueError(f"{path}: not a PairSet file (missing {', '.join(missing)})")
            if int(data["version"]) != _FORMAT_VERSION:
                raise ValueError(f"{path}: PairSet format {int(data['version'])}, expected {_FORMAT_VERSION}")
            return cls(**{k: data[k] for k in _FIELDS})


# --- building pairs ------------------------------------------------------------------------

COPY_COPY_SHARE = 0.15
"""Share of the copy pairs that are two copies of one source (by two families)."""
CROSS_SHARE = 0.15
"""Share of the copy pairs that are an input against a copy of a different input."""
STRENGTH_POWER = 0.7
"""Copy strengths are U(0, 1) ** STRENGTH_POWER: with plain U(0, 1) a third of the copies land
above SSIM 0.9 (most families lose SSIM slowly at first); this spreads them over 0.4-1.0."""
CANDIDATE_FACTOR = 5
"""Candidate random pairs scored per random pair kept, for the SSIM stratification."""


@dataclass(frozen=True)
class _CopyPlan:
    """What to generate (one entry per copy) and how copies form pairs."""

    source: np.ndarray  # input index each copy is made from
    family: np.ndarray  # index into the families list
    strength: np.ndarray
    partner: np.ndarray  # an input other than the source, for families that blend
    seed: np.ndarray  # each copy's own generator seed
    a: np.ndarray  # pair indices into (inputs + copies)
    b: np.ndarray
    label: np.ndarray


def _balanced(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """n draws from range(k), each value as often as possible (shuffled whole rounds)."""
    rounds = -(-n // k) if n else 0
    return np.concatenate([rng.permutation(k) for _ in range(rounds)] or [np.empty(0, np.int64)])[:n]


def _other(index: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """For each entry, a uniformly drawn value of range(k) different from it (k >= 2)."""
    return (index + rng.integers(1, k, size=len(index))) % k


def _plan_copies(n_inputs: int, n_copy: int, families: Sequence[str], rng: np.random.Generator) -> _CopyPlan:
    n_cc = round(COPY_COPY_SHARE * n_copy)
    n_cross = round(CROSS_SHARE * n_copy)
    n_sc = n_copy - n_cc - n_cross
    n_fam = len(families)
    # Copies 0..n_sc-1 pair with their sources; then n_cc consecutive copy pairs of one source.
    pair_source = _balanced(n_sc + n_cc, n_inputs, rng)
    fam1 = _balanced(n_sc + n_cc, n_fam, rng)
    fam2 = _other(fam1[n_sc:], n_fam, rng) if n_fam > 1 else fam1[n_sc:]
    source = np.concatenate([pair_source[:n_sc], np.repeat(pair_source[n_sc:], 2)])
    family = np.concatenate([fam1[:n_sc], np.stack([fam1[n_sc:], fam2], axis=1).ravel()])
    n_gen = len(source)
    copy_id = n_inputs + np.arange(n_gen)

    cc_first = copy_id[n_sc::2]
    crossed = rng.integers(0, max(n_sc, 1), size=n_cross)  # n_sc > 0 whenever n_cross > 0
    names = np.asarray(families, dtype=np.str_)
    a = np.concatenate([source[:n_sc], cc_first, _other(source[crossed], n_inputs, rng)])
    b = np.concatenate([copy_id[:n_sc], cc_first + 1, copy_id[crossed]])
    label = np.concatenate([
        names[family[:n_sc]],
        np.char.add(np.char.add(names[family[n_sc::2]], COPY_JOIN), names[family[n_sc + 1 :: 2]]),
        np.char.add(CROSS_PREFIX, names[family[crossed]]),
    ])
    return _CopyPlan(
        source=source,
        family=family,
        strength=rng.uniform(0.0, 1.0, size=n_gen) ** STRENGTH_POWER,
        partner=_other(source, n_inputs, rng),
        seed=rng.integers(0, 2**63 - 1, size=n_gen),
        a=a,
        b=b,
        label=label,
    )


def _make_copies(inputs: np.ndarray, plan: _CopyPlan, families: Sequence[str], progress: bool) -> np.ndarray:
    out = np.empty((len(plan.source), *inputs.shape[1:]), dtype=np.float32)
    for g in tqdm(range(len(out)), desc="near-copies", unit="image", disable=not progress, file=sys.stderr):
        family = FAMILIES[families[plan.family[g]]]
        out[g] = family(
            inputs[plan.source[g]],
            float(plan.strength[g]),
            np.random.default_rng(int(plan.seed[g])),
            partner=inputs[plan.partner[g]],
        )
    return out


def _pair_ssim(images: np.ndarray, a: np.ndarray, b: np.ndarray, device: str, progress: bool) -> np.ndarray:
    """Plain reference SSIM of (images[a], images[b]); each image is passed as one array object
    so that ssim_pairs computes its statistics once however many pairs it is in."""
    if not len(a):
        return np.empty(0)
    views = list(images)
    return ssim_pairs([views[i] for i in a], [views[j] for j in b], device=device, progress=progress)


def _candidate_pairs(n: int, n_wanted: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Up to n_wanted distinct ordered pairs (i, j), i != j, drawn uniformly without repeats."""
    total = n * (n - 1)
    # Sorted, pairs sharing a first image are neighbours: ssim_pairs' blocks then hold fewer
    # distinct images, whose statistics it computes once per block.
    k = np.sort(rng.choice(total, size=min(n_wanted, total), replace=False))
    i, r = np.divmod(k, n - 1)
    return i, r + (r >= i)


def _even_quotas(counts: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Split n over bins as evenly as their counts allow (water filling); a bin takes at most
    its count, and ties for the last few are broken at random. Sums to min(n, counts.sum())."""
    quotas = np.zeros_like(counts)
    remaining = n
    open_bins = counts > 0
    while remaining > 0 and open_bins.any():
        share = remaining // int(open_bins.sum())
        if share == 0:
            quotas[rng.choice(np.flatnonzero(open_bins), remaining, replace=False)] += 1
            break
        add = np.where(open_bins, np.minimum(counts - quotas, share), 0)
        quotas += add
        remaining -= int(add.sum())
        open_bins = quotas < counts
    return quotas


def _stratified_pairs(
    inputs: np.ndarray, n_pairs: int, n_bins: int, rng: np.random.Generator, device: str, progress: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n_pairs pairs of distinct inputs, as evenly spread over equal-width SSIM bins as the
    candidates allow; pairs repeat only when all ordered pairs of the inputs are too few."""
    if n_pairs == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
    ci, cj = _candidate_pairs(len(inputs), CANDIDATE_FACTOR * n_pairs, rng)
    ct = _pair_ssim(inputs, ci, cj, device, progress)
    lo, hi = float(ct.min()), float(ct.max())
    width = (hi - lo) / n_bins if hi > lo else 1.0
    bins = np.minimum(((ct - lo) / width).astype(np.int64), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    chosen: list[np.ndarray] = []
    left = n_pairs
    while left > 0:  # more than one round only when candidates are fewer than n_pairs
        quotas = _even_quotas(counts, left, rng)
        chosen += [rng.permutation(np.flatnonzero(bins == k))[:q] for k, q in enumerate(quotas) if q]
        left -= int(quotas.sum())
    pick = np.concatenate(chosen)
    return ci[pick], cj[pick], ct[pick]


def _check_inputs(images: np.ndarray) -> np.ndarray:
    inputs = np.ascontiguousarray(images, dtype=np.float32)
    if inputs.ndim != 3 or len(inputs) < 2:
        raise ValueError(f"images must be an (N, H, W) stack with N >= 2, got shape {inputs.shape}")
    if min(inputs.shape[1:]) < 7:
        raise ValueError(f"images must be at least 7 x 7 (the SSIM window), got {inputs.shape[1:]}")
    if not np.isfinite(inputs).all():
        raise ValueError("images contain NaN or inf")
    return inputs


def _check_options(n_pairs: int, families: Sequence[str], copy_fraction: float, n_bins: int) -> None:
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown families {unknown}: choose from {', '.join(FAMILIES)}")
    if not 0.0 <= copy_fraction <= 1.0:
        raise ValueError(f"copy_fraction must be in [0, 1], got {copy_fraction}")
    if copy_fraction > 0 and not families:
        raise ValueError("copy_fraction > 0 needs at least one family")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")


def build_pairs(
    images: np.ndarray,
    n_pairs: int,
    *,
    families: Sequence[str],
    rng: np.random.Generator,
    copy_fraction: float = 0.5,
    n_bins: int = 10,
    registered: bool = False,
    progress: bool = False,
    device: str = "cpu",
) -> PairSet:
    """``n_pairs`` training pairs of an (N, H, W) stack of clean images, with reference-SSIM
    targets; identical for identical inputs and rng state.

    About ``copy_fraction`` of the pairs involve a near-copy made by one of ``families`` at a
    strength drawn as U(0, 1) ** STRENGTH_POWER: mostly (source, copy), plus COPY_COPY_SHARE
    (copy, copy) of one source and CROSS_SHARE (input, copy of another input). The others
    are pairs of distinct inputs drawn CANDIDATE_FACTOR times over, scored, and kept as evenly
    over ``n_bins`` equal-width SSIM bins as the candidates allow. Targets are ``ssim_pairs`` values, or with
    ``registered`` the ``registered_ssim`` of each pair (slow: about 0.15 s per 128 px pair;
    the random pairs are still stratified by plain SSIM).
    """
    inputs = _check_inputs(images)
    _check_options(n_pairs, families, copy_fraction, n_bins)
    families = list(families)
    n_copy = round(copy_fraction * n_pairs)
    plan = _plan_copies(len(inputs), n_copy, families, rng)
    ra, rb, rt = _stratified_pairs(inputs, n_pairs - n_copy, n_bins, rng, device, progress)
    all_images = np.concatenate([inputs, _make_copies(inputs, plan, families, progress)])
    a = np.concatenate([plan.a, ra])
    b = np.concatenate([plan.b, rb])
    family = np.concatenate([plan.label, np.full(len(ra), RANDOM)])
    if registered:
        target = np.array([
            registered_ssim(all_images[i], all_images[j], device=device)
            for i, j in tqdm(zip(a, b), total=len(a), desc="registered ssim", unit="pair",
                             disable=not progress, file=sys.stderr)
        ])
    else:
        target = np.concatenate([_pair_ssim(all_images, plan.a, plan.b, device, progress), rt])
    return PairSet(images=all_images, a=a, b=b, target=target, family=family)


def split_by_image(
    n_images: int, val_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint, sorted train and validation indices covering range(n_images); validation gets
    round(val_fraction * n_images) images, at least one of each when 0 < val_fraction < 1."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    n_val = round(val_fraction * n_images)
    if val_fraction > 0 and n_images >= 2:
        n_val = min(max(n_val, 1), n_images - 1)
    order = rng.permutation(n_images)
    return np.sort(order[n_val:]), np.sort(order[:n_val])
