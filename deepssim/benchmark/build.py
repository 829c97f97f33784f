"""Build a memorization benchmark (BENCHMARK.md) from a folder of real images.

The real images are split, by group (subject), into the generative model's training set
(``train/``) and a pool of non-members. Synthetic images are then made in the frame of the
training images: ``memorized_fraction`` of them from training images by a near-copy
generator (``deepssim.training.pairs.FAMILIES``) at a strength calibrated so that the
(source, copy) pairs land in all three SSIM classes, the rest from non-members with a mild
generator change. Every label is the reference SSIM of the files as written and read back;
the oracle (``ssim_matrix`` of all training x synthetic images) gives each synthetic image's
nearest training image (``audit.csv``) and the ranking that hard negatives come from.

Everything is drawn from one seed: the same inputs and parameters give the same bytes.
The build writes into a hidden folder beside ``out`` and renames it into place at the end,
so an interrupted build leaves no half-written benchmark.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..storage import atomic_write_bytes, write_csv
from ..versions import __version__
from ..model.preprocess import Preprocess
from ..readers import load_stack, read_image, scan
from ..refssim import ssim_matrix, ssim_pairs
from ..transforms.nearcopy import BENCHMARK_FAMILIES, FAMILIES
from ..transforms.perturb import BENCHMARK_PERTURB, apply_to_image, draw_params
from .neardup import DEFAULT_THRESHOLD as NEAR_DUPLICATE_THRESHOLD
from .neardup import near_duplicate_groups
from .layout import (
    AUDIT_CSV,
    CLEAN_DIR,
    DUPLICATE_THRESHOLD,
    FORMAT_VERSION,
    INFO_JSON,
    LABELS,
    PAIRS_CSV,
    SIMILAR_THRESHOLD,
    SYNTHETIC_CSV,
    SYNTHETIC_DIR,
    TRAIN_CSV,
    TRAIN_DIR,
    classify,
)

log = logging.getLogger(__name__)

PERTURBATION = BENCHMARK_PERTURB
"""The perturbation of ``synthetic/`` (``transforms.perturb.BENCHMARK_PERTURB``)."""

MEMORIZED_CLASSES: dict[str, tuple[float, tuple[float, float]]] = {
    "duplicate": (0.45, (0.87, 0.995)),
    "similar": (0.35, (0.62, 0.83)),
    "different": (0.20, (0.35, 0.58)),
}
"""Per class of the (source, copy) SSIM: the share of the memorized images and the band their
target SSIM is drawn from (uniformly); a copy is kept once its SSIM is anywhere in the class."""
REPEAT_SHARE = 0.1
"""Share of the memorized images made from a source that is already copied (a memorizing
model reproduces some training images several times)."""
NONMEMBER_STRENGTH = (0.0, 0.3)
"""Non-members get a mild change by a generator family, strength uniform in this range."""
N_HARD = 2
"""Hard negatives per synthetic image: the next training images of its ranking."""
N_RANDOM = 2
"""Random training images paired with each synthetic image."""
CALIBRATION_IMAGES = 6
"""Training images on which each family's strength -> SSIM curve is measured."""
CALIBRATION_STRENGTHS = np.linspace(0.0, 1.0, 11)
SEARCH_ROUNDS = 6
"""Rounds of strength bisection for copies whose SSIM missed their class."""

_CLASS_RANGE = {
    "duplicate": (DUPLICATE_THRESHOLD, np.inf),
    "similar": (SIMILAR_THRESHOLD, DUPLICATE_THRESHOLD),
    "different": (-np.inf, SIMILAR_THRESHOLD),
}  # (exclusive low, inclusive high), as ``classify`` cuts


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
            f"train {self.n_train} images; synthetic {self.n_synthetic} "
            f"({self.n_memorized} memorized, {self.n_nonmember} non-members)\n"
            f"pairs {sum(self.pair_labels.values())}: {labels}\n"
            f"memorized (source, copy) classes: {mem}\n"
            f"audit: {self.n_copies} of {self.n_synthetic} synthetic images are copies "
            f"(nearest SSIM > {DUPLICATE_THRESHOLD})"
        )


