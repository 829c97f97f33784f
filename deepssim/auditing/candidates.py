"""Each synthetic image's candidates: its closest training images by the model's score.

The top-k search (``nearest.py``) finds them by the best flip; a cross-fitted model re-scores
and re-orders them by its own rule. A synthetic image whose content equals a training image's
is matched to that image first. Verification (``rerank.py``) may re-order them again.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..model.api import DeepSSIMModel
from .images import EmbeddedSet
from .nearest import SearchResult, rescore, resolve_backend, search_flips
from .options import SearchOptions


@dataclass(frozen=True)
class Candidates:
    """The training candidates of every synthetic image, best first.

    Attributes:
        scores: (M, k) DeepSSIM scores; -inf in a slot an approximate index left empty.
        indices: (M, k) indices into the training set; -1 in an empty slot.
        verified: (M, k) verified SSIMs, NaN where a pair was not verified.
        exact: (M,) whether the synthetic image's content equals a training image's.
        found: The search's own result (backend, index, device, recall).
        rescored: How a cross-fitted model re-scored the search's candidates, else None.
    """

    scores: np.ndarray
    indices: np.ndarray
    verified: np.ndarray
    exact: np.ndarray
    found: SearchResult
    rescored: dict[str, Any] | None = None

    def first(self, k: int) -> Candidates:
        """The ``k`` best candidates of each image."""
        return replace(self, scores=self.scores[:, :k], indices=self.indices[:, :k],
                       verified=self.verified[:, :k])

    def deciding_scores(self) -> np.ndarray:
        """Per synthetic image, the score of its first candidate that decides its class: the
        verified SSIM where verified, else the DeepSSIM score."""
        return np.where(np.isfinite(self.verified[:, 0]), self.verified[:, 0], self.scores[:, 0])

    def summary(self, top_k: int) -> dict[str, Any]:
        """The summary's ``search`` entry."""
        return {"backend": self.found.backend, "index": self.found.index, "top_k": top_k,
                "device": self.found.device, "recall": self.found.recall, "rescored": self.rescored,
                "missing_slots": int((self.indices < 0).sum())}


QUERY_FLOATS = 1 << 26
"""Floats of the synthetic images' score vectors made at a time (256 MB; 4,096 images for the
``fast`` model): the exact search takes the queries in chunks, so memory grows with the
embeddings (N + M), not with the score vectors a cross-fitted model makes from them (4 times
larger)."""


def find_candidates(
    model: DeepSSIMModel, synthetic: EmbeddedSet, train: EmbeddedSet, k: int, options: SearchOptions, *,
    device: str, progress: bool,
) -> Candidates:
    """The ``k`` best training candidates of every synthetic image by the model's score
    (``synthetic.vectors``: the network's embeddings, made into the score's vectors chunk by
    chunk of ``QUERY_FLOATS`` for the exact search, all at once for an approximate index, which
    is built once; ``train.vectors``: the score's vectors).

    Raises:
        RuntimeError: an approximate index found no training neighbour for some synthetic
            image (named).
    """
    raw = synthetic.vectors
    m = len(raw)
    first = model.as_synthetic(raw[:1])
    row = max(1, int(np.prod(first.shape[1:])))
    # The backend is chosen for the whole problem, and an approximate index is built once.
    views = first.shape[1] if first.ndim == 3 else 1
    backend = resolve_backend(options.backend, options.index, m * views * len(train.vectors), device)
    step = max(1, QUERY_FLOATS // row) if options.index == "flat" else m
    parts: list[SearchResult] = []
    notes: list[dict[str, Any]] = []
    with tqdm(total=m, unit="img", desc="search", file=sys.stderr, disable=not progress or m <= step) as bar:
        for start in range(0, m, step):
            queries = model.as_synthetic(raw[start:start + step])
            found = search_flips(queries, train.vectors, k, backend=backend, index=options.index,
                                 device=device, progress=progress and m <= step)
            if model.cross_fit:  # found by the best flip, scored by the cross-fitted one
                found, note = _rescore_cross_fitted(found, queries, train.vectors, model)
                notes.append(note)
            parts.append(found)
            bar.update(len(queries))
    found = _concatenate(parts)
    rescored = None if not notes else {"rule": "cross_fit", **{key: sum(n[key] for n in notes)
                                                              for key in ("top1_certain", "synthetic_images")}}
    # Cosines of unit vectors: float rounding can step past 1, and must not outrank an exact copy.
    scores = np.clip(found.scores, -1.0, 1.0)
    scores, indices = _put_exact_copies_first(scores, found.indices, synthetic.images.keys, train.images.keys)
    _check_found(indices, synthetic.images.ids, found.index)
    train_keys = set(train.images.keys)
    exact = np.array([key in train_keys for key in synthetic.images.keys], dtype=bool)
    return Candidates(scores, indices, np.full(scores.shape, np.nan), exact, found, rescored)


def _concatenate(parts: list[SearchResult]) -> SearchResult:
    """One search result from those of consecutive chunks of queries of the exact search."""
    if len(parts) == 1:
        return parts[0]
    return replace(parts[0], scores=np.concatenate([p.scores for p in parts]),
                   indices=np.concatenate([p.indices for p in parts]), seconds=sum(p.seconds for p in parts))


def _check_found(indices: np.ndarray, synth_ids: list[str], index: str) -> None:
    """Approximate indexes may return fewer neighbours than asked (index -1): those slots are
    left out of the matches, but an image with no neighbour at all cannot be judged."""
    empty = np.flatnonzero(indices[:, 0] < 0)
    if len(empty):
        names = ", ".join(synth_ids[s] for s in empty[:5]) + (", ..." if len(empty) > 5 else "")
        raise RuntimeError(
            f"the approximate {index!r} index found no training neighbour for {len(empty)} synthetic "
            f"image(s) ({names}); use the exact search (index 'flat')"
        )


def _put_exact_copies_first(
    scores: np.ndarray, indices: np.ndarray, synth_keys: list[str], train_keys: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic image whose content equals a training image's is matched to that image
    first, with score 1: equal embeddings can lose a float tie to a near-identical image."""
    first: dict[str, int] = {}
    for k, key in enumerate(train_keys):
        first.setdefault(key, k)
    scores, indices = scores.copy(), indices.copy()
    for s, key in enumerate(synth_keys):
        t = first.get(key)
        if t is None:
            continue
        rest = [(sc, ix) for sc, ix in zip(scores[s], indices[s]) if ix != t][: scores.shape[1] - 1]
        scores[s] = [1.0] + [sc for sc, _ in rest]
        indices[s] = [t] + [ix for _, ix in rest]
    return scores, indices


def _rescore_cross_fitted(found: SearchResult, synth_emb: np.ndarray, train_emb: np.ndarray,
                          net: DeepSSIMModel) -> tuple[SearchResult, dict[str, Any]]:
    """The best-flip search's candidates re-scored and re-ordered by the cross-fitted rule,
    and for how many synthetic images the first is certainly the cross-fitted best of the
    whole training set: a cross-fitted score never exceeds the best-flip one, so no image
    the search left out can beat a first that scores at least the last candidate's best-flip
    score (or when the search returned every training image; with an approximate index,
    certain among what the index finds)."""
    everything = found.indices.shape[1] >= len(train_emb)
    floor = found.scores[:, -1]
    found = rescore(found, synth_emb, train_emb, net.pair_scores)
    certain = np.ones(len(floor), bool) if everything else np.isfinite(floor) & (found.scores[:, 0] >= floor)
    return found, {"rule": "cross_fit", "top1_certain": int(certain.sum()), "synthetic_images": len(floor)}
