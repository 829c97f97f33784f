"""Verification: the reference SSIM of a candidate pair, undoing a structure-preserving change.

DeepSSIM finds candidates fast; verification re-scores the few best candidates of each
suspicious synthetic image with the reference metric itself. A copy may come back flipped,
rotated, shifted or re-contrasted, so the pair is compared under every change of a small grid
of the paper's perturbations: the training image is flipped (4 ways), rotated within
+-``max_angle`` and shifted by whole pixels within +-``max_shift``, and the synthetic image's
contrast curve is undone by gamma exponents 1/``max_gamma``..``max_gamma``. The search is by
coordinates: for each flip and angle the shift of best pixel correlation of the moved training
image, then flips x angles x gammas (each geometry at its shift), a finer grid around the best
point (each new angle at its own correlation shift), the shift again around the best one (by
SSIM), and a finer grid still (again at correlation shifts; a point that does not beat the best
so far changes nothing); the unmoved pair is a candidate too, so the verified SSIM is never
below the plain SSIM at ``size``. The best SSIM seen is the verified score. It estimates the
SSIM of the pair "as if aligned", the quantity DeepSSIM learns, with no model in the loop.
Because it is a maximum over ~135 candidates it reads a little high for unrelated images, and
hardly at all for copies.

Cost: 1 + 100 + 15 + 9 + 9 = 134 SSIM evaluations at ``size`` and the correlations of 28
moved images at 25 shifts (by FFT), against the N x M SSIMs that an exhaustive audit would
need. The case study's oracle (``deepssim.ldm.oracle``) is this same measure, run on a
shortlist of each sample's nearest training images by plain SSIM. The grid is an audit option
(``options.VerifyGrid``); the audit's use of this measure is ``rerank.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..model.preprocess import Preprocess
from ..refssim import ssim_pairs
from ..transforms.perturb import PerturbParams, apply_params
from .options import VerifyGrid  # the grid is an audit option; kept importable from here

Shift = tuple[int, int]

FLIPS = [(False, False), (True, False), (False, True), (True, True)]
"""(flip axis 0, flip axis 1) of the four flips; flip index = flip0 + 2 * flip1."""

BATCH_BYTES = 256 << 20
"""Bound on the moved copies of the training images that one engine call holds (float64)."""
_COPIES_PER_CANDIDATE = 80
"""Image-sized float64 arrays held per candidate at the peak, an estimate: the largest call's
moved copies (4 flips x 5 angles, as float32, float64 and padded) and shift views (21), and
the moves kept for the later calls (28 float32)."""


class _Moves:
    """The training images moved by a flip and an angle, each move computed once: the shift
    search and the SSIM search look at the same geometries."""

    def __init__(self, flipped: torch.Tensor) -> None:
        self.flipped = flipped  # (K, 4, H, W): each training image's four flips, in ``FLIPS`` order
        self.done: dict[tuple[int, int, float], torch.Tensor] = {}

    def __call__(self, params: Sequence[PerturbParams]) -> tuple[list[tuple[np.ndarray, np.ndarray]], torch.Tensor]:
        """For each training image k, the distinct geometries (flip0, flip1, angle) of
        ``params[k]`` and each candidate's index into them; and the moved images of all those
        geometries, stacked in that order."""
        geometries = [np.unique(np.stack([p.flip0, p.flip1, p.degrees]).T, axis=0, return_inverse=True)
                      for p in params]
        keys = [(k, int(f0) + 2 * int(f1), float(d)) for k, (u, _) in enumerate(geometries) for f0, f1, d in u]
        missing = [key for key in dict.fromkeys(keys) if key not in self.done]
        if missing:
            k, f, d = (np.array(v) for v in zip(*missing))
            none = np.zeros(len(missing), bool)
            moved = apply_params(self.flipped[torch.as_tensor(k), torch.as_tensor(f)],
                                 PerturbParams(none, none, d.astype(np.float64), np.ones(len(missing))))
            self.done.update(zip(missing, moved))
        return geometries, torch.stack([self.done[key] for key in keys])


def _best(moves: _Moves, synthetic: torch.Tensor, params: Sequence[PerturbParams],
          shifts: Sequence[Sequence[Shift]]) -> list[tuple[float, int]]:
    """For each training image k (``moves.flipped[k]``): the best SSIM over its candidates
    c = (``params[k][c]``, ``shifts[k][c]``) of (train flipped, rotated, then shifted by whole
    pixels) against (synthetic with the contrast exponent applied); its value and its index c.
    All of them in one call of the engine, which computes each distinct image's statistics once
    (the synthetic image's contrast curves are shared by every training image).

    The training image is moved forward, as the copy was, rather than the copy moved back: then
    each side has been resampled once, as in the clean pair, and the estimate of the clean
    SSIM is tighter (on 120 benchmark copies of SSIM 0.75-0.95: r 0.94 against 0.86).
    Gamma acts on the synthetic image min-max scaled to [0, 1]; SSIM z-scores each image, so
    the original intensity range need not be restored.
    """
    geometries, moved = moves(params)
    padded = _pad(moved.numpy().astype(np.float64), [s for sh in shifts for s in sh])
    lo, hi = synthetic.min(), synthetic.max()
    unit = (synthetic - lo) / (hi - lo).clamp(min=1e-12)
    gammas = np.unique(np.concatenate([p.gamma for p in params]))
    curved = list(unit.expand(len(gammas), -1, -1).pow(torch.as_tensor(gammas, dtype=unit.dtype).view(-1, 1, 1)).numpy())
    # Each distinct array is passed once (the same object): the engine computes its statistics once.
    views: dict[tuple[int, int, int], np.ndarray] = {}
    left, right, bounds = [], [], [0]
    first_geometry = 0
    for p, sh, (u, inverse) in zip(params, shifts, geometries, strict=True):
        for g, (dy, dx), j in zip(inverse.ravel(), sh, np.searchsorted(gammas, p.gamma), strict=True):
            key = (first_geometry + int(g), int(dy), int(dx))
            if key not in views:
                views[key] = np.ascontiguousarray(_view(padded[key[0]], synthetic.shape, dy, dx))
            left.append(views[key])
            right.append(curved[j])
        first_geometry += len(u)
        bounds.append(len(left))
    scores = ssim_pairs(left, right, device="cpu", progress=False)
    best = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        k = int(np.argmax(scores[start:stop]))
        best.append((float(scores[start + k]), k))
    return best


def _pad(images: np.ndarray, shifts: Sequence[Shift]) -> np.ndarray:
    """(N, H, W) images padded on each side by the largest of ``shifts``, edge values repeated."""
    pad = max(max(abs(dy), abs(dx)) for dy, dx in shifts)
    return np.pad(images, ((0, 0), (pad, pad), (pad, pad)), mode="edge") if pad else images


def _view(padded: np.ndarray, shape: tuple[int, ...], dy: int, dx: int) -> np.ndarray:
    """The (H, W) image inside ``padded`` (..., H', W') moved by (dy, dx) pixels (a view)."""
    pad = (padded.shape[-2] - shape[0]) // 2
    return padded[..., pad - dy : pad - dy + shape[0], pad - dx : pad - dx + shape[1]]


def _z(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return (x - x.mean()) / max(float(x.std()), 1e-12)


def _geometry_shifts(moves: _Moves, params: Sequence[PerturbParams], z_synthetic: torch.Tensor,
                     shifts: Sequence[Shift]) -> list[list[Shift]]:
    """For each training image k and each of ``params[k]``: the shift of ``shifts`` of highest
    pixel correlation between the training image moved by that flip and angle and the
    z-scored synthetic image. The shift is chosen after the move: the one that aligns the
    unrotated image is often wrong for a rotated copy. The first of equals wins (the identity).
    One FFT correlation for all."""
    geometries, moved = moves(params)
    flat = moved.reshape(len(moved), -1)
    z = (flat - flat.mean(1, keepdim=True)) / flat.std(1, unbiased=False, keepdim=True).clamp(min=1e-12)
    pad = max(max(abs(dy), abs(dx)) for dy, dx in shifts)
    padded = torch.nn.functional.pad(z.reshape(moved.shape).unsqueeze(1), (pad,) * 4, mode="replicate")[:, 0]
    # Correlation at every shift of the window, out[g, pad - dy, pad - dx] (see ``_view``), by
    # FFT: lags up to 2 * pad within the padded size do not wrap around.
    size = padded.shape[-2:]
    out = torch.fft.irfft2(torch.fft.rfft2(padded) * torch.fft.rfft2(z_synthetic.float(), s=size).conj(), s=size)
    rows = torch.as_tensor([pad - dy for dy, _ in shifts])
    cols = torch.as_tensor([pad - dx for _, dx in shifts])
    values = out[:, rows, cols]
    # The first of the (float32) equals: a tie within rounding goes to the earlier shift.
    tie = 1e-5 * z_synthetic.numel()
    best = (values >= values.max(dim=1, keepdim=True).values - tie).to(torch.uint8).argmax(dim=1).numpy()
    chosen, start = [], 0
    for u, which in geometries:
        chosen.append([tuple(shifts[best[start + g]]) for g in which.ravel()])
        start += len(u)
    return chosen


def verified_ssim(train: np.ndarray, synthetic: np.ndarray, grid: VerifyGrid = VerifyGrid()) -> float:
    """The best reference SSIM of ``train`` against ``synthetic`` over the changes of the grid.

    Both images are first resized to ``grid.size`` squared (stretch, bilinear).
    """
    return float(verify_candidates([train], synthetic, grid)[0])


def verify_candidates(
    trains: Sequence[np.ndarray], synthetic: np.ndarray, grid: VerifyGrid = VerifyGrid()
) -> np.ndarray:
    """``verified_ssim`` of each training image against one synthetic image, float64 (K,).

    The same values as one call per pair, in three calls of the engine for all of them (by
    chunks of candidates, so that the moved copies held at once stay within ``BATCH_BYTES``).
    """
    if not len(trains):
        return np.empty(0)
    chunk = max(1, BATCH_BYTES // (_COPIES_PER_CANDIDATE * 8 * (grid.size + 2 * grid.max_shift) ** 2))
    if len(trains) > chunk:
        return np.concatenate([verify_candidates(trains[i : i + chunk], synthetic, grid)
                               for i in range(0, len(trains), chunk)])
    prep = Preprocess(size=grid.size)
    a = torch.stack([torch.from_numpy(np.array(prep.resize(t), dtype=np.float32)) for t in trains])
    b = torch.from_numpy(np.array(prep.resize(synthetic), dtype=np.float32))
    n = len(a)
    # By coordinates. Each geometry's (flip x angle) whole-pixel shift is the one of best pixel
    # correlation of the moved training image (a dot product per shift: the shift that aligns
    # the unrotated image is often wrong for a rotated copy); flips x angles x gammas are
    # searched at their geometry's shift, with the unmoved pair; then a finer grid around the
    # best point, the shift again around the best one (by SSIM), and a finer grid still (at
    # correlation shifts again: only a better point replaces the best).
    # 101 + 15 + 9 + 9 SSIMs per training image in four calls of the engine.
    coarse = grid.coarse()
    f0, f1 = np.tile(np.array(FLIPS).T, n)
    flipped = apply_params(a.repeat_interleave(4, dim=0), PerturbParams(f0, f1, np.zeros(4 * n), np.ones(4 * n)))
    flipped = flipped.reshape(n, 4, *b.shape)
    zs = torch.from_numpy(_z(b.numpy()))
    identity = PerturbParams(np.zeros(1, bool), np.zeros(1, bool), np.zeros(1), np.ones(1))
    first = _concat(identity, coarse)
    moves = _Moves(flipped)
    first_shifts = [[(0, 0)] + sh for sh in _geometry_shifts(moves, [coarse] * n, zs, grid.shifts())]
    found = _best(moves, b, [first] * n, first_shifts)
    score = [s for s, _ in found]
    best = [first[k] for _, k in found]
    shift = [first_shifts[i][k] for i, (_, k) in enumerate(found)]

    def improve(params: list[PerturbParams], shifts: list[list[Shift]]) -> None:
        for i, (value, j) in enumerate(_best(moves, b, params, shifts)):
            if value > score[i]:
                score[i], best[i], shift[i] = value, params[i][j], shifts[i][j]

    for level in (1, None, 2):
        if level is None:  # the shift again, by SSIM, around the best one
            around = [grid.shifts(around=sh) for sh in shift]
            improve([_concat(*[p] * len(ar)) for p, ar in zip(best, around)], around)
        else:
            fine = [grid.fine(p, level) for p in best]
            improve(fine, _geometry_shifts(moves, fine, zs, grid.shifts()))
    return np.array(score, dtype=np.float64)


def _concat(*parts: PerturbParams) -> PerturbParams:
    return PerturbParams(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("flip0", "flip1", "degrees", "gamma")))


def verify_pairs(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]], grid: VerifyGrid = VerifyGrid(), *, progress: bool = False
) -> np.ndarray:
    """``verified_ssim`` of each ``(train, synthetic)`` pair, float64 (P,). Pairs that share
    their synthetic array (the same object) are verified together by ``verify_candidates``."""
    out = np.empty(len(pairs), dtype=np.float64)
    groups: dict[int, list[int]] = {}
    for k, (_, b) in enumerate(pairs):
        groups.setdefault(id(b), []).append(k)
    with tqdm(total=len(pairs), desc="verify", unit="pair", file=sys.stderr, disable=not progress) as bar:
        for members in groups.values():
            out[members] = verify_candidates([pairs[k][0] for k in members], pairs[members[0]][1], grid)
            bar.update(len(members))
    return out
