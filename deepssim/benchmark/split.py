"""Groups of real images and the split of whole groups into members and non-members.

A group is one subject: images that a regular expression on their ids puts together, and any
pixel-identical or near-duplicate images (``neardup``). Splitting by group keeps every
non-member free of a twin in the generative model's training set, so that a non-member's
synthetic image is not a copy of a training image by accident.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from ..readers.patients import group_key
from .neardup import near_duplicate_groups


def group_images(
    ids: Sequence[str], stored: Sequence[np.ndarray], group_by: str | None,
    near_duplicates: float | None = None, progress: bool = False,
) -> np.ndarray:
    """A group number per image: images whose id gives the same ``group_by`` key share a
    group, and so do pixel-identical images (byte-identical files are pixel-identical) and,
    unless ``near_duplicates`` is None, near-duplicates (``neardup``)."""
    parent = list(range(len(ids)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(keys: Sequence[str | None]) -> None:
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key is None:
                continue
            j = first.setdefault(key, i)
            if j != i:
                parent[find(i)] = find(j)

    if group_by is not None:
        pattern = re.compile(group_by)
        join([group_key(pattern, image_id) for image_id in ids])
    join([hashlib.sha256(im.tobytes()).hexdigest() for im in stored])
    if near_duplicates is not None:
        join([str(g) for g in near_duplicate_groups(stored, near_duplicates, progress=progress)])
    roots = [find(i) for i in range(len(ids))]
    _, group = np.unique(roots, return_inverse=True)
    return group.astype(np.int64)


def split_groups(group: np.ndarray, n_train: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Whole groups in random order into train until it holds ``n_train`` images (a group
    that would overshoot is passed over); the image indices of train and of the pool."""
    sizes = np.bincount(group)
    taken = np.zeros(len(sizes), dtype=bool)
    count = 0
    order = rng.permutation(len(sizes))
    for g in order:
        if count + sizes[g] <= n_train:
            taken[g] = True
            count += int(sizes[g])
            if count == n_train:
                break
    if count < n_train:
        # Short by d: swap one taken group for a left-out group d images larger, if any.
        d = n_train - count
        left = {int(sizes[g]): g for g in order[::-1] if not taken[g]}
        swap = next((g for g in order if taken[g] and int(sizes[g]) + d in left), None)
        if swap is not None:
            taken[swap] = False
            taken[left[int(sizes[swap]) + d]] = True
    in_train = taken[group]
    return np.flatnonzero(in_train), np.flatnonzero(~in_train)
