"""The audit's options as small frozen objects: what to read, how to search, what to verify.

Their field defaults are the defaults of ``audit()`` and of ``deepssim audit``, which takes
its flags' defaults and help text from here. Each object checks its own values when built,
so a bad option fails before any image is read. This module loads no torch: the command line
reads these defaults at start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..classes import REFERENCE_THRESHOLDS, Thresholds
from ..readers import SliceSpec
from ..readers.read import reading_workers
from .decide import resolve_thresholds
from .nearest import check_search_options

if TYPE_CHECKING:  # torch is imported when a grid is used
    from ..transforms.perturb import PerturbParams

DEPTH_PER_TOP = 4
"""Candidates verified at most per image, in multiples of ``VerifyOptions.top``, unless
``VerifyOptions.max`` says otherwise."""

DEFAULT_FPR = 0.01
"""The false-alarm rate of a holdout's duplicate threshold when none is given (``holdout.py``)."""

# The lower bounds of the options' integers, read by the command line's flag types too.
MIN_TOP_K = 1
MIN_VERIFY_TOP = 0
MIN_BATCH_SIZE = 1
MIN_GRID_SIZE = 8
MIN_MAX_SHIFT = 0


def _check_int(value: object, name: str, low: int, note: str = "") -> None:
    """Refuse ``value`` unless it is an integer >= ``low`` (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}{note}, got {value!r}")


@dataclass(frozen=True)
class SearchOptions:
    """How each synthetic image's closest training images are found.

    Attributes:
        top_k: Training matches kept per synthetic image.
        backend: ``exact`` (streamed matrix products), ``faiss``, or ``auto`` (by size).
        index: ``flat`` (exact) or an approximate FAISS index, ``ivf`` or ``hnsw``, whose
            measured recall goes into the summary.
    """

    top_k: int = 5
    backend: str = "auto"
    index: str = "flat"

    def __post_init__(self) -> None:
        _check_int(self.top_k, "top_k", MIN_TOP_K)
        check_search_options(self.backend, self.index)


@dataclass(frozen=True)
class VerifyGrid:
    """The changes verification undoes before comparing (angles in degrees; gamma as an
    exponent; shifts in pixels of the ``size`` x ``size`` grid both images are resized to:
    ``max_shift`` 2 at 128 is 1 pixel of a 64 px image)."""

    max_angle: float = 10.0
    angle_step: float = 5.0
    max_gamma: float = 2.0
    gamma_steps: int = 5
    size: int = 128
    max_shift: int = 2

    def __post_init__(self) -> None:
        if self.angle_step <= 0 or self.max_angle < 0:
            raise ValueError("VerifyGrid needs angle_step > 0 and max_angle >= 0")
        if self.max_gamma < 1 or self.gamma_steps < 1:
            raise ValueError("VerifyGrid needs max_gamma >= 1 and gamma_steps >= 1")
        _check_int(self.max_shift, "VerifyGrid max_shift", MIN_MAX_SHIFT)
        _check_int(self.size, "VerifyGrid size", MIN_GRID_SIZE)

    def shifts(self, around: tuple[int, int] | None = None) -> list[tuple[int, int]]:
        """Integer shifts (rows, cols) within +-``max_shift``, the identity first; with
        ``around``: that shift and its 8 neighbours on the grid."""
        r = range(-self.max_shift, self.max_shift + 1)
        if around is None:
            return [(0, 0)] + [(dy, dx) for dy in r for dx in r if (dy, dx) != (0, 0)]
        near = [(around[0] + dy, around[1] + dx) for dy in (0, -1, 1) for dx in (0, -1, 1)]
        return [(dy, dx) for dy, dx in near if abs(dy) <= self.max_shift and abs(dx) <= self.max_shift]

    def coarse(self) -> PerturbParams:
        n = int(np.floor(self.max_angle / self.angle_step + 1e-9))
        angles = np.arange(-n, n + 1) * self.angle_step
        gammas = self.max_gamma ** np.linspace(-1.0, 1.0, self.gamma_steps) if self.gamma_steps > 1 else np.ones(1)
        return _product([False, True], [False, True], angles, gammas)

    def fine(self, best: PerturbParams, level: int = 1) -> PerturbParams:
        """Around the best point so far: level 1 a quarter and a half angle step either side,
        and a quarter of the coarse gamma ratio (in exponent) either side; level 2 an eighth
        of both."""
        if level not in (1, 2):
            raise ValueError(f"fine grid level must be 1 or 2, got {level}")
        offsets = np.array([-0.5, -0.25, 0.0, 0.25, 0.5]) if level == 1 else np.array([-0.125, 0.0, 0.125])
        angles = float(best.degrees[0]) + offsets * self.angle_step
        angles = angles[np.abs(angles) <= self.max_angle + 1e-9]
        ratio = self.max_gamma ** (1.0 / max(1, self.gamma_steps - 1))
        gammas = float(best.gamma[0]) * ratio ** (np.array([-0.5, 0.0, 0.5]) / level)
        return _product([bool(best.flip0[0])], [bool(best.flip1[0])], angles, gammas)


def _product(flip0: Sequence[bool], flip1: Sequence[bool], angles: np.ndarray, gammas: np.ndarray) -> PerturbParams:
    from ..transforms.perturb import PerturbParams

    grid = np.array(np.meshgrid(np.arange(len(flip0)), np.arange(len(flip1)), angles, gammas,
                                indexing="ij")).reshape(4, -1)
    return PerturbParams(np.asarray(flip0)[grid[0].astype(int)], np.asarray(flip1)[grid[1].astype(int)],
                         grid[2].astype(np.float64), grid[3].astype(np.float64))


@dataclass(frozen=True)
class VerifyOptions:
    """Verification: the best candidates of every suspicious synthetic image (best score
    above the low threshold) re-scored by the reference SSIM after undoing flips, rotations,
    shifts and contrast changes (``verify.py``); the best verified candidate becomes rank 1
    and its verified SSIM decides the class.

    Attributes:
        top: Candidates verified at most per suspicious image, by blocks of
            ``rerank.BLOCK`` in DeepSSIM order, the next block only while no duplicate is
            found and its first candidate scores above the low threshold; 0 turns
            verification off.
        max: Where all candidates verified so far are duplicates (it copies one of a cluster
            of near-identical training images, which fill its candidates), it goes on past
            ``top``, up to ``max`` candidates. None:
            ``DEPTH_PER_TOP * top``; ``top`` turns this off.
        thresholds: ``(low, high)``, ``"low,high"`` or ``Thresholds`` for the verified SSIMs
            (kept as ``Thresholds``); None: the reference 0.60 / 0.85 (``REFERENCE_THRESHOLDS``).
        grid: The changes undone.
        correct: Take off the verified SSIM's lean, measured on near-copies of the training
            images (``correction.py``), so that it estimates the clean-frame SSIM; False keeps
            the raw best SSIM over the grid, which reads high for near-copies.
    """

    top: int = 20
    max: int | None = None
    thresholds: Thresholds | tuple[float, float] | str | None = None
    grid: VerifyGrid = VerifyGrid()
    correct: bool = True

    def __post_init__(self) -> None:
        _check_int(self.top, "verify top", MIN_VERIFY_TOP, " (0: off)")
        if not isinstance(self.correct, bool):
            raise ValueError(f"verify correct must be True or False, got {self.correct!r}")
        if self.max is not None and (isinstance(self.max, bool) or not isinstance(self.max, (int, np.integer))):
            raise ValueError(f"verify max must be an integer or None, got {self.max!r}")
        if self.max is not None and self.max < self.top:
            raise ValueError(f"verify max ({self.max}) must be at least verify top ({self.top})")
        if not isinstance(self.grid, VerifyGrid):
            raise ValueError(f"verify grid must be a VerifyGrid, got {self.grid!r}")
        if self.thresholds is not None:
            object.__setattr__(self, "thresholds", resolve_thresholds(self.thresholds, None, {},
                                                                      "--verify-thresholds"))

    @property
    def depth(self) -> int:
        """Candidates verified at most per image (0 when verification is off)."""
        if not self.top:
            return 0
        return DEPTH_PER_TOP * self.top if self.max is None else int(self.max)

    @property
    def decision_thresholds(self) -> Thresholds:
        """The thresholds applied to verified SSIMs."""
        return REFERENCE_THRESHOLDS if self.thresholds is None else self.thresholds  # type: ignore[return-value]


@dataclass(frozen=True)
class ReadOptions:
    """How the images are read and embedded.

    Attributes:
        slices: The 2D slices taken from volumes.
        skip_unreadable: Audit the readable images and list the others in the summary
            instead of stopping with an error that names them.
        batch_size: Images per network batch; results do not depend on it.
        workers: Threads that read and resize the files while the network runs; None:
            ``reading_workers()``, half the cores up to ``MAX_READING_WORKERS``. Results do
            not depend on it.
    """

    slices: SliceSpec = SliceSpec()
    skip_unreadable: bool = False
    batch_size: int = 64
    workers: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.slices, SliceSpec):
            raise ValueError(f"slices must be a SliceSpec, got {self.slices!r}")
        _check_int(self.batch_size, "batch_size", MIN_BATCH_SIZE)
        if self.workers is not None:
            reading_workers(self.workers)  # raises on a bad count

    @property
    def threads(self) -> int:
        """Reading threads: ``workers``, or the default for this machine."""
        return reading_workers(self.workers)
