"""The audit's verification step: which candidates are verified, and their re-ranking.

Every suspicious synthetic image (its best DeepSSIM score above the low threshold, and no
byte copy of a training image) has its best candidates verified (``verify.py``) and re-ranked
by verified SSIM, which then decides its class (``decide.py``).
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

import numpy as np

from ..readers import ImageRef, load_ref
from .candidates import Candidates
from .options import VerifyGrid, VerifyOptions
from .verify import verify_pairs


def verify_suspicious(
    candidates: Candidates, low: float, options: VerifyOptions, synthetic_refs: list[ImageRef],
    train_refs: list[ImageRef], *, progress: bool,
) -> tuple[Candidates, dict[str, Any]]:
    """``candidates`` with those of every suspicious image (first score above ``low``)
    verified and re-ranked by verified SSIM; a byte copy's first candidate counts as verified,
    with SSIM 1.

    Returns:
        The candidates, and the summary's ``verify`` entry.
    """
    exact = candidates.exact
    suspicious = np.flatnonzero((candidates.scores[:, 0] > low) & ~exact)
    scores, indices, verified, extended = _verify(
        candidates.scores, candidates.indices, suspicious, options.top, options.depth,
        options.decision_thresholds.duplicate_min, synthetic_refs, train_refs, options.grid, progress)
    verified[exact, 0] = 1.0
    summary = {"top": options.top, "max": options.depth, "extended": extended,
               "synthetic_images": int(len(suspicious)),
               "pairs": int(np.isfinite(verified).sum() - exact.sum()),
               "thresholds": options.decision_thresholds.to_dict(), "grid": asdict(options.grid)}
    return replace(candidates, scores=scores, indices=indices, verified=verified), summary


def _verify(
    scores: np.ndarray, indices: np.ndarray, rows: np.ndarray, top: int, most: int, duplicate_min: float,
    synth_refs: list[ImageRef], train_refs: list[ImageRef], grid: VerifyGrid, progress: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Verified SSIM of the ``top`` candidates of ``rows``, which are re-ranked by it.

    Where every candidate verified so far is a duplicate (verified SSIM > ``duplicate_min``),
    the image copies a cluster of near-identical training images, and the best of them can
    rank further down by DeepSSIM: the next ``top`` candidates are verified too, up to
    ``most`` in all. Returns the scores, indices and verified SSIMs (NaN where not verified),
    re-ordered, and the number of images whose candidates were extended.
    """
    scores, indices = scores.copy(), indices.copy()
    verified = np.full(scores.shape, np.nan)
    synthetic = {int(s): load_ref(synth_refs[s]) for s in rows}
    train_images: dict[int, np.ndarray] = {}
    todo, start, end = [int(s) for s in rows], 0, min(most, scores.shape[1])
    while todo and start < end:
        stop = min(start + top, end)
        pairs, where = [], []
        for s in todo:
            for r in range(start, stop):
                t = int(indices[s, r])
                if t < 0:  # an approximate index found fewer neighbours
                    continue
                if t not in train_images:
                    train_images[t] = load_ref(train_refs[t])
                pairs.append((train_images[t], synthetic[s]))
                where.append((s, r))
        for (s, r), v in zip(where, verify_pairs(pairs, grid, progress=progress)):
            verified[s, r] = v
        found = indices[:, start:stop] >= 0  # a block an approximate index left empty is passed over
        todo = [s for s in todo if np.all(verified[s, start:stop][found[s]] > duplicate_min)]
        start = stop
    extended = int(np.isfinite(verified[rows, top:]).any(axis=1).sum()) if len(rows) else 0
    for s in rows:
        span = int(np.flatnonzero(np.isfinite(verified[s])).max(initial=-1)) + 1
        order = np.argsort(-verified[s, :span], kind="stable")  # NaN (empty slots) last
        for arr in (scores, indices, verified):
            arr[s, :span] = arr[s, :span][order]
    return scores, indices, verified, extended