# --- small helpers -----------------------------------------------------------------------


def to_uint16(image: np.ndarray) -> np.ndarray:
    """Min-max scale one image to the full 16-bit range (a constant image becomes zeros).

    The reference SSIM z-scores each image first, so this affine map changes no SSIM value
    beyond the rounding to 65,536 levels; labels are computed on the written files anyway.
    """
    x = np.asarray(image, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    if not hi > lo:
        return np.zeros(x.shape, dtype=np.uint16)
    return np.round((x - lo) * (65535.0 / (hi - lo))).astype(np.uint16)


def _png_bytes(image16: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image16).save(buffer, format="PNG")  # uint16 -> 16-bit grayscale PNG
    return buffer.getvalue()


def _write_and_read(folder: Path, rel: str, image: np.ndarray) -> np.ndarray:
    """Write ``image`` as a 16-bit PNG at ``folder/rel`` and return the file as read back."""
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_png_bytes(to_uint16(image)))
    return read_image(path)


_UNSAFE = re.compile(r"[^A-Za-z0-9._/-]+")
_IMAGE_SUFFIX = re.compile(r"(\.nii\.gz|\.[A-Za-z0-9]{1,5})$")


def _train_names(ids: Sequence[str]) -> list[str]:
    """A unique ``train/....png`` path for each image id: the id's folders and stem, with its
    fragment (slice, npz member) appended and characters outside [A-Za-z0-9._-] replaced."""
    names: list[str] = []
    taken: set[str] = set()
    for image_id in ids:
        path, _, fragment = image_id.partition("#")
        stem = _IMAGE_SUFFIX.sub("", path)
        if fragment:
            stem += "_" + fragment
        stem = _UNSAFE.sub("_", stem).strip("/") or "image"
        stem = "/".join(part if part not in ("", ".", "..") else "_" for part in stem.split("/"))
        name, k = f"{TRAIN_DIR}/{stem}.png", 1
        while name in taken:
            k += 1
            name = f"{TRAIN_DIR}/{stem}-{k}.png"
        taken.add(name)
        names.append(name)
    return names


