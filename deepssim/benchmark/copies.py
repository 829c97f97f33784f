"""The synthetic images of a benchmark: memorized copies of training images and non-members.

A memorized image is a near-copy (``deepssim.transforms.nearcopy.FAMILIES``) of a training
image whose (source, copy) SSIM is aimed at one of the three classes, so that a detector is
tested on exact, altered and loose copies alike. The strength that gives a target SSIM depends
on the family and the image: each family's strength -> SSIM curve is measured on a few training
images (``calibrate``), a copy starts at the strength its curve gives for the target, and a copy
that misses its class is searched by bisection (or made by another family that can reach it).
A non-member is a non-member image changed mildly by a family, as a generator would.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from ..classes import DUPLICATE_THRESHOLD, SIMILAR_THRESHOLD
from ..refssim import ssim_pairs
from ..transforms.nearcopy import FAMILIES

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
class Synthetic:
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


def generate(item: Synthetic, stored: list[np.ndarray]) -> np.ndarray:
    """The image of ``item`` at its current family and strength (the same seed every time, so
    that a search over strengths changes nothing else)."""
    partner = None if item.partner is None else stored[item.partner]
    return FAMILIES[item.family](
        stored[item.origin], item.strength, np.random.default_rng(item.seed), partner=partner
    )


def shares(n: int, weights: Sequence[float]) -> list[int]:
    """Split n by ``weights``, largest remainders first (sums to n)."""
    raw = np.asarray(weights, dtype=np.float64) / sum(weights) * n
    counts = np.floor(raw).astype(int)
    for k in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[k] += 1
    return counts.tolist()


def calibrate(
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
                item = Synthetic(True, int(src), family, float(s), int(seeds[k]), partner)
                a.append(stored[src])
                b.append(generate(item, stored))
    values = ssim_pairs(a, b, device="cpu", progress=False)
    values = values.reshape(len(families), len(picks), len(CALIBRATION_STRENGTHS))
    return {f: np.minimum.accumulate(np.median(values[k], axis=0)) for k, f in enumerate(families)}


def strength_for(curve: np.ndarray, target: float) -> float:
    """The strength at which a non-increasing calibration curve crosses ``target``."""
    if target >= curve[0]:
        return 0.0
    if target <= curve[-1]:
        return 1.0
    # np.interp needs increasing x: read the curve backwards.
    return float(np.interp(target, curve[::-1], CALIBRATION_STRENGTHS[::-1]))


def _reaches(curve: np.ndarray, label: str) -> bool:
    """Whether a family's calibrated curve gets below the top of class ``label`` at strength 1
    (every family reaches ``duplicate``: strength 0 is the source itself)."""
    return label == "duplicate" or curve[-1] < _CLASS_RANGE[label][1]


def plan_members(
    stored: list[np.ndarray], train: np.ndarray, n_memorized: int, families: Sequence[str],
    rng: np.random.Generator,
) -> tuple[list[Synthetic], dict[str, np.ndarray]]:
    """The memorized images to make (sources, classes aimed at, families, starting strengths)
    and the calibration curves of the families (empty when no image is memorized)."""
    n_repeat = min(round(REPEAT_SHARE * n_memorized), n_memorized)
    n_distinct = min(n_memorized - n_repeat, len(train))
    n_repeat = n_memorized - n_distinct
    distinct = rng.choice(train, size=n_distinct, replace=False)
    sources = np.concatenate([distinct, rng.choice(distinct, size=n_repeat)]).astype(np.int64)
    names = list(MEMORIZED_CLASSES)
    labels = np.repeat(names, shares(n_memorized, [MEMORIZED_CLASSES[k][0] for k in names]))
    labels = labels[rng.permutation(n_memorized)]
    curves = calibrate(families, stored, train, rng) if n_memorized else {}
    counts = Counter({f: 0 for f in families})
    items: list[Synthetic] = []
    for src, label in zip(sources, labels):
        lo, hi = MEMORIZED_CLASSES[label][1]
        target = float(rng.uniform(lo, hi))
        # Balanced families among those whose calibrated curve reaches the class.
        reach = [f for f in families if _reaches(curves[f], label)] or list(families)
        low = min(counts[f] for f in reach)
        family = str(rng.choice([f for f in reach if counts[f] == low]))
        counts[family] += 1
        partner = int(rng.choice(train[train != src])) if len(train) > 1 else None
        items.append(Synthetic(True, int(src), family, strength_for(curves[family], target),
                               int(rng.integers(0, 2**63 - 1)), partner, str(label), target))
    return items, curves


def plan_nonmembers(
    pool: np.ndarray, group: np.ndarray, n_nonmember: int, families: Sequence[str], rng: np.random.Generator
) -> list[Synthetic]:
    """One non-member image per group drawn from the pool, with families in equal turns."""
    chosen_groups = rng.choice(np.unique(group[pool]), size=n_nonmember, replace=False)
    nonmember_families = [families[k] for k in rng.permutation(np.resize(np.arange(len(families)), n_nonmember))]
    items: list[Synthetic] = []
    for g, family in zip(chosen_groups, nonmember_families):
        origin = int(rng.choice(pool[group[pool] == g]))
        others = pool[pool != origin]
        partner = int(rng.choice(others)) if len(others) else None
        items.append(Synthetic(False, origin, family, float(rng.uniform(*NONMEMBER_STRENGTH)),
                               int(rng.integers(0, 2**63 - 1)), partner))
    return items


def make_members(
    items: list[Synthetic], families: Sequence[str], curves: dict[str, np.ndarray],
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
    last_round = SEARCH_ROUNDS * len(families)
    for round_ in range(last_round + 1):
        if not pending:
            break
        images = [generate(it, stored) for it in pending]
        values = ssim_pairs([stored[it.origin] for it in pending], images, device="cpu", progress=False)
        still: list[Synthetic] = []
        for it, image, value in zip(pending, images, values):
            key = id(it)
            lo, hi = _CLASS_RANGE[it.label]
            miss = 0.0 if lo < value <= hi else min(abs(value - lo), abs(value - hi))
            if key not in best or miss < best[key][0]:
                best[key] = (miss, image, it.family, it.strength, float(value))
            if miss == 0.0 or round_ == last_round:
                continue
            b = bracket[key]
            if value > hi:
                b[0] = it.strength  # too similar: more strength
            else:
                b[1] = it.strength
            if value > hi and it.strength >= 1.0 or b[1] - b[0] < 1e-3:
                # This family cannot reach the class: the next one that can (by calibration).
                tried = order[key]
                nxt = next((f for f in tried[1:] if _reaches(curves[f], it.label)), None)
                if nxt is None:
                    continue
                tried.remove(it.family)
                tried.remove(nxt)
                tried.insert(0, nxt)
                it.family = nxt
                bracket[key] = b = [0.0, 1.0]
                it.strength = strength_for(curves[nxt], it.target)
            else:
                it.strength = 0.5 * (b[0] + b[1])
            still.append(it)
        bar.update(len(pending) - len(still))
        pending = still
    bar.update(len(pending))
    bar.close()
    for it in items:
        _, it.image, it.family, it.strength, it.origin_ssim = best[id(it)]


def make_nonmembers(items: list[Synthetic], stored: list[np.ndarray], progress: bool) -> None:
    """Generate the non-member images and record each one's SSIM to its origin image."""
    for it in tqdm(items, desc="non-members", unit="image", disable=not progress, file=sys.stderr):
        it.image = generate(it, stored)
    if items:
        values = ssim_pairs([stored[it.origin] for it in items], [it.image for it in items],
                            device="cpu", progress=False)
        for it, v in zip(items, values):
            it.origin_ssim = float(v)
