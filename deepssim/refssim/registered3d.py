"""Registered SSIM of volumes: the best 3D reference SSIM over rigid re-alignments of ``b``.

The 3D counterpart of ``registered`` (the slow oracle for "these two volumes are copies up to
a rigid motion"). A rotation is three angles, one about each axis, so a full product grid
would be costly; the search is instead a coarse grid, then hill climbing on a finer one:

- coarse: 8 flips (each axis flipped or not) x 13 orientations (the identity, and a rotation
  about one axis at a time by +-5 or +-10 degrees) x shifts -2..2 voxels in 2-voxel steps
  (3 x 3 x 3) = 2,808 candidates;
- fine, at the best flip, for each angle step (2 then 1 degree), hill climbing: each round
  scores the 27 rotations of the best angles +-step (every combination over the three axes,
  never beyond +-10) at the best shift, and the 26 shifts of the best shift +-1 voxel at the
  best angles (53 candidates), and moves to the best of them while that improves the score
  (at most ``max_rounds`` rounds per step).

The identity is on the grid, so ``registered_ssim3d(a, b) >= ssim(a, b, ndim=3)`` always.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage, special

from ._stats import check_image, check_pair
from .engine import Device
from .registered import Candidate, _flip, _moved, best_candidate

Angles = tuple[float, float, float]
"""Degrees about axis 0, axis 1 and axis 2, applied in that order."""
Flip3D = tuple[bool, bool, bool]
Shift3D = tuple[int, int, int]

FLIPS_3D: tuple[Flip3D, ...] = tuple(itertools.product((False, True), repeat=3))  # type: ignore[assignment]


@dataclass(frozen=True)
class SearchGrid3D:
    """The rigid search space of ``register3d`` (angles in degrees, shifts in voxels).

    Coarse angles are the non-zero multiples of ``angle_step`` within +-``max_angle``, about one
    axis at a time, plus the identity; coarse shifts the multiples of ``shift_step`` within
    +-``max_shift`` along each axis. The fine stage climbs by each of ``fine_angle_steps`` in
    turn over all three angles at once, with the shift +-``fine_shift_span``; it never leaves
    +-``max_angle``.
    """

    max_angle: float = 10.0
    angle_step: float = 5.0
    max_shift: int = 2
    shift_step: int = 2
    fine_angle_steps: tuple[float, ...] = (2.0, 1.0)
    fine_shift_span: int = 1
    max_rounds: int = 6

    def __post_init__(self) -> None:
        for name in ("angle_step", "shift_step", "max_rounds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SearchGrid3D.{name} must be > 0, got {getattr(self, name)}")
        if not all(step > 0 for step in self.fine_angle_steps):
            raise ValueError(
                f"SearchGrid3D.fine_angle_steps must all be > 0, got {self.fine_angle_steps}"
            )
        for name in ("max_angle", "max_shift", "fine_shift_span"):
            if getattr(self, name) < 0:
                raise ValueError(f"SearchGrid3D.{name} must be >= 0, got {getattr(self, name)}")

    def coarse_rotations(self) -> list[Angles]:
        n = int(np.floor(self.max_angle / self.angle_step + 1e-9))
        steps = [float(k * self.angle_step) for k in range(-n, n + 1) if k != 0]
        out: list[Angles] = [(0.0, 0.0, 0.0)]
        for axis in range(3):
            for angle in steps:
                angles = [0.0, 0.0, 0.0]
                angles[axis] = angle
                out.append(tuple(angles))  # type: ignore[arg-type]
        return out

    def coarse_shifts(self) -> list[Shift3D]:
        n = self.max_shift // self.shift_step
        r = [k * self.shift_step for k in range(-n, n + 1)]
        return list(itertools.product(r, repeat=3))  # type: ignore[arg-type]

    def fine_rotations(self, centre: Angles, step: float) -> list[Angles]:
        """The best angles +-``step`` on each axis, within +-``max_angle``."""
        options = [
            [float(c + k * step) for k in (-1, 0, 1) if abs(c + k * step) <= self.max_angle + 1e-9]
            for c in centre
        ]
        return list(itertools.product(*options))  # type: ignore[arg-type]

    def fine_shifts(self, centre: Shift3D) -> list[Shift3D]:
        r = range(-self.fine_shift_span, self.fine_shift_span + 1)
        return [tuple(c + d for c, d in zip(centre, delta)) for delta in itertools.product(r, repeat=3)]  # type: ignore[misc]

    def n_coarse(self) -> int:
        """SSIM evaluations of the coarse stage."""
        return len(FLIPS_3D) * len(self.coarse_rotations()) * len(self.coarse_shifts())


@dataclass(frozen=True)
class Alignment3D:
    """The best rigid alignment of volume ``b`` onto ``a`` found by ``register3d``.

    ``b`` is flipped first (``flip`` = (axis 0, axis 1, axis 2)), then rotated about its centre
    by ``angles`` degrees about axis 0, then axis 1, then axis 2 (each as
    ``scipy.ndimage.rotate(volume, angle, axes=<the two other axes>)`` turns it), then shifted
    by ``shift`` voxels along (axis 0, axis 1, axis 2). ``aligned`` is that volume; ``score``
    its 3D reference SSIM against ``a``; ``evaluations`` the SSIMs the search computed.
    """

    score: float
    flip: Flip3D
    angles: Angles
    shift: Shift3D
    evaluations: int
    aligned: np.ndarray = field(repr=False)


def rotation_matrix(angles: Angles) -> np.ndarray:
    """The 3 x 3 matrix taking output voxel coordinates (about the centre) to input ones for
    ``angles`` (as ``scipy.ndimage.affine_transform`` takes it)."""
    m = np.eye(3)
    for axis, angle in enumerate(angles):
        if angle:
            p, q = (k for k in range(3) if k != axis)
            c, s = special.cosdg(angle), special.sindg(angle)
            plane = np.eye(3)
            plane[p, p], plane[p, q], plane[q, p], plane[q, q] = c, s, -s, c
            # Turning about axis 0 first, then 1, then 2: the input-from-output map composes
            # in the same order.
            m = m @ plane
    return m


def rotate3d(volume: np.ndarray, angles: Hashable) -> np.ndarray:
    """``volume`` rotated by ``angles`` about its centre in one interpolation (trilinear,
    edge values repeated outside the volume)."""
    angles = tuple(angles)  # type: ignore[arg-type]
    if not any(angles):
        return volume
    m = rotation_matrix(angles)  # type: ignore[arg-type]
    centre = (np.asarray(volume.shape, dtype=np.float64) - 1.0) / 2.0
    return ndimage.affine_transform(volume, m, offset=centre - m @ centre, order=1, mode="nearest")


def apply_alignment3d(volume: np.ndarray, flip: Flip3D, angles: Angles, shift: Shift3D) -> np.ndarray:
    """Flip, rotate and shift ``volume`` as described in ``Alignment3D``."""
    return _moved(rotate3d(_flip(check_image(volume, "volume", 3), flip), angles), shift)


def register3d(
    a: np.ndarray, b: np.ndarray, *, grid: SearchGrid3D = SearchGrid3D(), device: Device = "auto"
) -> Alignment3D:
    """Search the rigid alignment of volume ``b`` that maximises the 3D reference SSIM
    against volume ``a`` (both (D, H, W), one size; see the module doc for the search)."""
    a64, b64 = check_pair(a, b, 3)
    coarse: list[Candidate] = [
        (flip, angles, shift)
        for flip in FLIPS_3D
        for angles in grid.coarse_rotations()
        for shift in grid.coarse_shifts()
    ]
    evaluations = len(coarse)
    score, best, aligned = best_candidate(a64, b64, coarse, rotate3d, device, ndim=3)
    flip, angles, shift = best
    for step in grid.fine_angle_steps:
        for _ in range(grid.max_rounds):
            # One climbing round: the 27 rotations at the best shift, and the shifts of the
            # fine span at the best rotation (alternating, not their product: 53, not 729).
            rotations = grid.fine_rotations(angles, step)  # type: ignore[arg-type]
            shifts = [s for s in grid.fine_shifts(shift) if s != shift]  # type: ignore[arg-type]
            fine: list[Candidate] = [(flip, rotation, shift) for rotation in rotations]
            fine += [(flip, angles, moved) for moved in shifts]
            evaluations += len(fine)
            fine_score, fine_best, fine_aligned = best_candidate(
                a64, b64, fine, rotate3d, device, ndim=3
            )
            if fine_score <= score:
                break
            score, aligned = fine_score, fine_aligned
            _, angles, shift = fine_best
    return Alignment3D(
        score=score,
        flip=flip,  # type: ignore[arg-type]
        angles=tuple(float(x) for x in angles),  # type: ignore[arg-type, union-attr]
        shift=tuple(int(x) for x in shift),  # type: ignore[arg-type]
        evaluations=evaluations,
        aligned=np.ascontiguousarray(aligned),
    )


def registered_ssim3d(
    a: np.ndarray, b: np.ndarray, *, grid: SearchGrid3D = SearchGrid3D(), device: Device = "auto"
) -> float:
    """Best 3D reference SSIM of volume ``a`` against rigid re-alignments of volume ``b``."""
    return register3d(a, b, grid=grid, device=device).score
