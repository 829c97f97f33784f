"""The verified SSIM's lean, measured on near-copies of the training set itself and taken off.

Verification (``verify.py``) keeps the best SSIM over hundreds of flips, angles, shifts and
contrast curves. That maximum also undoes part of what a generator changed (a contrast drift,
blur or noise smoothed by the rotation, a warp) and picks the luckiest alignment, so it reads
above the clean-frame SSIM for near-copies (by about +0.03 at 0.80-0.85 on brain MRI, more
below), and by an amount that depends on the data. A copy is decided by the clean-frame SSIM, so
the audit measures the lean where it runs, without labels: it makes ``PAIRS`` near-copies of its
own training images (the near-copy families of ``transforms.nearcopy`` at random strengths), moves
them by the paper's perturbation, verifies each against its source, and fits the clean SSIM as a
monotone function of the verified one (pool-adjacent-violators, then linear between the pooled
blocks' centres, so the map is strictly increasing and keeps the ranking of candidates). The
audit's verified SSIM is that map applied: an estimate of the reference SSIM, not an upper
bound of it. The map is kept in the cache, keyed by the training images' content and the grid.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..model.preprocess import Preprocess
from ..refssim import ssim_pairs
from ..storage import atomic_write_bytes, record_mac
from ..transforms.nearcopy import BENCHMARK_FAMILIES, FAMILIES
from ..transforms.perturb import PerturbConfig, apply_params, draw_params
from .options import VerifyGrid
from .verify import verify_candidates

log = logging.getLogger(__name__)

VERSION = 1
"""Version of the way the map is fitted: a map of another version is fitted again."""
PAIRS = 600
"""Near-copies made to fit the map (about 10-20 s on a 2-core CPU at 128 x 128)..."""
PAIRS_PER_IMAGE = 20
"""...and at most this many per training image (a few images teach no more when reused)."""
STRENGTH = (0.0, 0.6)
"""Strength of each near-copy, uniform: most land in 0.6-1.0, where the decision lies."""
FAMILIES_USED = BENCHMARK_FAMILIES
"""The near-copy families the map is fitted on."""
NUISANCE = PerturbConfig(p_flip0=0.5, p_flip1=0.5, p_rotate=0.5, max_degrees=10.0, p_gamma=0.5,
                         gamma_range=(0.5, 1.5))
"""The paper's perturbation (ranges), each change with probability one half."""
SEED = 0


@dataclass(frozen=True)
class VerifyCorrection:
    """A strictly increasing map from verified SSIM to an estimate of the clean-frame SSIM:
    linear between the knots ``(x[i], y[i])``, with slope 1 beyond the first knot, and up to
    (1, 1) beyond the last (a perfect match stays one)."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    pairs: int
    families: tuple[str, ...]

    def __post_init__(self) -> None:
        x, y = np.asarray(self.x, float), np.asarray(self.y, float)
        if (len(x) < 1 or x.shape != y.shape or not np.all(np.isfinite(x)) or not np.all(np.isfinite(y))
                or np.any(np.diff(x) <= 0) or np.any(np.diff(y) <= 0) or x[-1] > 1 or y[-1] > 1):
            raise ValueError("a verification correction needs increasing finite knots at most 1")

    def __call__(self, verified: np.ndarray) -> np.ndarray:
        v = np.asarray(verified, dtype=np.float64)
        x, y = np.asarray(self.x), np.asarray(self.y)
        if x[-1] < 1.0:
            x, y = np.append(x, 1.0), np.append(y, 1.0)
        out = np.interp(v, x, y)
        below = v < x[0]
        out[below] = v[below] - (x[0] - y[0])
        above = v > x[-1]
        out[above] = v[above] - (x[-1] - y[-1])
        return np.where(np.isfinite(v), out, v)

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VerifyCorrection:
        return cls(tuple(float(v) for v in data["x"]), tuple(float(v) for v in data["y"]), int(data["pairs"]),
                   tuple(str(f) for f in data["families"]))

    def summary(self) -> dict[str, Any]:
        """The summary's entry: what was fitted, and the map at a few verified values."""
        at = np.array([0.6, 0.7, 0.8, 0.85, 0.9, 0.95])
        return {"pairs": self.pairs, "families": list(self.families),
                "at": {f"{v:.2f}": round(float(e), 4) for v, e in zip(at, self(at))}}


