"""Build a memorization benchmark (docs/benchmark.md) from a folder of real images.

The real images are split, by group (subject), into the generative model's training set
(``train/``) and a pool of non-members (``split``). Synthetic images are then made in the frame
of the training images (``copies``): ``memorized_fraction`` of them from training images by a
near-copy generator (``deepssim.transforms.nearcopy.FAMILIES``) at a strength calibrated so
that the (source, copy) pairs land in all three SSIM classes, the rest from non-members with a
mild generator change. Every label is the reference SSIM of the files as written and read back;
the oracle (``ssim_matrix`` of all training x synthetic images) gives each synthetic image's
nearest training image (``audit.csv``) and the ranking that hard negatives come from
(``label``). ``write`` writes the folder.

Everything is drawn from one seed: the same inputs and parameters give the same bytes.
The build writes into a hidden folder beside ``out`` and renames it into place at the end,
so an interrupted build leaves no half-written benchmark.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..model.preprocess import Preprocess
from ..readers import load_stack, scan
from ..storage import replacing_folder
from ..transforms.nearcopy import BENCHMARK_FAMILIES, FAMILIES
from .copies import (
    MEMORIZED_CLASSES,
    NONMEMBER_STRENGTH,
    REPEAT_SHARE,
    Synthetic,
    make_members,
    make_nonmembers,
    plan_members,
    plan_nonmembers,
)
from .layout import DUPLICATE_THRESHOLD, LABELS
from .neardup import DEFAULT_THRESHOLD as NEAR_DUPLICATE_THRESHOLD
from .split import group_images, split_groups
from .write import PERTURBATION, check_out, describe, finish, to_uint16, write_files, write_holdout

log = logging.getLogger(__name__)

N_HARD = 2
"""Hard negatives per synthetic image: the next training images of its ranking."""
N_RANDOM = 2
"""Random training images paired with each synthetic image."""
N_HOLDOUT = 200
"""Holdout images (real non-members that made no synthetic image) written to ``holdout/``:
at the audit's default false-alarm rate of 0.01 a holdout needs at least 99."""


@dataclass
class BenchmarkInfo:
    """What ``build_benchmark`` wrote: the folder, the main counts and ``benchmark.json``."""

    path: Path
    n_train: int
    n_synthetic: int
    n_memorized: int
    n_nonmember: int
    pair_labels: dict[str, int]
    pair_kinds: dict[str, int]
    n_copies: int
    memorized_labels: dict[str, int]
    seconds: float
    info: dict[str, Any] = field(repr=False, default_factory=dict)
    n_holdout: int = 0

    @classmethod
    def of(cls, path: Path, info: dict[str, Any], seconds: float) -> BenchmarkInfo:
        """The summary of a benchmark folder written at ``path`` with ``benchmark.json`` ``info``."""
        counts = info["counts"]
        return cls(path=path, n_train=counts["train"], n_synthetic=counts["synthetic"],
                   n_memorized=counts["memorized"], n_nonmember=counts["nonmember"],
                   pair_labels=counts["pairs_by_label"], pair_kinds=counts["pairs_by_kind"],
                   n_copies=counts["audit_copies"], memorized_labels=counts["memorized_by_class"],
                   seconds=seconds, info=info, n_holdout=counts.get("holdout", 0))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        del out["info"]
        return out

    def summary(self) -> str:
        labels = ", ".join(f"{k} {self.pair_labels.get(k, 0)}" for k in LABELS)
        mem = ", ".join(f"{k} {self.memorized_labels.get(k, 0)}" for k in LABELS)
        return (
            f"benchmark written to {self.path} in {self.seconds:.1f} s\n"
            f"train {self.n_train} images; holdout {self.n_holdout}; synthetic {self.n_synthetic} "
            f"({self.n_memorized} memorized, {self.n_nonmember} non-members)\n"
            f"pairs {sum(self.pair_labels.values())}: {labels}\n"
            f"memorized (source, copy) classes: {mem}\n"
            f"audit: {self.n_copies} of {self.n_synthetic} synthetic images are copies "
            f"(nearest SSIM > {DUPLICATE_THRESHOLD})"
        )


