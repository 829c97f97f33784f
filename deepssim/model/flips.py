"""Flips in scores: the four flips of an image, their embeddings, and the scores made of them.

The scoring rules (``scoring.py``) that undo flips instead of learning to ignore them are built
from these pieces. Flip search scores a pair as

    score(a, b) = max over f in FLIPS of cos(embed(a), embed(f(b)))

(``ssim-flip`` does the same with SSIM): the network learns its embedding in the images' own
orientation, without flip augmentation, and a flipped copy is scored in the orientation that
undoes the flip exactly. The four flips are the identity, axis 0 (up-down), axis 1
(left-right) and both (a 180 degree rotation).

Joint flips: flipping both images of a pair alike does not change their SSIM, so
``cos(embed(f(a)), embed(f(b)))`` for the four flips ``f`` are four estimates of one target,
from views the network sees differently; their mean is the cosine of the pair at relative
flip g:

    mean over f of cos(embed(f(a)), embed(f(g(b))))

A mean of cosines of unit vectors is one inner product of their concatenations scaled by 1/2,
so each real image becomes one vector of 4 x D (``joint``) and each synthetic image four
(``joint_views``: the concatenation for each g, the flips being their own inverses and
commuting, ``f(g(b))`` is flip ``f ^ g`` of b), and the search, the cache of per-flip
embeddings and ``best_flip_scores`` work on them unchanged.

Cross-fitted flips: the best of four noisy means is biased upwards (the winner's curse: for an
unrelated pair, whose four relative flips score about alike, the maximum picks whichever
estimate came out high). So the relative flip is chosen with half of the four joint views and
scored with the other half, and the other way round, averaged over the three ways of halving
the four (as double Q-learning does for the same bias). A copy's relative flip stands out in
either half, so it is scored as the best flip would; unrelated images lose the bias
(``cross_fitted``).
"""

from __future__ import annotations

import numpy as np
import torch

FLIPS: tuple[tuple[int, ...], ...] = ((), (-2,), (-1,), (-2, -1))
"""Dimensions flipped: identity, axis 0 (rows), axis 1 (columns), both."""


def flipped(x: torch.Tensor) -> torch.Tensor:
    """The four flips of a batch (B, ..., H, W), stacked flip-major: (4 * B, ..., H, W)."""
    return torch.cat([torch.flip(x, dims) if dims else x for dims in FLIPS])


def by_flip(emb: torch.Tensor, n: int) -> torch.Tensor:
    """Embeddings (4 * n, D) of ``flipped`` input as (n, 4, D)."""
    return emb.reshape(len(FLIPS), n, -1).transpose(0, 1)


_JOINT_ORDER = np.array([[f ^ g for f in range(len(FLIPS))] for g in range(len(FLIPS))])
"""``_JOINT_ORDER[g, f]``: the flip of b that meets flip f of a at relative flip g."""


def _f32(x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    return x if isinstance(x, torch.Tensor) else x.astype(np.float32)


def joint(emb: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Per-flip embeddings (N, 4, D) as unit vectors (N, 4 * D) whose inner product is the mean
    cosine over the four joint flips of a pair (arrays or tensors)."""
    n, f, d = emb.shape
    return _f32(emb.reshape(n, f * d) * 0.5)


def joint_views(emb: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Per-flip embeddings (N, 4, D) of synthetic images as (N, 4, 4 * D): for each relative
    flip g, the concatenation over f of the embeddings of flip ``f ^ g``, against ``joint`` of
    the real image (arrays or tensors)."""
    n, f, d = emb.shape
    order = torch.from_numpy(_JOINT_ORDER).to(emb.device) if isinstance(emb, torch.Tensor) else _JOINT_ORDER
    return _f32(emb[:, order].reshape(n, f, f * d) * 0.5)


_HALVES = (((0, 3), (1, 2)), ((0, 1), (2, 3)), ((0, 2), (1, 3)))
"""The three ways of halving the four joint flips."""


def cross_fitted(cos: torch.Tensor) -> torch.Tensor:
    """Cross-fitted scores (P,) from the cosines (P, G, 4) of each pair's G relative flips at
    each of the four joint flips: for each halving (A, B) of the joint flips, the relative flip
    of best mean over A scored by its mean over B and the other way round; the mean of the six."""
    total = torch.zeros(cos.shape[0], dtype=cos.dtype, device=cos.device)
    for halves in _HALVES:
        means = [cos[:, :, list(h)].mean(dim=2) for h in halves]
        for choose, score in ((means[0], means[1]), (means[1], means[0])):
            total += score.gather(1, choose.argmax(dim=1, keepdim=True)).squeeze(1)
    return total / (2 * len(_HALVES))


def best_flip_scores(
    a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, cross: bool = False
) -> np.ndarray | torch.Tensor:
    """Scores of pairs: embeddings ``a`` (P, D) against ``b`` (P, D), plain cosines, or
    against the flips' embeddings ``b`` (P, G, D), the best over the flips; with ``cross``
    (``joint`` vectors against ``joint_views``, D = 4 * d), the cross-fitted flip instead of
    the best (``cross_fitted``). Arrays or tensors, returned as given."""
    einsum = np.einsum if isinstance(a, np.ndarray) else torch.einsum
    if b.ndim == 2:
        # Tensors: the reduction of the training loss's cosines, so validation scores them alike.
        return einsum("pd,pd->p", a, b) if isinstance(a, np.ndarray) else (a * b).sum(dim=1)
    if not cross:
        per_flip = einsum("pd,pgd->pg", a, b)
        return per_flip.max(axis=1) if isinstance(per_flip, np.ndarray) else per_flip.amax(dim=1)
    p, g, dim = b.shape
    f = len(FLIPS)
    # Each joint vector holds the four flips' unit embeddings scaled by 1/2: a block's inner
    # product is a quarter of that joint flip's cosine.
    cos = 4.0 * einsum("pfd,pgfd->pgf", a.reshape(p, f, dim // f), b.reshape(p, g, f, dim // f))
    if isinstance(cos, np.ndarray):
        return cross_fitted(torch.from_numpy(cos)).numpy()
    return cross_fitted(cos)


def flip_each(x: torch.Tensor, codes: np.ndarray) -> torch.Tensor:
    """Each image of a batch (B, ..., H, W) flipped by its code, an index into ``FLIPS``. The
    codes are bit masks (1: rows, 2: columns), so flipping by ``c`` then ``d`` is ``c ^ d``."""
    out = x.clone()
    for code in range(1, len(FLIPS)):
        sel = torch.from_numpy(np.flatnonzero(codes == code)).to(x.device)
        if len(sel):
            out[sel] = torch.flip(x[sel], FLIPS[code])
    return out


def flip_image(image: np.ndarray, code: int) -> np.ndarray:
    """A 2D image flipped by ``code`` (an index into ``FLIPS``), C-contiguous."""
    return np.ascontiguousarray(np.flip(image, FLIPS[code]) if code else image)
