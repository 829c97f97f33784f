"""A run's data: the images, their split, and the cached pair sets, block targets and copy
partners (``cache/`` in the run's folder, one file per data and settings)."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..model.preprocess import Preprocess
from ..readers import SliceSpec, fingerprint, load_stack
from .blocks import BlockTargets, CopyPartners
from .config import TrainConfig
from .pairs import PairSet, build_pairs, split_by_image

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """What a run trains and validates on.

    ``images`` / ``ids``: every image used (resized), ``fingerprint`` their digest;
    ``train_idx`` / ``val_idx`` the split; ``blocks`` the in-batch block targets and
    ``partners`` the copy partners, when the configuration asks for them.
    """

    images: np.ndarray
    ids: list[str]
    fingerprint: str
    train_idx: np.ndarray
    val_idx: np.ndarray
    train_pairs: PairSet
    val_pairs: PairSet
    blocks: BlockTargets | None = None
    partners: CopyPartners | None = None


def load_images(
    inputs: Sequence[str | Path], preprocess: Preprocess, progress: bool = False, *,
    slices: SliceSpec = SliceSpec(), skip_unreadable: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """All images under ``inputs`` (folders or files, any readable format; volumes sliced by
    ``slices``), resized.

    Raises:
        ReadError: naming every unreadable file (unless ``skip_unreadable``), or when no image
            is found.
    """
    return load_stack(inputs, preprocess.resize, progress, slices=slices, skip_unreadable=skip_unreadable)


def split_groups(images: np.ndarray, val_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Train / validation indices, keeping byte-identical images on one side (real data sets
    hold exact duplicates; split apart they would leak validation images into training)."""
    keys = [hashlib.sha1(im.tobytes()).hexdigest() for im in images]
    groups: dict[str, list[int]] = {}
    for k, key in enumerate(keys):
        groups.setdefault(key, []).append(k)
    members = list(groups.values())
    train_groups, val_groups = split_by_image(len(members), val_fraction, rng)

    def images_of(chosen: np.ndarray) -> np.ndarray:
        return np.sort(np.concatenate([np.asarray(members[g]) for g in chosen] or [np.empty(0, int)]))

    train, val = images_of(train_groups), images_of(val_groups)
    if len(train) < 2 or len(val) < 2:
        raise ValueError(f"too few distinct images ({len(groups)}) to split into training and validation")
    return train, val


