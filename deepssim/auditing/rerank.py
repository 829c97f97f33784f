"""The audit's verification step: which candidates are verified, and their re-ranking.

Every suspicious synthetic image (its best DeepSSIM score above the low threshold, and no
byte copy of a training image) has its best candidates verified (``verify.py``), less the
verification's lean (``correction.py``), and re-ranked by verified SSIM, which then decides
its class (``decide.py``). The candidates are verified as a cascade, by blocks in DeepSSIM
order, each block only where the class can still change (``_verify``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from typing import Any

import numpy as np

from ..readers import ImageRef, load_ref
from .candidates import Candidates
from .options import VerifyGrid, VerifyOptions
from .verify import verify_pairs

Correction = Callable[[np.ndarray], np.ndarray]
"""A map of verified SSIMs to the values that decide (``correction.VerifyCorrection``)."""

BLOCK = 5
"""Candidates of an image verified at once: the next block only where the class can change."""

FIT_ROUNDS = 10
"""Rounds of verifying the holdout and fitting its threshold, at most (``verify_null``)."""


def verify_suspicious(
    candidates: Candidates, low: float, options: VerifyOptions, synthetic_refs: list[ImageRef],
    train_refs: list[ImageRef], *, progress: bool, correction: Correction | None = None,
) -> tuple[Candidates, dict[str, Any]]:
    """``candidates`` with those of every suspicious image (first score above ``low``)
    verified and re-ranked by verified SSIM (mapped by ``correction`` when given); a byte
    copy's first candidate counts as verified, with SSIM 1.

    Returns:
        The candidates, and the summary's ``verify`` entry.
    """
    exact = candidates.exact
    suspicious = np.flatnonzero((candidates.scores[:, 0] > low) & ~exact)
    scores, indices, verified, extended = _verify(
        candidates.scores, candidates.indices, suspicious, options.top, options.depth,
        options.decision_thresholds.duplicate_min, synthetic_refs, train_refs, options.grid, progress, correction,
        low)
    verified[exact, 0] = 1.0
    summary = {"top": options.top, "max": options.depth, "extended": extended,
               "synthetic_images": int(len(suspicious)),
               "pairs": int(np.isfinite(verified).sum() - exact.sum()),
               "thresholds": options.decision_thresholds.to_dict(), "grid": asdict(options.grid)}
    return replace(candidates, scores=scores, indices=indices, verified=verified), summary


def _verify(
    scores: np.ndarray, indices: np.ndarray, rows: np.ndarray, top: int, most: int, duplicate_min: float,
    synth_refs: list[ImageRef], train_refs: list[ImageRef], grid: VerifyGrid, progress: bool,
    correction: Correction | None = None, low: float = -np.inf,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Verified SSIM of candidates of ``rows``, which are re-ranked by it: a cascade by blocks
    of ``BLOCK`` candidates, in DeepSSIM order.

    An image goes on to its next block while it has no verified duplicate (verified SSIM >
    ``duplicate_min``) among its first ``top`` candidates and the next candidate scores above
    ``low`` (a candidate at or below it is never verified): once a duplicate is found its class
    is settled. Where every candidate verified so far is a duplicate, the image copies a
    cluster of near-identical training images, and the best of them can rank further down by
    DeepSSIM: it goes on too, up to ``most`` candidates in all. Returns the scores, indices and
    verified SSIMs (NaN where not verified), re-ordered, and the number of images whose
    candidates went past ``top``.
    """
    scores, indices = scores.copy(), indices.copy()
    verified = np.full(scores.shape, np.nan)
    synthetic = {int(s): load_ref(synth_refs[s]) for s in rows}
    train_images: dict[int, np.ndarray] = {}
    todo, start, end = [int(s) for s in rows], 0, min(most, scores.shape[1])
    block = max(1, min(BLOCK, top))
    while todo and start < end:
        stop = min(start + block, end)
        pairs, where = [], []
        for s in todo:
            for r in range(start, stop):
                t = int(indices[s, r])
                if t < 0 or scores[s, r] <= low:  # an empty slot, or a candidate too far to be a copy
                    continue
                if t not in train_images:
                    train_images[t] = load_ref(train_refs[t])
                pairs.append((train_images[t], synthetic[s]))
                where.append((s, r))
        for (s, r), v in zip(where, _verified(pairs, grid, progress, correction)):
            verified[s, r] = v
        nxt = []
        for s in todo:
            seen = verified[s, :stop][np.isfinite(verified[s, :stop])]
            duplicates = seen > duplicate_min
            if stop >= end or not len(seen):
                continue
            if duplicates.all() or (stop < top and not duplicates.any() and scores[s, stop] > low
                                    and indices[s, stop] >= 0):
                nxt.append(s)
        todo, start = nxt, stop
    extended = int(np.isfinite(verified[rows, top:]).any(axis=1).sum()) if len(rows) else 0
    _rerank(scores, indices, verified, rows)
    return scores, indices, verified, extended


