"""The case study's oracle: each sample's nearest training image by aligned SSIM.

The aligned SSIM of a pair is the audit's verification measure (``auditing.verify``, default
grid): the best reference SSIM, at 128 px, over whole-pixel shifts (+-2 px at 128), flips and
rotations of the training image and contrast curves of the sample. One definition serves both, so that
"DeepSSIM found the oracle's copy" means that the audit put the oracle's training image among
the candidates it verified, not that two registrations happened to agree near the threshold.

Which measure is a choice, and it moves the count (docs/case-study.md compares them with
``benchmarks/oracle_measures.py``): a search that resamples the sharp training image at the
generator's 64 px blurs it towards the blurrier generated sample and raises nearly every pair's
SSIM. At 128 px, after both images are upsampled alike, that interpolation bonus is gone,
which is why the oracle compares there.

Computing it for all N x M pairs would take hours, and for samples of a generator trained
without augmentation the nearest image by plain reference SSIM is almost always the aligned
nearest, so the oracle verifies each sample against its ``shortlist`` best training images by
plain SSIM (computed for every pair) and keeps the best. Aligned SSIM > 0.85 makes a sample a
copy (the benchmark's duplicate threshold).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..auditing.verify import VerifyGrid, verify_candidates
from ..classes import DUPLICATE_THRESHOLD
from ..refssim import ssim_matrix
from ..storage import atomic_write_bytes, write_csv

SHORTLIST = 10
GRID = VerifyGrid()
"""The oracle's alignment search: the audit's default verification grid, so that the case study
audits with ``verify_grid=GRID`` and both score a pair alike."""


@dataclass
class Oracle:
    """Per sample: the nearest training image, its aligned SSIM, and the plain-SSIM view."""

    nearest: np.ndarray  # index into the training images
    aligned: np.ndarray  # aligned SSIM to ``nearest``
    plain_nearest: np.ndarray  # nearest training image by plain SSIM
    plain: np.ndarray  # its plain SSIM
    threshold: float = DUPLICATE_THRESHOLD

    @property
    def is_copy(self) -> np.ndarray:
        return self.aligned > self.threshold


def nearest_training(
    train: np.ndarray, samples: np.ndarray, *, shortlist: int = SHORTLIST, grid: VerifyGrid | None = None,
    device: str = "cpu", progress: bool = False,
) -> Oracle:
    """The oracle for ``samples`` (M, H, W) against ``train`` (N, H, W); real image first.

    ``grid``: the alignment search; the default ``GRID`` is the audit's (both images resized
    to 128 px), so the oracle's SSIMs are what ``audit(..., verify=k)`` reports.
    """
    grid = grid or GRID
    S = ssim_matrix(list(train), list(samples), device=device, progress=progress).T  # (M, N)
    order = np.argsort(-S, axis=1, kind="stable")[:, :shortlist]
    nearest = np.empty(len(samples), np.int64)
    aligned = np.empty(len(samples))
    for i in tqdm(range(len(samples)), desc="oracle (aligned SSIM)", unit="sample",
                  disable=not progress, file=sys.stderr):
        scores = verify_candidates([train[j] for j in order[i]], samples[i], grid)
        k = int(np.argmax(scores))
        nearest[i], aligned[i] = order[i, k], scores[k]
    return Oracle(nearest, aligned, order[:, 0].copy(), S[np.arange(len(samples)), order[:, 0]])


def cached_nearest_training(
    path: Path, train: np.ndarray, samples: np.ndarray, names: Sequence[str], progress: bool = False
) -> Oracle:
    """``nearest_training`` of ``samples`` against ``train`` (file names ``names``), reused from
    ``path`` (CSV) when its sidecar ``.json`` says it was computed the same way (same grid,
    shortlist and counts), else computed and written there: an oracle takes long to compute."""
    how = {"measure": "auditing.verify.verified_ssim", "grid": asdict(GRID), "shortlist": SHORTLIST,
           "samples": len(samples), "train": len(train)}
    sidecar = path.with_suffix(".json")
    if path.is_file() and sidecar.is_file() and json.loads(sidecar.read_text()) == how:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        idx = {n: k for k, n in enumerate(names)}
        return Oracle(np.array([idx[r["nearest_train"]] for r in rows]),
                      np.array([float(r["aligned_ssim"]) for r in rows]),
                      np.array([idx[r["plain_nearest"]] for r in rows]),
                      np.array([float(r["plain_ssim"]) for r in rows]))
    oracle = nearest_training(train, samples, grid=GRID, progress=progress)
    rows = [{"sample": f"sample_{i:05d}", "nearest_train": names[oracle.nearest[i]],
             "aligned_ssim": f"{oracle.aligned[i]:.6f}", "is_copy": str(bool(oracle.is_copy[i])).lower(),
             "plain_nearest": names[oracle.plain_nearest[i]], "plain_ssim": f"{oracle.plain[i]:.6f}"}
            for i in range(len(samples))]
    write_csv(path, list(rows[0]), rows)
    atomic_write_bytes(sidecar, (json.dumps(how, indent=2) + "\n").encode())
    return oracle