def _check_args(
    n_train: int, n_synthetic: int, size: int, families: Sequence[str], memorized_fraction: float,
    group_by: str | None, n_hard: int, n_random: int, near_duplicates: float | None, n_holdout: int = 0,
) -> None:
    if near_duplicates is not None and not -1.0 < near_duplicates < 1.0:
        raise ValueError(f"near_duplicates must be in (-1, 1) or None, got {near_duplicates}")
    if n_train < 1:
        raise ValueError(f"n_train must be >= 1, got {n_train}")
    if n_synthetic < 1:
        raise ValueError(f"n_synthetic must be >= 1, got {n_synthetic}")
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    if not families:
        raise ValueError("families: at least one generator family is needed")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown families {', '.join(unknown)}: choose from {', '.join(FAMILIES)}")
    if not 0.0 <= memorized_fraction <= 1.0:
        raise ValueError(f"memorized_fraction must be in [0, 1], got {memorized_fraction}")
    if n_hard < 0 or n_random < 0:
        raise ValueError(f"n_hard and n_random must be >= 0, got {n_hard} and {n_random}")
    if n_holdout < 0:
        raise ValueError(f"n_holdout must be >= 0, got {n_holdout}")
    if group_by is not None:
        try:
            re.compile(group_by)
        except re.error as exc:
            raise ValueError(f"group_by: bad regular expression {group_by!r}: {exc}") from None


def _load_quantized(roots: list[str], size: int, progress: bool) -> tuple[list[str], list[np.ndarray]]:
    """The ids and the 16-bit images (as they will be stored) of every image under ``roots``,
    resized to ``size x size``."""
    resized, ids = load_stack(roots, Preprocess(size=size).resize, progress=progress)
    if len(set(ids)) != len(ids):
        dup = next(i for i, c in Counter(ids).items() if c > 1)
        raise ValueError(f"two inputs give the same image id {dup!r}: pass folders with distinct names")
    return ids, [to_uint16(im) for im in resized]


def _split(group: np.ndarray, n_train: int, n_memorized: int, n_nonmember: int, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray]:
    """``split_groups``, checked: the pool must hold a group for each non-member."""
    train, pool = split_groups(group, n_train, rng)
    n_pool_groups = len(np.unique(group[pool]))
    if len(train) < n_train:
        log.warning("train holds %d images, not %d: the groups' sizes do not add up", len(train), n_train)
    if n_pool_groups < n_nonmember:
        raise ValueError(
            f"too few groups: {len(np.unique(group))} groups in {len(group)} images; after "
            f"{len(train)} training images only {n_pool_groups} groups are left for "
            f"{n_nonmember} non-members (one per group): lower n_train or n_synthetic"
        )
    if n_memorized and not len(train):
        raise ValueError("no training image to make memorized copies from")
    return train, pool


def _draw_holdout(pool: np.ndarray, nonmembers: list[Synthetic], n_holdout: int, seed: int) -> np.ndarray:
    """``n_holdout`` pool images that made no synthetic image (neither origin nor partner),
    sorted; drawn by a generator of their own so that every other draw stays as it was."""
    used = {it.origin for it in nonmembers} | {it.partner for it in nonmembers if it.partner is not None}
    left = np.array([int(i) for i in pool if int(i) not in used], dtype=np.int64)
    if len(left) < n_holdout:
        log.warning("holdout holds %d images, not %d: no more non-members are left", len(left), n_holdout)
    rng = np.random.default_rng([seed, 1])
    return np.sort(rng.choice(left, size=min(n_holdout, len(left)), replace=False))


def _grouping(group_by: str | None, near_duplicates: float | None) -> str:
    """How images were grouped, in words, for ``benchmark.json``."""
    return (("regex " + repr(group_by) if group_by else "none")
            + " + pixel-identical images"
            + (f" + near-duplicates (> {near_duplicates})" if near_duplicates is not None else ""))


