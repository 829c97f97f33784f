"""The case study's oracle: each sample's nearest training image by registered SSIM.

Registered SSIM (``refssim.registered_ssim``: the best reference SSIM over flips, rotations and
shifts) for all pairs costs O(N x M) registrations; the nearest neighbour by plain reference
SSIM is almost always the registered one for samples of a generator trained without
augmentation, so the oracle registers each sample against its ``shortlist`` best training
images by plain SSIM (computed for every pair) and keeps the best. ``registered_ssim`` > 0.85
makes a sample a copy (the benchmark's duplicate threshold).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from ..benchmark.layout import DUPLICATE_THRESHOLD
from ..refssim import registered_ssim, ssim_matrix

SHORTLIST = 5


@dataclass
class Oracle:
    """Per sample: the nearest training image, its registered SSIM, and the plain-SSIM view."""

    nearest: np.ndarray  # index into the training images
    registered: np.ndarray  # registered SSIM to ``nearest``
    plain_nearest: np.ndarray  # nearest training image by plain SSIM
    plain: np.ndarray  # its plain SSIM
    threshold: float = DUPLICATE_THRESHOLD

    @property
    def is_copy(self) -> np.ndarray:
        return self.registered > self.threshold


def nearest_training(
    train: np.ndarray, samples: np.ndarray, *, shortlist: int = SHORTLIST, device: str = "cpu",
    progress: bool = False,
) -> Oracle:
    """The oracle for ``samples`` (M, H, W) against ``train`` (N, H, W); real image first."""
    S = ssim_matrix(list(train), list(samples), device=device, progress=progress).T  # (M, N)
    order = np.argsort(-S, axis=1, kind="stable")[:, :shortlist]
    nearest = np.empty(len(samples), np.int64)
    registered = np.empty(len(samples))
    for i in tqdm(range(len(samples)), desc="oracle (registered SSIM)", unit="sample",
                  disable=not progress, file=sys.stderr):
        scores = [registered_ssim(train[j], samples[i], device=device) for j in order[i]]
        k = int(np.argmax(scores))
        nearest[i], registered[i] = order[i, k], scores[k]
    return Oracle(nearest, registered, order[:, 0].copy(), S[np.arange(len(samples)), order[:, 0]])
