"""The audit's verification step: which candidates are verified, and their re-ranking.

Every suspicious synthetic image (its best DeepSSIM score above the low threshold, and no
byte copy of a training image) has its best candidates verified (``verify.py``), less the
verification's lean (``correction.py``), and re-ranked by verified SSIM, which then decides
its class (``decide.py``). The candidates are verified as a cascade, by blocks in DeepSSIM
order, each block only where the class can still change (``_verify``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..readers import ImageRef, load_ref
from .cache import EmbeddingCache, pair_key
from .candidates import Candidates
from .options import VerifyGrid, VerifyOptions
from .verify import verify_pairs

Correction = Callable[[np.ndarray], np.ndarray]
"""A map of verified SSIMs to the values that decide (``correction.VerifyCorrection``)."""

BLOCK = 5
"""Candidates of an image verified at once: the next block only where the class can change."""

ROWS = 64
"""Synthetic images whose pairs are verified at once: the images held in memory, and the work
an interruption loses (their verified SSIMs are kept together)."""

FIT_ROUNDS = 10
"""Rounds of verifying the holdout and fitting its threshold, at most (``verify_null``)."""


def verify_suspicious(
    candidates: Candidates, low: float, options: VerifyOptions, synthetic_refs: list[ImageRef],
    train_refs: list[ImageRef], *, progress: bool, correction: Correction | None = None,
    store: PairStore | None = None,
) -> tuple[Candidates, dict[str, Any]]:
    """``candidates`` with those of every suspicious image (first score above ``low``)
    verified and re-ranked by verified SSIM (mapped by ``correction`` when given); a byte
    copy's first candidate counts as verified, with SSIM 1. Pairs kept in ``store`` are read
    from it, the others verified and kept there.

    Returns:
        The candidates, and the summary's ``verify`` entry.
    """
    exact = candidates.exact
    suspicious = np.flatnonzero((candidates.scores[:, 0] > low) & ~exact)
    verifier = _Verifier(synthetic_refs, train_refs, options.grid, progress, correction, store)
    scores, indices, verified, extended = _verify(
        candidates.scores, candidates.indices, suspicious, options.top, options.depth,
        options.decision_thresholds.duplicate_min, verifier, low)
    verified[exact, 0] = 1.0
    summary = {"top": options.top, "max": options.depth, "extended": extended,
               "synthetic_images": int(len(suspicious)),
               "pairs": int(np.isfinite(verified).sum() - exact.sum()), "pairs_kept_before": verifier.read,
               "thresholds": options.decision_thresholds.to_dict(), "grid": asdict(options.grid)}
    return replace(candidates, scores=scores, indices=indices, verified=verified), summary


def _verify(
    scores: np.ndarray, indices: np.ndarray, rows: np.ndarray, top: int, most: int, duplicate_min: float,
    verifier: _Verifier, low: float = -np.inf,
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
    todo, start, end = [int(s) for s in rows], 0, min(most, scores.shape[1])
    block = max(1, min(BLOCK, top))
    while todo and start < end:
        stop = min(start + block, end)
        where = [(s, r) for s in todo for r in range(start, stop)
                 # not an empty slot, nor a candidate too far to be a copy
                 if indices[s, r] >= 0 and scores[s, r] > low]
        for (s, r), v in zip(where, verifier([(s, int(indices[s, r])) for s, r in where])):
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


@dataclass(frozen=True)
class PairStore:
    """Where verified SSIMs are kept (``cache.verified_store``) and the content keys of the
    images the pairs are made of (``ImageSet.keys``)."""

    values: EmbeddingCache
    synthetic: Sequence[str]
    train: Sequence[str]

    def key(self, s: int, t: int) -> str:
        return pair_key(self.synthetic[s], self.train[t])


class _Verifier:
    """Verified SSIMs of pairs (synthetic image s, training image t), mapped by
    ``correction`` when given: read from ``store`` where it keeps them, the others verified
    ``ROWS`` synthetic images at a time (each read from its file then, so memory holds no
    more) and kept in ``store`` as they are. Values pass through float32 (the store's type)
    either way, so a resumed audit decides as one that ran through."""

    def __init__(self, synth_refs: list[ImageRef], train_refs: list[ImageRef], grid: VerifyGrid, progress: bool,
                 correction: Correction | None, store: PairStore | None) -> None:
        self.synth_refs, self.train_refs, self.grid = synth_refs, train_refs, grid
        self.progress, self.correction, self.store = progress, correction, store
        self.train_images: dict[int, np.ndarray] = {}
        self.read = 0  # pairs read from the store, not verified here

    def _train(self, t: int) -> np.ndarray:
        if t not in self.train_images:
            self.train_images[t] = load_ref(self.train_refs[t])
        return self.train_images[t]

    def __call__(self, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
        raw = np.full(len(pairs), np.nan)
        store = self.store
        keys = None if store is None else [store.key(s, t) for s, t in pairs]
        if store is not None and keys is not None:
            known = [k for k, key in enumerate(keys) if key in store.values]
            if known:
                raw[known] = store.values.get([keys[k] for k in known])[:, 0]
                self.read += len(known)
        by_image: dict[int, list[int]] = {}
        for k in np.flatnonzero(np.isnan(raw)):
            by_image.setdefault(pairs[k][0], []).append(int(k))
        groups = list(by_image.items())
        with tqdm(total=sum(len(g) for _, g in groups), desc="verify", unit="pair", file=sys.stderr,
                  disable=not (self.progress and groups)) as bar:
            for start in range(0, len(groups), ROWS):
                part = groups[start:start + ROWS]
                images = {s: load_ref(self.synth_refs[s]) for s, _ in part}
                at = [k for _, ks in part for k in ks]
                values = verify_pairs([(self._train(pairs[k][1]), images[pairs[k][0]]) for k in at],
                                      self.grid).astype(np.float32)
                if store is not None and keys is not None:
                    store.values.add([keys[k] for k in at], values[:, None])
                raw[at] = values
                bar.update(len(at))
        raw = raw.astype(np.float32).astype(np.float64)
        return raw if self.correction is None else self.correction(raw)


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
    store: PairStore | None = None,
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
    verifier = _Verifier(holdout_refs, train_refs, options.grid, progress, correction, store)
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
            for (s, r), v in zip(missing, verifier([(s, int(indices[s, r])) for s, r in missing])):
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
    summary = {"pairs": int(np.isfinite(cache).sum()), "pairs_kept_before": verifier.read, "extended": extended,
               "rounds": rounds}
    return replace(candidates, scores=scores, indices=order_indices, verified=verified), summary