def prepare_data(
    inputs: Sequence[str | Path], config: TrainConfig, cache: Path, rng: np.random.Generator,
    device: str, progress: bool, *, slices: SliceSpec = SliceSpec(), skip_unreadable: bool = False,
) -> TrainingData:
    """Read, subsample and split the images, and build (or load from ``cache``) the pair sets,
    block targets and copy partners ``config`` asks for. ``rng`` draws the subsample and the
    split; ``slices`` and ``skip_unreadable`` are ``load_images``'. Targets are computed on
    ``device``; the cache keys ignore it (the values agree to float rounding; a near-tie of a
    registered target's alignment search may differ)."""
    images, ids = load_images(inputs, config.preprocess, progress=progress, slices=slices,
                              skip_unreadable=skip_unreadable)
    if config.max_images is not None and len(images) > config.max_images:
        keep = np.sort(rng.choice(len(images), config.max_images, replace=False))
        images, ids = images[keep], [ids[k] for k in keep]
    data_print = fingerprint(images, ids)
    train_idx, val_idx = split_groups(images, config.val_fraction, rng)
    log.info("%d images (%d train, %d validation), fingerprint %s",
             len(images), len(train_idx), len(val_idx), data_print[:12])

    common = {"data": data_print, "size": config.preprocess.size, "resize": config.preprocess.resize_policy,
              "copy_fraction": config.copy_fraction, "registered": config.registered_targets,
              "seed": config.seed, "val_fraction": config.val_fraction}

    def pairs(key: dict[str, Any], chosen: np.ndarray, n_pairs: int, families: Sequence[str], seed: int) -> PairSet:
        return _cached(cache, "pairs", key, PairSet, lambda: build_pairs(
            images[chosen], n_pairs, families=families, rng=np.random.default_rng(seed),
            copy_fraction=config.copy_fraction, registered=config.registered_targets, progress=progress,
            device=device,
        ))

    train_key = {**common, "part": "train", "n": config.n_train_pairs, "families": config.families}
    train_pairs = pairs(train_key, train_idx, config.n_train_pairs, config.families, config.seed)
    val_families = config.val_families or config.families
    val_pairs = pairs({**common, "part": "val", "n": config.n_val_pairs, "families": val_families},
                      val_idx, config.n_val_pairs, val_families, config.seed + 1)
    data = TrainingData(images, ids, data_print, train_idx, val_idx, train_pairs, val_pairs)
    if not config.in_batch_pairs:
        return data
    flips = bool(config.flip_pairs)
    block_key = {k: common[k] for k in ("data", "size", "resize", "seed", "val_fraction")}
    block_key.update(part="blocks", block=config.in_batch_block)
    if flips:
        block_key["flips"] = True
    data.blocks = blocks = _cached(cache, "blocks", block_key, BlockTargets, lambda: _build_blocks(
        train_pairs.images[: len(train_idx)], config.in_batch_block, np.random.default_rng(config.seed + 2),
        device, progress, flips))
    _check_cover(cache, "block targets", blocks.n_inputs, len(train_idx))
    if config.copy_partners:
        # Made from the training pairs and the block targets: both keys, and k.
        partner_key = {"part": "partners", "pairs": train_key, "blocks": block_key, "k": config.copy_partners}
        started = time.perf_counter()
        data.partners = partners = _cached(cache, "partners", partner_key, CopyPartners, lambda: CopyPartners.build(
            train_pairs.images, train_pairs.a, train_pairs.b, train_pairs.family, blocks,
            config.copy_partners, device, progress, flips=flips))
        _check_cover(cache, "copy partners", partners.n_inputs, len(train_idx))
        log.info("copy partners: %d near-copies x %d look-alikes of their sources (%.1f s)",
                 len(partners.copy), partners.partner.shape[1], time.perf_counter() - started)
    return data


def _build_blocks(inputs: np.ndarray, block_size: int, rng: np.random.Generator, device: str,
                  progress: bool, flips: bool) -> BlockTargets:
    t0 = time.perf_counter()
    blocks = BlockTargets.build(inputs, block_size, rng, device, progress, flips=flips)
    sizes = [len(m) for m in blocks.matrices]
    log.info("in-batch targets: %d block(s) of %d-%d inputs, %d pairs in %.1f s", len(sizes),
             min(sizes), max(sizes), (4 if flips else 1) * sum(k * k for k in sizes), time.perf_counter() - t0)
    return blocks


T = TypeVar("T", PairSet, BlockTargets, CopyPartners)


def _cached(cache: Path, what: str, key: dict[str, Any], kind: type[T], build: Callable[[], T]) -> T:
    """``build()`` once per data and settings (``key``): later runs and resumes load the file
    ``cache/<what>-<hash of key>.npz``; a damaged file is rebuilt, not trusted."""
    name = hashlib.sha256(repr(sorted(key.items())).encode()).hexdigest()[:16]
    path = cache / f"{what}-{name}.npz"
    if path.is_file():
        try:
            return kind.load(path)
        except Exception as exc:
            log.warning("%s: unreadable %s cache (%s), rebuilding", path, what, exc)
    made = build()
    cache.mkdir(parents=True, exist_ok=True)
    made.save(path)
    return made


def _check_cover(cache: Path, what: str, covered: int, n_inputs: int) -> None:
    """A cached table of per-input targets must cover the run's training inputs."""
    if covered != n_inputs:
        raise ValueError(f"{cache}: the {what} cover {covered} inputs, the training set has "
                         f"{n_inputs}; delete the cache folder and train again")
