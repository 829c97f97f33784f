"""Flip search: a score that is the best cosine over the four flips of the second image.

A model trained with ``flip_search`` (``ModelConfig.flip_search``) learns its embedding in the
images' own orientation, without flip augmentation, and a pair is scored as

    score(a, b) = max over f in FLIPS of cos(embed(a), embed(f(b)))

(``ssim-flip`` does the same with SSIM). The network then spends none of its capacity on flip
invariance, and a flipped copy is scored in the orientation that undoes the flip exactly. The
four flips are the identity, axis 0 (up-down), axis 1 (left-right) and both (a 180 degree
rotation).
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


def best_flip_scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Scores of pairs: embeddings ``a`` (P, D) against ``b`` (P, D), plain cosines, or
    against the flips' embeddings ``b`` (P, 4, D), the best over the flips."""
    if b.ndim == 2:
        return np.einsum("pd,pd->p", a, b)
    return np.einsum("pd,pfd->pf", a, b).max(axis=1)


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
