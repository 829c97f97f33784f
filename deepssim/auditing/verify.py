"""Verification: the reference SSIM of a candidate pair, undoing a structure-preserving change.

DeepSSIM finds candidates fast; verification re-scores the few best candidates of each
suspicious synthetic image with the reference metric itself. A copy may come back flipped,
rotated or re-contrasted, so the pair is compared under every change of a small grid of the
paper's perturbations: the training image is flipped (4 ways) and rotated within
+-``max_angle``, and the synthetic image's contrast curve is undone by gamma exponents
1/``max_gamma``..``max_gamma``; the best SSIM over the grid, then over a finer grid around its
best point, is the verified score. It estimates the SSIM of the pair "as if aligned", the
quantity DeepSSIM learns, with no model in the loop. Because it is a maximum over ~115
candidates it reads a little high for unrelated images, and hardly at all for copies.

Cost: 100 coarse + 15 fine SSIM evaluations at ``size`` (128 px: ~60 ms a pair on 2 CPU cores,
measured in ``benchmarks/audit_quality.py``), against the N x M SSIMs that an exhaustive audit
would need.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..model.preprocess import Preprocess
from .decide import Thresholds
from ..refssim import ssim_pairs
from ..training.augment import PerturbParams, apply_params


REFERENCE_THRESHOLDS = Thresholds(0.60, 0.85, source="reference")
"""Verified scores are reference SSIMs: they are classed with the paper's thresholds."""


@dataclass(frozen=True)
class VerifyGrid:
    """The changes undone before comparing (angles in degrees; gamma as an exponent)."""

    max_angle: float = 10.0
    angle_step: float = 5.0
    max_gamma: float = 2.0
    gamma_steps: int = 5
    size: int = 128

    def __post_init__(self) -> None:
        if self.angle_step <= 0 or self.max_angle < 0:
            raise ValueError("VerifyGrid needs angle_step > 0 and max_angle >= 0")
        if self.max_gamma < 1 or self.gamma_steps < 1:
            raise ValueError("VerifyGrid needs max_gamma >= 1 and gamma_steps >= 1")

    def coarse(self) -> PerturbParams:
        n = int(np.floor(self.max_angle / self.angle_step + 1e-9))
        angles = np.arange(-n, n + 1) * self.angle_step
        gammas = self.max_gamma ** np.linspace(-1.0, 1.0, self.gamma_steps) if self.gamma_steps > 1 else np.ones(1)
        return _product([False, True], [False, True], angles, gammas)

    def fine(self, best: PerturbParams) -> PerturbParams:
        """Around the best coarse point: quarter angle steps, and gamma between its neighbours."""
        angles = float(best.degrees[0]) + np.array([-0.5, -0.25, 0.0, 0.25, 0.5]) * self.angle_step
        angles = angles[np.abs(angles) <= self.max_angle + 1e-9]
        ratio = self.max_gamma ** (1.0 / max(1, self.gamma_steps - 1))
        gammas = float(best.gamma[0]) * ratio ** np.array([-0.5, 0.0, 0.5])
        return _product([bool(best.flip0[0])], [bool(best.flip1[0])], angles, gammas)


def _product(flip0: Sequence[bool], flip1: Sequence[bool], angles: np.ndarray, gammas: np.ndarray) -> PerturbParams:
    grid = np.array(np.meshgrid(np.arange(len(flip0)), np.arange(len(flip1)), angles, gammas,
                                indexing="ij")).reshape(4, -1)
    return PerturbParams(np.asarray(flip0)[grid[0].astype(int)], np.asarray(flip1)[grid[1].astype(int)],
                         grid[2].astype(np.float64), grid[3].astype(np.float64))


def _best(train: torch.Tensor, synthetic: torch.Tensor, params: PerturbParams) -> tuple[float, int]:
    """Best SSIM over ``params`` of (train moved by the flips and rotation) against (synthetic
    with the contrast exponent applied); its value and index in ``params``.

    The training image is moved forward, as the copy was, rather than the copy moved back: then
    each side has been resampled once, as in the clean pair, and the estimate of the clean
    SSIM is tighter (on 120 benchmark copies of SSIM 0.75-0.95: r 0.94 against 0.86).
    Gamma acts on the synthetic image min-max scaled to [0, 1]; SSIM z-scores each image, so
    the original intensity range need not be restored.
    """
    geometry = np.stack([params.flip0, params.flip1, params.degrees]).T
    unique, inverse = np.unique(geometry, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    n = len(unique)
    moved = apply_params(train.expand(n, -1, -1).contiguous(),
                         PerturbParams(unique[:, 0].astype(bool), unique[:, 1].astype(bool), unique[:, 2], np.ones(n)))
    lo, hi = synthetic.min(), synthetic.max()
    unit = (synthetic - lo) / (hi - lo).clamp(min=1e-12)
    gammas, which = np.unique(params.gamma, return_inverse=True)
    curved = unit.expand(len(gammas), -1, -1).pow(torch.as_tensor(gammas, dtype=unit.dtype).view(-1, 1, 1))
    # One call, each distinct array passed once: the engine computes its statistics once.
    trains = list(moved.numpy().astype(np.float64))
    synths = list(curved.numpy())
    scores = ssim_pairs([trains[g] for g in inverse], [synths[j] for j in which.ravel()],
                        device="cpu", progress=False)
    k = int(np.argmax(scores))
    return float(scores[k]), k


def verified_ssim(train: np.ndarray, synthetic: np.ndarray, grid: VerifyGrid = VerifyGrid()) -> float:
    """The best reference SSIM of ``train`` against ``synthetic`` over the changes of the grid.

    Both images are first resized to ``grid.size`` squared (stretch, bilinear).
    """
    prep = Preprocess(size=grid.size)
    a = torch.from_numpy(np.array(prep.resize(train), dtype=np.float32))[None]
    b = torch.from_numpy(np.array(prep.resize(synthetic), dtype=np.float32))
    coarse = grid.coarse()
    score, k = _best(a, b, coarse)
    fine_score, _ = _best(a, b, grid.fine(coarse[k]))
    return max(score, fine_score)


def verify_pairs(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]], grid: VerifyGrid = VerifyGrid(), *, progress: bool = False
) -> np.ndarray:
    """``verified_ssim`` of each ``(train, synthetic)`` pair, float64 (P,)."""
    out = np.empty(len(pairs), dtype=np.float64)
    for k, (a, b) in enumerate(tqdm(pairs, desc="verify", unit="pair", file=sys.stderr, disable=not progress)):
        out[k] = verified_ssim(a, b, grid)
    return out