def build_benchmark(
    images: Sequence[str | Path],
    out: str | Path,
    *,
    n_train: int = 1000,
    n_synthetic: int = 500,
    size: int = 128,
    group_by: str | None = None,
    near_duplicates: float | None = NEAR_DUPLICATE_THRESHOLD,
    families: Sequence[str] = BENCHMARK_FAMILIES,
    memorized_fraction: float = 0.5,
    seed: int = 0,
    n_hard: int = N_HARD,
    n_random: int = N_RANDOM,
    n_holdout: int = N_HOLDOUT,
    overwrite: bool = False,
    progress: bool = True,
) -> BenchmarkInfo:
    """Build a memorization benchmark folder ``out`` from the real images under ``images``.

    Args:
        images: folders or files of real images (any format ``deepssim.scan`` reads).
        out: the benchmark folder to create (must not exist, be empty, or ``overwrite``).
        n_train: training images (whole groups; fewer only if group sizes cannot add up).
        n_synthetic: synthetic images; ``round(memorized_fraction * n_synthetic)`` of them are
            made from training images, the others from non-members (one per group).
        size: images are resized (stretched) to ``size x size``.
        group_by: regular expression searched in each image id (its path relative to the
            input folder); images with the same key (the first capture group if any, else
            the match) form one group, which goes wholly to train or to the non-members.
            Ids without a match are their own group. Pixel-identical images always share one.
        near_duplicates: images whose near-duplicate similarity (``neardup``: same image up
            to flips, rotation and monotone contrast) exceeds it share a group too, so that
            a non-member has no twin in train; None keeps only pixel-identical images together.
        families: near-copy generators (``deepssim.transforms.nearcopy.FAMILIES``) to use; by
            default ``BENCHMARK_FAMILIES``.
        seed: everything random is drawn from it (same inputs and seed: same bytes).
        n_hard, n_random: hard-negative and random pairs per synthetic image.
        n_holdout: real non-members written to ``holdout/`` for ``deepssim audit --holdout``:
            drawn (by their own generator from ``seed``, so the rest of the build is the same
            for any ``n_holdout``) from the images not in train and not used to make any
            synthetic image; fewer (with a warning) when fewer are left.
        overwrite: replace an existing benchmark folder.

    Raises:
        ValueError: bad parameters, or too few images (or groups) for the counts asked.
        ReadError: unreadable input files, listed by name.
        FileExistsError: ``out`` exists and is not empty (without ``overwrite``).
    """
    start = time.perf_counter()
    families = list(dict.fromkeys(families))
    _check_args(n_train, n_synthetic, size, families, memorized_fraction, group_by, n_hard, n_random,
                near_duplicates, n_holdout)
    out = Path(out).absolute()
    check_out(out, overwrite)
    n_memorized = round(memorized_fraction * n_synthetic)
    n_nonmember = n_synthetic - n_memorized
    roots = [str(p) for p in images]
    if not roots:
        raise ValueError("images: no input folder or file given")

    ids, quantized = _load_quantized(roots, size, progress)
    if len(ids) < n_train + n_nonmember:
        raise ValueError(
            f"too few images: {len(ids)} found, but n_train {n_train} + {n_nonmember} non-members "
            f"({n_synthetic} synthetic, memorized fraction {memorized_fraction}) = "
            f"{n_train + n_nonmember} are needed"
        )
    # Groups and generators work on the images as they will be stored.
    group = group_images(ids, quantized, group_by, near_duplicates, progress)
    stored = [q.astype(np.float32) for q in quantized]

    rng = np.random.default_rng(seed)
    train, pool = _split(group, n_train, n_memorized, n_nonmember, rng)
    # One generator draws everything, always in this order: the same seed gives the same bytes.
    members, curves = plan_members(stored, train, n_memorized, families, rng)
    nonmembers = plan_nonmembers(pool, group, n_nonmember, families, rng)
    perturb_seeds = rng.integers(0, 2**63 - 1, size=n_synthetic)
    name_order = rng.permutation(n_synthetic)  # item k gets name s{name_order[k]}
    make_members(members, families, curves, stored, rng, progress)
    make_nonmembers(nonmembers, stored, progress)
    holdout = _draw_holdout(pool, nonmembers, n_holdout, seed)

    with replacing_folder(out) as tmp:
        counts = write_files(tmp, ids, group, stored, train, members + nonmembers, name_order,
                             perturb_seeds, n_hard, n_random, rng, progress)
        counts["holdout"] = write_holdout(tmp, ids, group, stored, holdout)
        parameters = {
            "n_train": n_train, "n_synthetic": n_synthetic, "size": size, "group_by": group_by,
            "near_duplicates": near_duplicates,
            "families": families, "memorized_fraction": memorized_fraction, "seed": seed,
            "n_hard": n_hard, "n_random": n_random, "n_holdout": n_holdout,
            "memorized_classes": {k: {"share": s, "target_band": list(b)} for k, (s, b) in MEMORIZED_CLASSES.items()},
            "repeat_share": REPEAT_SHARE, "nonmember_strength": list(NONMEMBER_STRENGTH),
        }
        sources = {
            "inputs": [str(Path(r).absolute()) for r in roots],
            "images_found": len(ids),
            "groups": int(group.max()) + 1,
            "grouping": _grouping(group_by, near_duplicates),
        }
        info = describe("deepssim benchmark build", parameters, sources, counts,
                        calibration={f: [round(float(v), 4) for v in c] for f, c in curves.items()})
        finish(tmp, info)
    return BenchmarkInfo.of(out, info, time.perf_counter() - start)


