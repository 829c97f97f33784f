"""The case study's training subset: distinct images, one per near-duplicate group.

Public MRI collections hold re-uploads and mirrored twins of one scan; with two twins in the
training set, a sample that copies one would be scored against the other too. The subset takes
``n`` images at random from distinct near-duplicate groups (``benchmark.neardup``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..benchmark.neardup import near_duplicate_groups
from ..readers import load_ref, scan
from .store import prepare, write_png

log = logging.getLogger(__name__)


def choose_subset(
    inputs: Sequence[str | Path], n: int, size: int, seed: int, *, progress: bool = False
) -> tuple[np.ndarray, list[str]]:
    """``n`` images (n, size, size) in [0, 1] from distinct near-duplicate groups, and their ids."""
    refs = []
    for root in inputs:
        result = scan(root, progress=progress)
        result.require_images()
        refs.extend((root, ref) for ref in result.refs)
    if len(refs) < n:
        raise ValueError(f"{', '.join(map(str, inputs))}: {len(refs)} images found, the subset needs {n}")
    rng = np.random.default_rng(seed)
    candidates = rng.permutation(len(refs))[: min(len(refs), 3 * n)]
    images, ids = [], []
    for k in candidates:
        root, ref = refs[k]
        images.append(prepare(load_ref(ref), size))
        ids.append(f"{Path(root).name}/{ref.id}" if len(inputs) > 1 else ref.id)
    groups = near_duplicate_groups(np.stack(images))
    keep, seen = [], set()
    for k, g in enumerate(groups):
        if g not in seen:
            seen.add(g)
            keep.append(k)
        if len(keep) == n:
            break
    if len(keep) < n:
        raise ValueError(f"only {len(keep)} distinct images among {len(candidates)} candidates; ask for fewer")
    log.info("subset: %d images from distinct near-duplicate groups (%d candidates drawn)", n, len(candidates))
    return np.stack([images[k] for k in keep]), [ids[k] for k in keep]


def write_subset(folder: Path, images: np.ndarray, ids: Sequence[str]) -> list[str]:
    """Write the subset as 8-bit PNGs ``tNNNN.png``; returns the file names (the ids go to a CSV)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"t{k:04d}.png" for k in range(len(images))]
    for name, image in zip(names, images):
        write_png(folder / name, image)
    return names