def monotone_knots(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The least-squares non-decreasing fit of ``y`` on ``x`` (pool adjacent violators), as
    the centres (mean x, mean y) of its pooled blocks: x and y both strictly increase."""
    order = np.argsort(x, kind="stable")
    xs, ys = np.asarray(x, float)[order], np.asarray(y, float)[order]
    blocks: list[list[float]] = []  # [sum x, sum y, count]
    for a, b in zip(xs, ys):
        blocks.append([a, b, 1.0])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] >= blocks[-1][1] / blocks[-1][2]:
            sx, sy, n = blocks.pop()
            blocks[-1][0] += sx
            blocks[-1][1] += sy
            blocks[-1][2] += n
    cx = np.array([b[0] / b[2] for b in blocks])
    cy = np.array([b[1] / b[2] for b in blocks])
    keep = np.concatenate([[True], np.diff(cx) > 0])  # equal x centres cannot happen but for ties
    return cx[keep], cy[keep]


def near_copy_pairs(images: Sequence[np.ndarray], grid: VerifyGrid, pairs: int = PAIRS, seed: int = SEED,
                    progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(verified SSIM, clean SSIM) of ``pairs`` near-copies of ``images`` (each resized to the
    grid's size): a random image, family and strength, then the perturbation."""
    rng = np.random.default_rng(seed)
    prep = Preprocess(size=grid.size)
    sized: dict[int, np.ndarray] = {}

    def image(i: int) -> np.ndarray:
        if i not in sized:
            sized[i] = np.asarray(prep.resize(images[i]), dtype=np.float32)
        return sized[i]

    verified, clean = np.empty(pairs), np.empty(pairs)
    for k in tqdm(range(pairs), desc="verification lean", unit="pair", file=sys.stderr, disable=not progress):
        source = image(int(rng.integers(len(images))))
        partner = image(int(rng.integers(len(images))))
        family = FAMILIES[FAMILIES_USED[int(rng.integers(len(FAMILIES_USED)))]]
        copy = family(source, float(rng.uniform(*STRENGTH)), rng, partner=partner)
        moved = apply_params(torch.from_numpy(copy)[None], draw_params(NUISANCE, 1, rng))[0].numpy()
        clean[k] = ssim_pairs([source.astype(np.float64)], [copy.astype(np.float64)], device="cpu",
                              progress=False)[0]
        verified[k] = verify_candidates([source], moved, grid)[0]
    return verified, clean


def fit_correction(images: Sequence[np.ndarray], grid: VerifyGrid = VerifyGrid(), pairs: int = PAIRS,
                   seed: int = SEED, progress: bool = False) -> VerifyCorrection:
    """The map from verified to clean-frame SSIM, fitted on near-copies of ``images``."""
    if not len(images):
        raise ValueError("fitting the verification correction needs at least one training image")
    verified, clean = near_copy_pairs(images, grid, pairs, seed, progress)
    x, y = monotone_knots(verified, clean)
    top = (x < 1.0) & (y < 1.0)  # the map ends at (1, 1)
    return VerifyCorrection(tuple(map(float, x[top])), tuple(map(float, y[top])), pairs, tuple(FAMILIES_USED))


def correction_key(train_keys: Sequence[str], grid: VerifyGrid, pairs: int) -> str:
    """The cache key of a map: the training images' content, the grid, the pairs and ``VERSION``."""
    text = json.dumps({"train": sorted(train_keys), "grid": asdict(grid), "version": VERSION,
                       "pairs": pairs, "families": list(FAMILIES_USED)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def obtain_correction(load: Callable[[int], np.ndarray], n_images: int, train_keys: Sequence[str],
                      grid: VerifyGrid, cache_root: Path | None, secret: bytes | None,
                      progress: bool = False) -> tuple[VerifyCorrection, bool]:
    """The training set's map from the cache (signed with ``secret``), else fitted (and kept
    there); and whether it came from the cache. ``load(i)`` reads training image i."""
    pairs = min(PAIRS, PAIRS_PER_IMAGE * n_images)
    key = correction_key(train_keys, grid, pairs)
    path = None if cache_root is None else Path(cache_root) / "corrections" / f"{key[:32]}.json"
    if path is not None and secret is not None and path.is_file():
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if record.get("key") == key and hmac.compare_digest(str(record.get("mac", "")), record_mac(secret, record)):
                return VerifyCorrection.from_dict(record["map"]), True
            log.warning("%s: not signed by this cache key or for another training set; fitted again", path)
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("%s: unreadable (%s); fitted again", path, err)
    rng = np.random.default_rng(SEED)
    chosen = sorted(int(i) for i in rng.choice(n_images, size=min(pairs, n_images), replace=False))
    correction = fit_correction(_LazyImages(load, chosen), grid, pairs=pairs, progress=progress)
    if path is not None and secret is not None:
        body = {"key": key, "map": correction.to_dict()}
        atomic_write_bytes(path, json.dumps(body | {"mac": record_mac(secret, body)}, indent=1).encode())
    return correction, False


class _LazyImages(Sequence[np.ndarray]):
    """Training images read when first used, ``chosen`` of them (a sequence for ``fit``)."""

    def __init__(self, load: Callable[[int], np.ndarray], chosen: list[int]) -> None:
        self._load, self._chosen = load, chosen

    def __len__(self) -> int:
        return len(self._chosen)

    def __getitem__(self, i):  # type: ignore[no-untyped-def, override]
        return self._load(self._chosen[i])