def build_from_samples(
    train: str | Path,
    synthetic: str | Path,
    out: str | Path,
    *,
    size: int | None = None,
    seed: int = 0,
    n_hard: int = N_HARD,
    n_random: int = N_RANDOM,
    overwrite: bool = False,
    progress: bool = True,
) -> BenchmarkInfo:
    """A benchmark folder from a real generator's samples: every image under ``train`` is a
    training image, every image under ``synthetic`` a synthetic one (family ``external``).

    Membership is unknown, so the labels come from the oracle alone: ``audit.csv`` names each
    sample's nearest training image by reference SSIM in the clean frame, and ``pairs.csv``
    holds its best match, hard negatives and random pairs, labelled by reference SSIM.
    ``synthetic/`` holds the samples perturbed as in the benchmark protocol. ``size`` resizes (stretches)
    every image; by default all images must already share one size.
    """
    start = time.perf_counter()
    out = Path(out).absolute()
    check_out(out, overwrite)
    if n_hard < 0 or n_random < 0:
        raise ValueError("n_hard and n_random must be >= 0")
    loaded = []
    for root in (train, synthetic):
        result = scan(root, progress=progress)
        result.require_images()
        loaded.append([(ref.id, image) for ref, image in result.load(progress=progress)])
    if size is not None:
        loaded = [[(i, Preprocess(size=size).resize(im)) for i, im in part] for part in loaded]
    shapes = {im.shape for part in loaded for _, im in part}
    if len(shapes) > 1:
        raise ValueError(f"{train}, {synthetic}: images of several sizes {sorted(shapes)}; pass size to resize them")
    (train_part, syn_part) = loaded
    ids = [i for i, _ in train_part] + [f"synthetic:{i}" for i, _ in syn_part]
    stored = [to_uint16(im).astype(np.float32) for _, im in train_part + syn_part]
    n_train = len(train_part)
    rng = np.random.default_rng(seed)
    # Each sample is a non-member of unknown origin: itself, made by no family.
    items = [Synthetic(False, n_train + k, "external", float("nan"), 0, None, image=stored[n_train + k])
             for k in range(len(syn_part))]
    with replacing_folder(out) as tmp:
        counts = write_files(tmp, ids, np.arange(len(ids)), stored, np.arange(n_train), items,
                             np.arange(len(items)), rng.integers(0, 2**63 - 1, size=len(items)),
                             n_hard, n_random, rng, progress)
        info = describe("deepssim benchmark from-samples",
                        {"size": size, "seed": seed, "n_hard": n_hard, "n_random": n_random},
                        {"train": str(Path(train).absolute()), "synthetic": str(Path(synthetic).absolute())},
                        counts)
        finish(tmp, info)
    return BenchmarkInfo.of(out, info, time.perf_counter() - start)


__all__ = ["N_HARD", "N_RANDOM", "PERTURBATION", "BenchmarkInfo", "build_benchmark", "build_from_samples"]
