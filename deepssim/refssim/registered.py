"""Registered SSIM: the best reference SSIM over rigid re-alignments of ``b`` onto ``a``.

The slow oracle that says "these two are copies up to a rigid motion". The search is a grid
over the four flips (none, axis 0, axis 1, both), rotations about the image centre and integer
translations, then a finer grid around the best point:

- coarse: 4 flips x angles -15..15 deg in 5 deg steps (7) x shifts -4..4 px in 2 px steps
  (5 x 5) = 700 candidates;
- fine, at the best flip: best angle +-4 deg in 1 deg steps (9, never beyond +-15) x best
  shift +-1 px (3 x 3) = 81 candidates at most.

That is at most 781 SSIM evaluations and 37 image rotations per pair (bilinear, edge values repeated
outside the image): about 0.16 s per 128 x 128 pair and 0.5 s per 224 x 224 pair on 2 CPU
cores, some 200 plain SSIMs' worth (``benchmarks/ssim_speed.py``, docs/performance.md).
The identity is on the grid, so ``registered_ssim(a, b) >= ssim(a, b)`` always.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ._stats import check_image, check_pair
from .engine import Device, ssim_against_checked

FLIPS: tuple[tuple[bool, bool], ...] = ((False, False), (True, False), (False, True), (True, True))


@dataclass(frozen=True)
class SearchGrid:
    """The rigid search space of ``register`` (angles in degrees, shifts in pixels).

    Coarse angles are the multiples of ``angle_step`` within +-``max_angle`` and coarse shifts
    the multiples of ``shift_step`` within +-``max_shift``, so the identity is always on the
    grid. The fine stage never leaves +-``max_angle``.
    """

    max_angle: float = 15.0
    angle_step: float = 5.0
    max_shift: int = 4
    shift_step: int = 2
    fine_angle_span: float = 4.0
    fine_angle_step: float = 1.0
    fine_shift_span: int = 1

    def __post_init__(self) -> None:
        for name in ("angle_step", "fine_angle_step", "shift_step"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SearchGrid.{name} must be > 0, got {getattr(self, name)}")
        for name in ("max_angle", "max_shift", "fine_angle_span", "fine_shift_span"):
            if getattr(self, name) < 0:
                raise ValueError(f"SearchGrid.{name} must be >= 0, got {getattr(self, name)}")

    def coarse_angles(self) -> list[float]:
        n = int(np.floor(self.max_angle / self.angle_step + 1e-9))
        return [float(k * self.angle_step) for k in range(-n, n + 1)]

    def coarse_shifts(self) -> list[tuple[int, int]]:
        n = self.max_shift // self.shift_step
        r = [k * self.shift_step for k in range(-n, n + 1)]
        return [(dy, dx) for dy in r for dx in r]

    def fine_angles(self, centre: float) -> list[float]:
        n = int(np.floor(self.fine_angle_span / self.fine_angle_step + 1e-9))
        angles = [centre + k * self.fine_angle_step for k in range(-n, n + 1)]
        return [float(a) for a in angles if abs(a) <= self.max_angle + 1e-9]

    def fine_shifts(self, centre: tuple[int, int]) -> list[tuple[int, int]]:
        r = range(-self.fine_shift_span, self.fine_shift_span + 1)
        return [(centre[0] + dy, centre[1] + dx) for dy in r for dx in r]

    def n_evaluations(self) -> int:
        """SSIM evaluations per pair, at most (fine angles past max_angle are skipped)."""
        coarse = len(FLIPS) * len(self.coarse_angles()) * len(self.coarse_shifts())
        return coarse + len(self.fine_angles(0.0)) * len(self.fine_shifts((0, 0)))


@dataclass(frozen=True)
class Alignment:
    """The best rigid alignment of ``b`` onto ``a`` found by ``register``.

    ``b`` is flipped first (``flip`` = (axis 0, axis 1)), then rotated by ``angle`` degrees
    (counter-clockwise in array display) about its centre, then shifted by ``shift`` = (rows,
    cols) pixels. ``aligned`` is that image; ``score`` its reference SSIM against ``a``.
    """

    score: float
    flip: tuple[bool, bool]
    angle: float
    shift: tuple[int, int]
    aligned: np.ndarray = field(repr=False)


def _shifted(padded: np.ndarray, pad: int, shape: Sequence[int], shift: Sequence[int]) -> np.ndarray:
    """Integer translation as a view into an image (or volume) edge-padded by
    ``pad >= max |shift|``: ``out[p] = image[p - shift]``."""
    return padded[tuple(slice(pad - d, pad - d + n) for d, n in zip(shift, shape))]


def _rotate(image: np.ndarray, angle: float) -> np.ndarray:
    if angle == 0:
        return image
    return ndimage.rotate(image, angle, reshape=False, order=1, mode="nearest")


def _flip(image: np.ndarray, flip: Sequence[bool]) -> np.ndarray:
    """``image`` reversed along each axis whose ``flip`` entry is true."""
    axes = tuple(axis for axis, flipped in enumerate(flip) if flipped)
    return np.ascontiguousarray(np.flip(image, axes) if axes else image)


def apply_alignment(
    image: np.ndarray, flip: tuple[bool, bool], angle: float, shift: tuple[int, int]
) -> np.ndarray:
    """Flip, rotate and shift ``image`` as described in ``Alignment``."""
    moved = _rotate(_flip(check_image(image), flip), angle)
    return _moved(moved, shift)


def _moved(image: np.ndarray, shift: Sequence[int]) -> np.ndarray:
    """``image`` translated by integer ``shift``, edge values repeated, as a new array."""
    pad = max(abs(d) for d in shift)
    return np.ascontiguousarray(_shifted(np.pad(image, pad, mode="edge"), pad, image.shape, shift))


Candidate = tuple[tuple[bool, ...], Hashable, tuple[int, ...]]
"""(flip, rotation, shift): the rotation an angle (2D) or three angles (3D)."""


def best_candidate(
    a: np.ndarray,
    b: np.ndarray,
    candidates: list[Candidate],
    rotate: Callable[[np.ndarray, Hashable], np.ndarray],
    device: Device,
    ndim: int = 2,
) -> tuple[float, Candidate, np.ndarray]:
    """The candidate re-alignment of ``b`` with the highest reference SSIM against ``a``:
    its score, the candidate and the aligned image (``rotate(image, rotation)`` turns)."""
    images: list[np.ndarray] = []
    padded: dict[tuple[tuple[bool, ...], Hashable], np.ndarray] = {}
    pad = max(max(abs(d) for d in shift) for _, _, shift in candidates)
    for flip, rotation, shift in candidates:
        key = (flip, rotation)
        if key not in padded:
            # Pad each rotated image once; every shift is then a view into it.
            padded[key] = np.pad(rotate(_flip(b, flip), rotation), pad, mode="edge")
        images.append(_shifted(padded[key], pad, b.shape, shift))
    scores = ssim_against_checked(a, images, device=device, ndim=ndim)  # type: ignore[arg-type]
    k = int(np.argmax(scores))
    return float(scores[k]), candidates[k], images[k]


def register(
    a: np.ndarray, b: np.ndarray, *, grid: SearchGrid = SearchGrid(), device: Device = "auto"
) -> Alignment:
    """Search the rigid alignment of ``b`` that maximises the reference SSIM against ``a``."""
    a64, b64 = check_pair(a, b)
    coarse = [
        (flip, angle, shift)
        for flip in FLIPS
        for angle in grid.coarse_angles()
        for shift in grid.coarse_shifts()
    ]
    score, (flip, angle, shift), aligned = best_candidate(a64, b64, coarse, _rotate, device)
    fine = [
        (flip, fine_angle, fine_shift)
        for fine_angle in grid.fine_angles(angle)
        for fine_shift in grid.fine_shifts(shift)
    ]
    fine_score, best, fine_aligned = best_candidate(a64, b64, fine, _rotate, device)
    if fine_score > score:
        score, (flip, angle, shift), aligned = fine_score, best, fine_aligned
    return Alignment(
        score=score, flip=flip, angle=angle, shift=shift, aligned=aligned  # type: ignore[arg-type]
    )


def registered_ssim(
    a: np.ndarray, b: np.ndarray, *, grid: SearchGrid = SearchGrid(), device: Device = "auto"
) -> float:
    """Best reference SSIM of ``a`` against rigid re-alignments of ``b`` (see module doc)."""
    return register(a, b, grid=grid, device=device).score
