"""Training pairs with reference-SSIM targets that cover the whole SSIM range.

Random pairs of one image set are nearly all "different" (SSIM 0.1-0.4), while the audit is
about near-copies such as a memorizing generator makes. ``build_pairs`` therefore mixes
SSIM-stratified pairs of distinct inputs with pairs of an input and a generated near-copy
(``deepssim.transforms.nearcopy``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..refssim import registered_ssim, ssim_pairs
from ..storage import atomic_write
from ..transforms.nearcopy import FAMILIES

RANDOM = "random"
"""``PairSet.family`` of a pair of two distinct inputs."""
CROSS_PREFIX = "cross:"
"""``PairSet.family`` prefix of (input, copy of a different input), e.g. ``cross:blur``."""
COPY_JOIN = "+"
"""``PairSet.family`` of two copies of one source joins their families, e.g. ``blur+noise``."""


# --- the pair set --------------------------------------------------------------------------

_FORMAT_VERSION = 1
_FIELDS = ("images", "a", "b", "target", "family")


@dataclass(frozen=True)
class PairStats:
    """Summary of a PairSet's targets: a histogram over [min(0, lowest target), 1] and the
    count and mean target of each family label."""

    edges: np.ndarray
    counts: np.ndarray
    by_family: dict[str, tuple[int, float]]

    def __str__(self) -> str:
        edges = zip(self.edges, self.edges[1:], self.counts)
        bins = " ".join(f"[{lo:.2f},{hi:.2f}):{c}" for lo, hi, c in edges)
        fams = ", ".join(f"{k} {n} (mean {m:.3f})" for k, (n, m) in sorted(self.by_family.items()))
        return f"targets {bins}\nfamilies {fams}"


@dataclass
class PairSet:
    """Training pairs: indices into one image stack and the reference SSIM of each pair.

    ``images`` holds the N clean inputs first, then generated near-copies. ``family`` is
    ``"random"`` for two distinct inputs, a family name when ``b`` was made from ``a`` by it,
    ``"f1+f2"`` for two copies of one source made by f1 and f2, and ``"cross:f"`` for an
    input against a copy (by f) of a different input.
    """

    images: np.ndarray
    a: np.ndarray
    b: np.ndarray
    target: np.ndarray
    family: np.ndarray

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images, dtype=np.float32)
        self.a = np.asarray(self.a, dtype=np.int64)
        self.b = np.asarray(self.b, dtype=np.int64)
        self.target = np.asarray(self.target, dtype=np.float32)
        self.family = np.asarray(self.family, dtype=np.str_)
        if self.images.ndim != 3:
            raise ValueError(f"images must be an (K, H, W) stack, got shape {self.images.shape}")
        n = len(self.a)
        for name in ("b", "target", "family"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"PairSet.{name} has shape {getattr(self, name).shape}, expected ({n},)")
        for name in ("a", "b"):
            idx = getattr(self, name)
            if n and (idx.min() < 0 or idx.max() >= len(self.images)):
                raise ValueError(f"PairSet.{name} indexes outside the {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.a)

    def subset(self, mask: np.ndarray) -> PairSet:
        """The pairs selected by a boolean mask or an index array; images are shared, not copied."""
        return PairSet(self.images, self.a[mask], self.b[mask], self.target[mask], self.family[mask])

    def stats(self, n_bins: int = 10) -> PairStats:
        """Histogram of the targets and per-family counts, for logging."""
        lo = min(0.0, float(self.target.min())) if len(self) else 0.0
        counts, edges = np.histogram(self.target, bins=n_bins, range=(lo, 1.0))
        by_family = {
            str(name): (int(np.sum(self.family == name)), float(self.target[self.family == name].mean()))
            for name in np.unique(self.family)
        }
        return PairStats(edges=edges, counts=counts, by_family=by_family)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write one .npz file atomically: a temporary file beside it, then a rename."""
        arrays = {k: getattr(self, k) for k in _FIELDS}
        atomic_write(Path(path), lambda fh: np.savez(fh, version=np.int64(_FORMAT_VERSION), **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PairSet:
        """Read a file written by ``save``."""
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("version", *_FIELDS) if k not in data]
            if missing:
                raise ValueError(f"{path}: not a PairSet file (missing {', '.join(missing)})")
            if int(data["version"]) != _FORMAT_VERSION:
                raise ValueError(f"{path}: PairSet format {int(data['version'])}, expected {_FORMAT_VERSION}")
            return cls(**{k: data[k] for k in _FIELDS})


# --- building pairs ------------------------------------------------------------------------

COPY_COPY_SHARE = 0.15
"""Share of the copy pairs that are two copies of one source (by two families)."""
CROSS_SHARE = 0.15
"""Share of the copy pairs that are an input against a copy of a different input."""
STRENGTH_POWER = 0.7
"""Copy strengths are U(0, 1) ** STRENGTH_POWER: with plain U(0, 1) a third of the copies land
above SSIM 0.9 (most families lose SSIM slowly at first); this spreads them over 0.4-1.0."""
CANDIDATE_FACTOR = 5
"""Candidate random pairs scored per random pair kept, for the SSIM stratification."""


@dataclass(frozen=True)
class _CopyPlan:
    """What to generate (one entry per copy) and how copies form pairs."""

    source: np.ndarray  # input index each copy is made from
    family: np.ndarray  # index into the families list
    strength: np.ndarray
    partner: np.ndarray  # an input other than the source, for families that blend
    seed: np.ndarray  # each copy's own generator seed
    a: np.ndarray  # pair indices into (inputs + copies)
    b: np.ndarray
    label: np.ndarray


def _balanced(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """n draws from range(k), each value as often as possible (shuffled whole rounds)."""
    rounds = -(-n // k) if n else 0
    return np.concatenate([rng.permutation(k) for _ in range(rounds)] or [np.empty(0, np.int64)])[:n]


def _other(index: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """For each entry, a uniformly drawn value of range(k) different from it (k >= 2)."""
    return (index + rng.integers(1, k, size=len(index))) % k


def _plan_copies(n_inputs: int, n_copy: int, families: Sequence[str], rng: np.random.Generator) -> _CopyPlan:
    n_cc = round(COPY_COPY_SHARE * n_copy)
    n_cross = round(CROSS_SHARE * n_copy)
    n_sc = n_copy - n_cc - n_cross
    n_fam = len(families)
    # Copies 0..n_sc-1 pair with their sources; then n_cc consecutive copy pairs of one source.
    pair_source = _balanced(n_sc + n_cc, n_inputs, rng)
    fam1 = _balanced(n_sc + n_cc, n_fam, rng)
    fam2 = _other(fam1[n_sc:], n_fam, rng) if n_fam > 1 else fam1[n_sc:]
    source = np.concatenate([pair_source[:n_sc], np.repeat(pair_source[n_sc:], 2)])
    family = np.concatenate([fam1[:n_sc], np.stack([fam1[n_sc:], fam2], axis=1).ravel()])
    n_gen = len(source)
    copy_id = n_inputs + np.arange(n_gen)

    cc_first = copy_id[n_sc::2]
    crossed = rng.integers(0, max(n_sc, 1), size=n_cross)  # n_sc > 0 whenever n_cross > 0
    names = np.asarray(families, dtype=np.str_)
    a = np.concatenate([source[:n_sc], cc_first, _other(source[crossed], n_inputs, rng)])
    b = np.concatenate([copy_id[:n_sc], cc_first + 1, copy_id[crossed]])
    label = np.concatenate([
        names[family[:n_sc]],
        np.char.add(np.char.add(names[family[n_sc::2]], COPY_JOIN), names[family[n_sc + 1 :: 2]]),
        np.char.add(CROSS_PREFIX, names[family[crossed]]),
    ])
    return _CopyPlan(
        source=source,
        family=family,
        strength=rng.uniform(0.0, 1.0, size=n_gen) ** STRENGTH_POWER,
        partner=_other(source, n_inputs, rng),
        seed=rng.integers(0, 2**63 - 1, size=n_gen),
        a=a,
        b=b,
        label=label,
    )


def _make_copies(inputs: np.ndarray, plan: _CopyPlan, families: Sequence[str], progress: bool) -> np.ndarray:
    out = np.empty((len(plan.source), *inputs.shape[1:]), dtype=np.float32)
    for g in tqdm(range(len(out)), desc="near-copies", unit="image", disable=not progress, file=sys.stderr):
        family = FAMILIES[families[plan.family[g]]]
        out[g] = family(
            inputs[plan.source[g]],
            float(plan.strength[g]),
            np.random.default_rng(int(plan.seed[g])),
            partner=inputs[plan.partner[g]],
        )
    return out


def _pair_ssim(images: np.ndarray, a: np.ndarray, b: np.ndarray, device: str, progress: bool) -> np.ndarray:
    """Plain reference SSIM of (images[a], images[b]); each image is passed as one array object
    so that ssim_pairs computes its statistics once however many pairs it is in."""
    if not len(a):
        return np.empty(0)
    views = list(images)
    return ssim_pairs([views[i] for i in a], [views[j] for j in b], device=device, progress=progress)


def _candidate_pairs(n: int, n_wanted: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Up to n_wanted distinct ordered pairs (i, j), i != j, drawn uniformly without repeats."""
    total = n * (n - 1)
    # Sorted, pairs sharing a first image are neighbours: ssim_pairs' blocks then hold fewer
    # distinct images, whose statistics it computes once per block.
    k = np.sort(rng.choice(total, size=min(n_wanted, total), replace=False))
    i, r = np.divmod(k, n - 1)
    return i, r + (r >= i)


def _even_quotas(counts: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Split n over bins as evenly as their counts allow (water filling); a bin takes at most
    its count, and ties for the last few are broken at random. Sums to min(n, counts.sum())."""
    quotas = np.zeros_like(counts)
    remaining = n
    open_bins = counts > 0
    while remaining > 0 and open_bins.any():
        share = remaining // int(open_bins.sum())
        if share == 0:
            quotas[rng.choice(np.flatnonzero(open_bins), remaining, replace=False)] += 1
            break
        add = np.where(open_bins, np.minimum(counts - quotas, share), 0)
        quotas += add
        remaining -= int(add.sum())
        open_bins = quotas < counts
    return quotas


def _stratified_pairs(
    inputs: np.ndarray, n_pairs: int, n_bins: int, rng: np.random.Generator, device: str, progress: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n_pairs pairs of distinct inputs, as evenly spread over equal-width SSIM bins as the
    candidates allow; pairs repeat only when all ordered pairs of the inputs are too few."""
    if n_pairs == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
    ci, cj = _candidate_pairs(len(inputs), CANDIDATE_FACTOR * n_pairs, rng)
    ct = _pair_ssim(inputs, ci, cj, device, progress)
    lo, hi = float(ct.min()), float(ct.max())
    width = (hi - lo) / n_bins if hi > lo else 1.0
    bins = np.minimum(((ct - lo) / width).astype(np.int64), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    chosen: list[np.ndarray] = []
    left = n_pairs
    while left > 0:  # more than one round only when candidates are fewer than n_pairs
        quotas = _even_quotas(counts, left, rng)
        chosen += [rng.permutation(np.flatnonzero(bins == k))[:q] for k, q in enumerate(quotas) if q]
        left -= int(quotas.sum())
    pick = np.concatenate(chosen)
    return ci[pick], cj[pick], ct[pick]


def _check_inputs(images: np.ndarray) -> np.ndarray:
    inputs = np.ascontiguousarray(images, dtype=np.float32)
    if inputs.ndim != 3 or len(inputs) < 2:
        raise ValueError(f"images must be an (N, H, W) stack with N >= 2, got shape {inputs.shape}")
    if min(inputs.shape[1:]) < 7:
        raise ValueError(f"images must be at least 7 x 7 (the SSIM window), got {inputs.shape[1:]}")
    if not np.isfinite(inputs).all():
        raise ValueError("images contain NaN or inf")
    return inputs


def _check_options(n_pairs: int, families: Sequence[str], copy_fraction: float, n_bins: int) -> None:
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown families {unknown}: choose from {', '.join(FAMILIES)}")
    if not 0.0 <= copy_fraction <= 1.0:
        raise ValueError(f"copy_fraction must be in [0, 1], got {copy_fraction}")
    if copy_fraction > 0 and not families:
        raise ValueError("copy_fraction > 0 needs at least one family")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")


def build_pairs(
    images: np.ndarray,
    n_pairs: int,
    *,
    families: Sequence[str],
    rng: np.random.Generator,
    copy_fraction: float = 0.5,
    n_bins: int = 10,
    registered: bool = False,
    progress: bool = False,
    device: str = "cpu",
) -> PairSet:
    """``n_pairs`` training pairs of an (N, H, W) stack of clean images, with reference-SSIM
    targets; identical for identical inputs and rng state.

    About ``copy_fraction`` of the pairs involve a near-copy made by one of ``families`` at a
    strength drawn as U(0, 1) ** STRENGTH_POWER: mostly (source, copy), plus COPY_COPY_SHARE
    (copy, copy) of one source and CROSS_SHARE (input, copy of another input). The others
    are pairs of distinct inputs drawn CANDIDATE_FACTOR times over, scored, and kept as evenly
    over ``n_bins`` equal-width SSIM bins as the candidates allow. Targets are ``ssim_pairs`` values, or with
    ``registered`` the ``registered_ssim`` of each pair (slow: about 0.15 s per 128 px pair;
    the random pairs are still stratified by plain SSIM).
    """
    inputs = _check_inputs(images)
    _check_options(n_pairs, families, copy_fraction, n_bins)
    families = list(families)
    n_copy = round(copy_fraction * n_pairs)
    plan = _plan_copies(len(inputs), n_copy, families, rng)
    ra, rb, rt = _stratified_pairs(inputs, n_pairs - n_copy, n_bins, rng, device, progress)
    all_images = np.concatenate([inputs, _make_copies(inputs, plan, families, progress)])
    a = np.concatenate([plan.a, ra])
    b = np.concatenate([plan.b, rb])
    family = np.concatenate([plan.label, np.full(len(ra), RANDOM)])
    if registered:
        target = np.array([
            registered_ssim(all_images[i], all_images[j], device=device)
            for i, j in tqdm(zip(a, b), total=len(a), desc="registered ssim", unit="pair",
                             disable=not progress, file=sys.stderr)
        ])
    else:
        target = np.concatenate([_pair_ssim(all_images, plan.a, plan.b, device, progress), rt])
    return PairSet(images=all_images, a=a, b=b, target=target, family=family)


def split_by_image(
    n_images: int, val_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint, sorted train and validation indices covering range(n_images); validation gets
    round(val_fraction * n_images) images, at least one of each when 0 < val_fraction < 1."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    n_val = round(val_fraction * n_images)
    if val_fraction > 0 and n_images >= 2:
        n_val = min(max(n_val, 1), n_images - 1)
    order = rng.permutation(n_images)
    return np.sort(order[n_val:]), np.sort(order[:n_val])