def _verified(pairs: list[tuple[np.ndarray, np.ndarray]], grid: VerifyGrid, progress: bool,
              correction: Correction | None) -> np.ndarray:
    """The verified SSIM of each pair, mapped by ``correction`` when given."""
    raw = verify_pairs(pairs, grid, progress=progress)
    return raw if correction is None else correction(raw)


def _rerank(scores: np.ndarray, indices: np.ndarray, verified: np.ndarray, rows: Sequence[int]) -> None:
    """Re-order, in place, the verified candidates of ``rows`` by verified SSIM, best first."""
    for s in rows:
        span = int(np.flatnonzero(np.isfinite(verified[s])).max(initial=-1)) + 1
        order = np.argsort(-verified[s, :span], kind="stable")  # NaN (empty slots) last
        for arr in (scores, indices, verified):
            arr[s, :span] = arr[s, :span][order]


def verify_null(
    candidates: Candidates, options: VerifyOptions, holdout_refs: list[ImageRef], train_refs: list[ImageRef],
    *, fit: Callable[[np.ndarray], float] | None, progress: bool, correction: Correction | None = None,
) -> tuple[Candidates, dict[str, Any]]:
    """The holdout's candidates verified as a synthetic image's are, but for every holdout
    image whatever its DeepSSIM score (the null must be on the verified-SSIM scale for all of
    them); a byte copy's first candidate counts as verified, with SSIM 1.

    The ``max`` extension (``VerifyOptions``) follows the duplicate threshold that decides:
    ``options.decision_thresholds`` when ``fit`` is None, else the one ``fit`` returns from
    the holdout's own deciding scores. That threshold depends on the extension, so the two
    are iterated until the threshold settles (at most ``FIT_ROUNDS`` rounds); pairs verified
    once are kept, and a pair the final threshold does not reach is left out.

    Returns:
        The candidates, and ``{"pairs", "extended", "rounds"}``.
    """
    exact = candidates.exact
    rows = [int(s) for s in np.flatnonzero(~exact)]
    end = min(options.depth, candidates.scores.shape[1])
    cache = np.full(candidates.scores.shape, np.nan)
    images: dict[int, np.ndarray] = {}
    train_images: dict[int, np.ndarray] = {}
    indices = candidates.indices
    duplicate_min = options.decision_thresholds.duplicate_min if fit is None else np.inf
    spans: dict[int, int] = {}
    rounds = 0
    for rounds in range(1, FIT_ROUNDS + 1):
        while True:  # verify what the rule asks for at this threshold
            missing: list[tuple[int, int]] = []
            for s in rows:
                start = 0
                while start < end:
                    stop = min(start + options.top, end)
                    block = [r for r in range(start, stop) if indices[s, r] >= 0]
                    todo = [r for r in block if np.isnan(cache[s, r])]
                    if todo:
                        missing += [(s, r) for r in todo]
                        break
                    spans[s] = stop
                    if not np.all(cache[s, block] > duplicate_min):
                        break
                    start = stop
            if not missing:
                break
            pairs = []
            for s, r in missing:
                t = int(indices[s, r])
                if t not in train_images:
                    train_images[t] = load_ref(train_refs[t])
                if s not in images:
                    images[s] = load_ref(holdout_refs[s])
                pairs.append((train_images[t], images[s]))
            for (s, r), v in zip(missing, _verified(pairs, options.grid, progress, correction)):
                cache[s, r] = v
        verified = np.full(cache.shape, np.nan)
        for s in rows:
            verified[s, :spans[s]] = cache[s, :spans[s]]
        verified[exact, 0] = 1.0
        if fit is None:
            break
        best = np.where(np.isfinite(verified).any(axis=1), np.nanmax(np.where(np.isfinite(verified), verified, -np.inf),
                                                                     axis=1), candidates.scores[:, 0])
        fitted = float(fit(best))
        if fitted == duplicate_min:
            break
        duplicate_min = fitted
    scores, order_indices = candidates.scores.copy(), indices.copy()
    _rerank(scores, order_indices, verified, rows)
    extended = sum(1 for s in rows if spans[s] > options.top)
    summary = {"pairs": int(np.isfinite(cache).sum()), "extended": extended, "rounds": rounds}
    return replace(candidates, scores=scores, indices=order_indices, verified=verified), summary
