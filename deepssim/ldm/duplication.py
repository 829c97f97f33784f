"""Duplication of training records, the paper's way of provoking memorization.

``none``: every image once; ``low``: each image 1-4 times; ``high``: 1-14 times (uniform
integer draws, seeded). The training records are the images repeated by their counts.
"""

from __future__ import annotations

import numpy as np

LEVELS: dict[str, tuple[int, int]] = {"none": (1, 1), "low": (1, 4), "high": (1, 14)}


def copy_counts(n: int, level: str, seed: int) -> np.ndarray:
    """How many times each of ``n`` images appears among the training records."""
    if level not in LEVELS:
        raise ValueError(f"unknown duplication level {level!r} (choose from {', '.join(LEVELS)})")
    lo, hi = LEVELS[level]
    return np.random.default_rng([seed, 7]).integers(lo, hi + 1, size=n)


def records(counts: np.ndarray) -> np.ndarray:
    """Image index of every training record (image ``i`` repeated ``counts[i]`` times)."""
    return np.repeat(np.arange(len(counts)), counts)