def _group_images(
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
        keys: list[str | None] = []
        for image_id in ids:
            m = pattern.search(image_id)
            if m is None:
                keys.append(None)  # its own group
            else:
                key = m.group(1) if pattern.groups and m.group(1) is not None else m.group(0)
                keys.append(key)
        join(keys)
    join([hashlib.sha256(im.tobytes()).hexdigest() for im in stored])
    if near_duplicates is not None:
        join([str(g) for g in near_duplicate_groups(stored, near_duplicates, progress=progress)])
    roots = [find(i) for i in range(len(ids))]
    _, group = np.unique(roots, return_inverse=True)
    return group.astype(np.int64)


def _split_groups(group: np.ndarray, n_train: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
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


def _shares(n: int, shares: Sequence[float]) -> list[int]:
    """Split n by shares, largest remainders first (sums to n)."""
    raw = np.asarray(shares, dtype=np.float64) / sum(shares) * n
    counts = np.floor(raw).astype(int)
    for k in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[k] += 1
    return counts.tolist()


def _fmt(value: float) -> str:
    """A float for the CSV files; an unknown value (NaN: a sample's generator strength) is empty."""
    return "" if math.isnan(value) else repr(float(value))


# --- the near-copies ---------------------------------------------------------------------


@dataclass
class _Synthetic:
    """One synthetic image being made: its origin image, generator and the result."""

    member: bool
    origin: int  # index of the image it is made from (a training image for members)
    family: str
    strength: float
    seed: int
    partner: int | None
    label: str = ""  # members: the class aimed at
    target: float = float("nan")
    image: np.ndarray | None = None
    origin_ssim: float = float("nan")


def _generate(item: _Synthetic, stored: list[np.ndarray]) -> np.ndarray:
    partner = None if item.partner is None else stored[item.partner]
    return FAMILIES[item.family](
        stored[item.origin], item.strength, np.random.default_rng(item.seed), partner=partner
    )


def _calibrate(
    families: Sequence[str], stored: list[np.ndarray], train: np.ndarray, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Median SSIM to the source per family at CALIBRATION_STRENGTHS, made non-increasing."""
    picks = rng.choice(train, size=min(CALIBRATION_IMAGES, len(train)), replace=False)
    seeds = rng.integers(0, 2**63 - 1, size=len(picks))
    a: list[np.ndarray] = []
    b: list[np.ndarray] = []
    for family in families:
        for k, src in enumerate(picks):
            partner = int(picks[(k + 1) % len(picks)]) if len(picks) > 1 else None
            for s in CALIBRATION_STRENGTHS:
                item = _Synthetic(True, int(src), family, float(s), int(seeds[k]), partner)
                a.append(stored[src])
                b.append(_generate(item, stored))
    values = ssim_pairs(a, b, device="cpu", progress=False)
    values = values.reshape(len(families), len(picks), len(CALIBRATION_STRENGTHS))
    return {f: np.minimum.accumulate(np.median(values[k], axis=0)) for k, f in enumerate(families)}


def _strength_for(curve: np.ndarray, target: float) -> float:
    """The strength at which a non-increasing calibration curve crosses ``target``."""
    if target >= curve[0]:
        return 0.0
    if target <= curve[-1]:
        return 1.0
    # np.interp needs increasing x: read the curve backwards.
    return float(np.interp(target, curve[::-1], CALIBRATION_STRENGTHS[::-1]))


def _make_members(
    items: list[_Synthetic], families: Sequence[str], curves: dict[str, np.ndarray],
    stored: list[np.ndarray], rng: np.random.Generator, progress: bool,
) -> None:
    """Generate the memorized copies, searching each one's strength until the SSIM to its
    source is in the class aimed at: first the calibrated strength, then bisection; a family
    that cannot reach the class even at strength 1 is replaced by the next one that can."""
    order = {id(it): [it.family] + [f for f in rng.permutation(families) if f != it.family] for it in items}
    bracket = {id(it): [0.0, 1.0] for it in items}
    pending = list(items)
    bar = tqdm(total=len(items), desc="near-copies", unit="image", disable=not progress, file=sys.stderr)
    best: dict[int, tuple[float, np.ndarray, str, float, float]] = {}
    for round_ in range(SEARCH_ROUNDS * len(families) + 1):
        if not pending:
            break
        images = [_generate(it, stored) for it in pending]
        values = ssim_pairs([stored[it.origin] for it in pending], images, device="cpu", progress=False)
        still: list[_Synthetic] = []
        for it, image, value in zip(pending, images, values):
            key = id(it)
            lo, hi = _CLASS_RANGE[it.label]
            miss = 0.0 if lo < value <= hi else min(abs(value - lo), abs(value - hi))
            if key not in best or miss < best[key][0]:
                best[key] = (miss, image, it.family, it.strength, float(value))
            if miss == 0.0 or round_ == SEARCH_ROUNDS * len(families):
                continue
            b = bracket[key]
            if value > hi:
                b[0] = it.strength  # too similar: more strength
            else:
                b[1] = it.strength
            if value > hi and it.strength >= 1.0 or b[1] - b[0] < 1e-3:
                # This family cannot reach the class: the next one that can (by calibration).
                tried = order[key]
                nxt = next((f for f in tried[1:] if curves[f][-1] < hi or it.label == "duplicate"), None)
                if nxt is None:
                    continue
                tried.remove(it.family)
                tried.remove(nxt)
                tried.insert(0, nxt)
                it.family = nxt
                bracket[key] = b = [0.0, 1.0]
                it.strength = _strength_for(curves[nxt], it.target)
            else:
                it.strength = 0.5 * (b[0] + b[1])
            still.append(it)
        bar.update(len(pending) - len(still))
        pending = still
    bar.update(len(pending))
    bar.close()
    for it in items:
        _, it.image, it.family, it.strength, it.origin_ssim = best[id(it)]


# --- the build -----------------------------------------------------------------------------


def _check_args(
    n_train: int, n_synthetic: int, size: int, families: Sequence[str], memorized_fraction: float,
    group_by: str | None, n_hard: int, n_random: int, near_duplicates: float | None,
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
    if group_by is not None:
        try:
            re.compile(group_by)
        except re.error as exc:
            raise ValueError(f"group_by: bad regular expression {group_by!r}: {exc}") from None


def _check_out(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"{out} exists and is not empty: choose another folder or pass --overwrite")
    if not (out / INFO_JSON).is_file():
        raise FileExistsError(
            f"{out} is not empty and holds no {INFO_JSON}: refusing to overwrite a folder that "
            "is not a benchmark (remove it yourself)"
        )


def _info_header(created_by: str) -> dict[str, Any]:
    """The fields every ``benchmark.json`` starts with."""
    return {
        "format_version": FORMAT_VERSION,
        "deepssim_version": __version__,
        "created_by": created_by,
        "perturbation": asdict(PERTURBATION),
        "thresholds": {"similar": SIMILAR_THRESHOLD, "duplicate": DUPLICATE_THRESHOLD},
        "ssim": "reference SSIM: per-image z-score, scikit-image defaults, data_range of the real image",
    }


@contextmanager
def _building(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out`` to build in; removed if the build fails."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _install(tmp: Path, out: Path, info: dict[str, Any]) -> None:
    """Write ``benchmark.json`` and move the finished build into place, replacing an old
    benchmark folder if any."""
    atomic_write_bytes(tmp / INFO_JSON, (json.dumps(info, indent=2) + "\n").encode())
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


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
        families: near-copy generators (``deepssim.training.pairs.FAMILIES``) to use; by
            default ``BENCHMARK_FAMILIES``, the seven the development benchmarks were built with.
        seed: everything random is drawn from it (same inputs and seed: same bytes).
        n_hard, n_random: hard-negative and random pairs per synthetic image.
        overwrite: replace an existing benchmark folder.

    Raises:
        ValueError: bad parameters, or too few images (or groups) for the counts asked.
        ReadError: unreadable input files, listed by name.
        FileExistsError: ``out`` exists and is not empty (without ``overwrite``).
    """
    start = time.perf_counter()
    families = list(dict.fromkeys(families))
    _check_args(n_train, n_synthetic, size, families, memorized_fraction, group_by, n_hard, n_random,
                near_duplicates)
    out = Path(out).absolute()
    _check_out(out, overwrite)
    n_memorized = round(memorized_fraction * n_synthetic)
    n_nonmember = n_synthetic - n_memorized
    roots = [str(p) for p in images]
    if not roots:
        raise ValueError("images: no input folder or file given")

    resized, ids = load_stack(roots, Preprocess(size=size).resize, progress=progress)
    if len(set(ids)) != len(ids):
        dup = next(i for i, c in Counter(ids).items() if c > 1)
        raise ValueError(f"two inputs give the same image id {dup!r}: pass folders with distinct names")
    if len(ids) < n_train + n_nonmember:
        raise ValueError(
            f"too few images: {len(ids)} found, but n_train {n_train} + {n_nonmember} non-members "
            f"({n_synthetic} synthetic, memorized fraction {memorized_fraction}) = "
            f"{n_train + n_nonmember} are needed"
        )
    # The images as they will be stored (16-bit); groups and generators work on these.
    quantized = [to_uint16(im) for im in resized]
    del resized
    group = _group_images(ids, quantized, group_by, near_duplicates, progress)
    stored = [q.astype(np.float32) for q in quantized]

    rng = np.random.default_rng(seed)
    train, pool = _split_groups(group, n_train, rng)
    pool_groups = np.unique(group[pool])
    if len(train) < n_train:
        log.warning("train holds %d images, not %d: the groups' sizes do not add up", len(train), n_train)
    if len(pool_groups) < n_nonmember:
        raise ValueError(
            f"too few groups: {len(np.unique(group))} groups in {len(ids)} images; after "
            f"{len(train)} training images only {len(pool_groups)} groups are left for "
            f"{n_nonmember} non-members (one per group): lower n_train or n_synthetic"
        )
    if n_memorized and not len(train):
        raise ValueError("no training image to make memorized copies from")

    # --- plan the synthetic images ---
    items: list[_Synthetic] = []
    n_repeat = min(round(REPEAT_SHARE * n_memorized), n_memorized)
    n_distinct = min(n_memorized - n_repeat, len(train))
    n_repeat = n_memorized - n_distinct
    distinct = rng.choice(train, size=n_distinct, replace=False)
    sources = np.concatenate([distinct, rng.choice(distinct, size=n_repeat)]).astype(np.int64)
    names = list(MEMORIZED_CLASSES)
    labels = np.repeat(names, _shares(n_memorized, [MEMORIZED_CLASSES[k][0] for k in names]))
    labels = labels[rng.permutation(n_memorized)]
    curves = _calibrate(families, stored, train, rng) if n_memorized else {}
    counts = Counter({f: 0 for f in families})
    for src, label in zip(sources, labels):
        lo, hi = MEMORIZED_CLASSES[label][1]
        target = float(rng.uniform(lo, hi))
        # Balanced families among those whose calibrated curve reaches the class.
        reach = [f for f in families if label == "duplicate" or curves[f][-1] < _CLASS_RANGE[label][1]]
        reach = reach or families
        low = min(counts[f] for f in reach)
        family = str(rng.choice([f for f in reach if counts[f] == low]))
        counts[family] += 1
        partner = int(rng.choice(train[train != src])) if len(train) > 1 else None
        items.append(_Synthetic(True, int(src), family, _strength_for(curves[family], target),
                                int(rng.integers(0, 2**63 - 1)), partner, str(label), target))
    chosen_groups = rng.choice(pool_groups, size=n_nonmember, replace=False)
    nonmember_families = [families[k] for k in rng.permutation(np.resize(np.arange(len(families)), n_nonmember))]
    for g, family in zip(chosen_groups, nonmember_families):
        origin = int(rng.choice(pool[group[pool] == g]))
        others = pool[pool != origin]
        partner = int(rng.choice(others)) if len(others) else None
        items.append(_Synthetic(False, origin, family, float(rng.uniform(*NONMEMBER_STRENGTH)),
                                int(rng.integers(0, 2**63 - 1)), partner))
    perturb_seeds = rng.integers(0, 2**63 - 1, size=n_synthetic)
    name_order = rng.permutation(n_synthetic)  # item k gets name s{name_order[k]}

    # --- make the images ---
    _make_members([it for it in items if it.member], families, curves, stored, rng, progress)
    nonmembers = [it for it in items if not it.member]
    for it in tqdm(nonmembers, desc="non-members", unit="image", disable=not progress, file=sys.stderr):
        it.image = _generate(it, stored)
    if nonmembers:
        values = ssim_pairs([stored[it.origin] for it in nonmembers], [it.image for it in nonmembers],
                            device="cpu", progress=False)
        for it, v in zip(nonmembers, values):
            it.origin_ssim = float(v)

    with _building(out) as tmp:
        info = _write_benchmark(
            tmp, ids, group, stored, train, items, name_order, perturb_seeds, n_hard, n_random, rng,
            progress,
        )
        params = {
            "n_train": n_train, "n_synthetic": n_synthetic, "size": size, "group_by": group_by,
            "near_duplicates": near_duplicates,
            "families": families, "memorized_fraction": memorized_fraction, "seed": seed,
            "n_hard": n_hard, "n_random": n_random,
            "memorized_classes": {k: {"share": s, "target_band": list(b)} for k, (s, b) in MEMORIZED_CLASSES.items()},
            "repeat_share": REPEAT_SHARE, "nonmember_strength": list(NONMEMBER_STRENGTH),
        }
        info = {
            **_info_header("deepssim benchmark build"),
            "parameters": params,
            "sources": {
                "inputs": [str(Path(r).absolute()) for r in roots],
                "images_found": len(ids),
                "groups": int(group.max()) + 1,
                "grouping": ("regex " + repr(group_by) if group_by else "none")
                + " + pixel-identical images"
                + (f" + near-duplicates (> {near_duplicates})" if near_duplicates is not None else ""),
            },
            "calibration": {f: [round(float(v), 4) for v in c] for f, c in curves.items()},
            **info,
        }
        _install(tmp, out, info)
    counts_ = info["counts"]
    return BenchmarkInfo(
        path=out,
        n_train=counts_["train"],
        n_synthetic=n_synthetic,
        n_memorized=n_memorized,
        n_nonmember=n_nonmember,
        pair_labels=counts_["pairs_by_label"],
        pair_kinds=counts_["pairs_by_kind"],
        n_copies=counts_["audit_copies"],
        memorized_labels=counts_["memorized_by_class"],
        seconds=time.perf_counter() - start,
        info=info,
    )


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
    ``synthetic/`` holds the samples perturbed as in BENCHMARK.md. ``size`` resizes (stretches)
    every image; by default all images must already share one size.
    """
    start = time.perf_counter()
    out = Path(out).absolute()
    _check_out(out, overwrite)
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
    items = [_Synthetic(False, n_train + k, "external", float("nan"), 0, None, image=stored[n_train + k])
             for k in range(len(syn_part))]
    with _building(out) as tmp:
        info = _write_benchmark(
            tmp, ids, np.arange(len(ids)), stored, np.arange(n_train), items, np.arange(len(items)),
            rng.integers(0, 2**63 - 1, size=len(items)), n_hard, n_random, rng, progress,
        )
        info = {
            **_info_header("deepssim benchmark from-samples"),
            "parameters": {"size": size, "seed": seed, "n_hard": n_hard, "n_random": n_random},
            "sources": {"train": str(Path(train).absolute()), "synthetic": str(Path(synthetic).absolute())},
            **info,
        }
        _install(tmp, out, info)
    counts = info["counts"]
    return BenchmarkInfo(path=out, n_train=n_train, n_synthetic=len(items), n_memorized=0,
                         n_nonmember=len(items), pair_labels=counts["pairs_by_label"],
                         pair_kinds=counts["pairs_by_kind"], n_copies=counts["audit_copies"],
                         memorized_labels=counts["memorized_by_class"],
                         seconds=time.perf_counter() - start, info=info)


def _write_benchmark(
    tmp: Path, ids: list[str], group: np.ndarray, stored: list[np.ndarray], train: np.ndarray,
    items: list[_Synthetic], name_order: np.ndarray, perturb_seeds: np.ndarray, n_hard: int,
    n_random: int, rng: np.random.Generator, progress: bool,
) -> dict[str, Any]:
    """Write images and CSV files into ``tmp``; return the counts for benchmark.json."""
    n_syn = len(items)
    width = max(5, len(str(n_syn - 1)))
    syn_names = [f"s{int(k):0{width}d}.png" for k in name_order]
    train_names = _train_names([ids[i] for i in train])
    train_pos = {int(i): k for k, i in enumerate(train)}

    train_back = [
        _write_and_read(tmp, name, stored[i])
        for name, i in tqdm(list(zip(train_names, train)), desc="writing train", unit="image",
                            disable=not progress, file=sys.stderr)
    ]
    clean_back = [
        _write_and_read(tmp / CLEAN_DIR, name, it.image)  # type: ignore[arg-type]
        for name, it in zip(syn_names, items)
    ]
    # The oracle: reference SSIM with the real (training) image first, as labels define it.
    S = ssim_matrix(train_back, clean_back, device="cpu", progress=progress).T  # (synthetic, train)

    syn_rows: list[dict[str, str]] = []
    audit_rows: list[dict[str, str]] = []
    pair_rows: list[dict[str, str]] = []
    for k in tqdm(np.argsort(syn_names), desc="perturbed + pairs", unit="image", disable=not progress,
                  file=sys.stderr):
        it, name, row = items[k], syn_names[k], S[k]
        params = draw_params(PERTURBATION, 1, np.random.default_rng(int(perturb_seeds[k])))
        perturbed = apply_to_image(clean_back[k], params)
        (tmp / SYNTHETIC_DIR).mkdir(exist_ok=True)
        (tmp / SYNTHETIC_DIR / name).write_bytes(_png_bytes(to_uint16(perturbed)))
        synthetic = f"{SYNTHETIC_DIR}/{name}"
        source = train_pos[it.origin] if it.member else None
        origin_ssim = float(row[source]) if source is not None else it.origin_ssim
        syn_rows.append({
            "synthetic": synthetic,
            "member": "1" if it.member else "0",
            "source": train_names[source] if source is not None else "",
            "origin_id": ids[it.origin],
            "family": it.family,
            "strength": _fmt(it.strength),
            "origin_ssim": _fmt(origin_ssim),
            "origin_label": "" if math.isnan(origin_ssim) else classify(origin_ssim),
            "flip0": str(int(params.flip0[0])),
            "flip1": str(int(params.flip1[0])),
            "degrees": _fmt(params.degrees[0]),
            "gamma": _fmt(params.gamma[0]),
        })
        ranking = np.argsort(-row, kind="stable")
        best = float(row[ranking[0]])
        ties = [train_names[j] for j in np.flatnonzero(row >= best) if j != ranking[0]]
        audit_rows.append({
            "synthetic": synthetic,
            "nearest_train": train_names[ranking[0]],
            "nearest_ssim": _fmt(best),
            "is_copy": "true" if best > DUPLICATE_THRESHOLD else "false",
            "also_nearest": ";".join(ties),
        })
        chosen: dict[int, str] = {}
        if source is not None:
            chosen[source] = "source"
        chosen.setdefault(int(ranking[0]), "best")
        hard = [int(j) for j in ranking if int(j) not in chosen][:n_hard]
        chosen.update({j: "hard" for j in hard})
        free = np.setdiff1d(np.arange(len(train)), list(chosen))
        for j in rng.choice(free, size=min(n_random, len(free)), replace=False):
            chosen[int(j)] = "random"
        for j, kind in chosen.items():
            pair_rows.append({
                "real": train_names[j],
                "synthetic": synthetic,
                "label": classify(float(row[j])),
                "ssim": _fmt(row[j]),
                "kind": kind,
                "member": "1" if it.member else "0",
                "family": it.family,
                "strength": _fmt(it.strength),
            })

    write_csv(tmp / PAIRS_CSV, list(pair_rows[0]), pair_rows)
    write_csv(tmp / AUDIT_CSV, list(audit_rows[0]), audit_rows)
    write_csv(tmp / SYNTHETIC_CSV, list(syn_rows[0]), syn_rows)
    write_csv(tmp / TRAIN_CSV, ["train", "origin_id", "group"], [
        {"train": n, "origin_id": ids[i], "group": str(int(group[i]))} for n, i in zip(train_names, train)
    ])

    members = [r for r in syn_rows if r["member"] == "1"]
    copies = [r for r in audit_rows if r["is_copy"] == "true"]
    member_of = {r["synthetic"]: r["member"] == "1" for r in syn_rows}

    def by(rows: list[dict[str, str]], key: str, order: Sequence[str] = ()) -> dict[str, int]:
        c = Counter(r[key] for r in rows)
        return {k: c.get(k, 0) for k in order} if order else dict(sorted(c.items()))

    return {
        "counts": {
            "train": len(train),
            "train_groups": len(np.unique(group[train])),
            "nonmember_pool_images": len(ids) - len(train),
            "synthetic": n_syn,
            "memorized": len(members),
            "nonmember": n_syn - len(members),
            "memorized_distinct_sources": len({r["source"] for r in members}),
            "memorized_by_class": by(members, "origin_label", LABELS),
            "memorized_by_family": by(members, "family"),
            "nonmember_by_nearest_class": by(
                [{"c": classify(float(a["nearest_ssim"]))} for a in audit_rows if not member_of[a["synthetic"]]],
                "c", LABELS),
            "pairs": len(pair_rows),
            "pairs_by_label": by(pair_rows, "label", LABELS),
            "pairs_by_kind": by(pair_rows, "kind", ("source", "best", "hard", "random")),
            "audit_copies": len(copies),
            "audit_copies_memorized": sum(member_of[r["synthetic"]] for r in copies),
        },
    }
