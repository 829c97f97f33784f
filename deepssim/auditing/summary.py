"""The audit's summary (``summary.json``): the headline figures, and how they were found.

Its fields are a contract: tools and reports read them by name.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..classes import CLASSES, Thresholds, wilson_interval
from ..versions import library_versions

if TYPE_CHECKING:
    from ..model.api import DeepSSIMModel
    from .images import ImageSet

MOST_COPIED = 10
"""Training images listed in ``most_copied``."""


@dataclass(frozen=True)
class Outcome:
    """What the audit decided for every synthetic image, from its first match.

    Attributes:
        best_scores: The first match's DeepSSIM score.
        best_train: The first match's index into the training set.
        labels: The class.
        exact: Whether the image's content equals a training image's.
    """

    best_scores: np.ndarray
    best_train: np.ndarray
    labels: np.ndarray
    exact: np.ndarray


def model_summary(model: DeepSSIMModel) -> dict[str, Any]:
    """The summary's ``model`` entry: which weights, their preprocessing and scoring rule."""
    return {"path": model.path, "sha256": model.checksum,
            "preset": model.config.get("preset"), "preprocess": model.preprocess.to_dict(),
            "device": str(model.device), "scoring": model.scoring,
            "flip_search": model.flip_search, "joint_flips": model.joint_flips,
            "cross_fit": model.cross_fit}


def build_summary(
    *, model: DeepSSIMModel, thresholds: Thresholds, train: ImageSet, synthetic: ImageSet,
    outcome: Outcome, search: dict[str, Any], cache: dict[str, Any] | None,
    verify: dict[str, Any] | None, timings: dict[str, float], model_source: dict[str, Any] | None = None,
    peak_memory_mb: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The summary of an audit of ``synthetic`` against ``train``: counts per class, the
    memorization rate with its 95% interval, the most-copied training images, and the run's
    model, thresholds, search, cache, verification, timings (seconds), the peak memory at the end
    of each stage (MB) and versions.

    ``search``, ``cache`` and ``verify`` are the entries written by their own steps
    (``Candidates.summary``, ``images.cache_summary``, ``rerank.verify_suspicious``);
    ``model_source`` (``trained.ModelSource.to_dict``: ``origin``, ``training_set``,
    ``trained_at``) goes into the ``model`` entry.
    """
    best, best_train, labels = outcome.best_scores, outcome.best_train, outcome.labels
    n = len(labels)
    counts = {c: int((labels == c).sum()) for c in CLASSES}
    copied = Counter(int(t) for t, c in zip(best_train, labels) if c == "duplicate")
    top_score: dict[int, float] = {}
    for t, c, s in zip(best_train, labels, best):
        if c == "duplicate":
            top_score[int(t)] = max(top_score.get(int(t), -1.0), float(s))
    most = sorted(copied.items(), key=lambda kv: (-kv[1], -top_score[kv[0]], kv[0]))[:MOST_COPIED]
    rate = counts["duplicate"] / n if n else 0.0
    return {
        "deepssim_version": library_versions()["deepssim"],
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "n_train": len(train.ids),
        "n_synthetic": n,
        "train_sources": train.sources,
        "synthetic_sources": synthetic.sources,
        "counts": counts,
        "memorization_rate": rate,
        "memorization_rate_ci95": list(wilson_interval(counts["duplicate"], n)),
        "n_train_copied": len(copied),
        "most_copied": [{"train": train.ids[t], "n_copies": k, "max_score": round(top_score[t], 6)}
                        for t, k in most],
        "exact_copies": int(outcome.exact.sum()),
        "best_score": {"mean": float(best.mean()), "median": float(np.median(best)), "max": float(best.max())},
        "thresholds": thresholds.to_dict(),
        "model": model_summary(model) | (model_source or {}),
        "search": search,
        "cache": cache,
        "skipped_unreadable": train.skipped + synthetic.skipped,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "peak_memory_mb": dict(peak_memory_mb or {}),
        "versions": library_versions(),
        "verify": verify,
    }
