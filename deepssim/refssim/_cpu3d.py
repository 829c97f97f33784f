"""The CPU backend for volumes: the 2D kernels of ``_cpu`` with a third, depth, axis.

The 7 x 7 x 7 box sums are separable: each depth slice gets its 7 x 7 valid box sum (along
rows, then columns), and seven consecutive slice sums make the 3D sum. Per volume, once: the
z-score, local mean and local sample variance over the valid region (``ImageStats`` with a
depth axis). Per pair, only the cross term (box mean of ``za * zb``) is new; it is built a
ring of seven depth slices in per-thread scratch and consumed by the SSIM map sum in the same pass.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._cpu import _FASTMATH, _indices, _n_chunks, _scratch
from ._stats import COV_NORM_3D, K1, K2, WIN, ImageStats


@njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _slice_box(x, y, product, s, out, plane, row):  # pragma: no cover - jit
    """``out`` = 7 x 7 valid box sums of depth slice ``s`` of ``x * y``, or of ``x`` alone
    when ``product`` is false."""
    h, w = x.shape[1:]
    hv = h - WIN + 1
    wv = w - WIN + 1
    for r in range(h):
        if product:
            for c in range(w):
                row[c] = x[s, r, c] * y[s, r, c]
        else:
            for c in range(w):
                row[c] = x[s, r, c]
        for c in range(wv):
            a = 0.0
            for d in range(WIN):
                a += row[c + d]
            plane[r, c] = a
    for r in range(hv):
        for c in range(wv):
            a = 0.0
            for d in range(WIN):
                a += plane[r + d, c]
            out[r, c] = a


@njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _volume_stats(x, z, mu, var, ring1, ring2, plane, row):  # pragma: no cover - jit
    """Z-score one volume into ``z``; local mean / variance into ``mu`` / ``var``; its range."""
    n = x.size
    flat_x = x.ravel()
    flat_z = z.ravel()
    total = 0.0
    lo = flat_x[0]
    hi = flat_x[0]
    for p in range(n):
        v = flat_x[p]
        total += v
        lo = min(lo, v)
        hi = max(hi, v)
    mean = total / n
    sq = 0.0
    for p in range(n):
        d = flat_x[p] - mean
        sq += d * d
    std = np.sqrt(sq / n)
    # A constant volume z-scores to zeros rather than NaN.
    inv_std = 1.0 / std if std > 0.0 else 1.0
    for p in range(n):
        flat_z[p] = (flat_x[p] - mean) * inv_std
    hv, wv = mu.shape[1:]
    inv_vol = 1.0 / (WIN * WIN * WIN)
    for s in range(z.shape[0]):
        _slice_box(z, z, False, s, ring1[s % WIN], plane, row)
        _slice_box(z, z, True, s, ring2[s % WIN], plane, row)
        if s < WIN - 1:
            continue
        k = s - WIN + 1  # the ring now holds slices k .. s
        for r in range(hv):
            for c in range(wv):
                a1 = 0.0
                a2 = 0.0
                for d in range(WIN):
                    a1 += ring1[d, r, c]
                    a2 += ring2[d, r, c]
                m = a1 * inv_vol
                mu[k, r, c] = m
                var[k, r, c] = COV_NORM_3D * (a2 * inv_vol - m * m)
    return (hi - lo) * inv_std if std > 0.0 else 0.0


@njit(parallel=True, fastmath=_FASTMATH, cache=True, nogil=True)
def _stats_kernel(x, ring1, ring2, planes, rows, z, mu, var, drange):  # pragma: no cover - jit
    n = x.shape[0]
    n_chunks = ring1.shape[0]
    for c in prange(n_chunks):
        for k in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            drange[k] = _volume_stats(x[k], z[k], mu[k], var[k], ring1[c], ring2[c], planes[c], rows[c])


def _valid(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(n - WIN + 1 for n in shape)


def compute_stats(stack: np.ndarray) -> ImageStats:
    """Per-volume statistics of an (N, D, H, W) stack of checked (finite, >= 7^3) volumes."""
    x = np.ascontiguousarray(stack, dtype=np.float64)
    n, d, h, w = x.shape
    dv, hv, wv = _valid((d, h, w))
    z = np.empty_like(x)
    mu = np.empty((n, dv, hv, wv))
    var = np.empty((n, dv, hv, wv))
    drange = np.empty(n)
    scratch = _scratch(_n_chunks(n), (WIN, hv, wv), (WIN, hv, wv), (h, wv), (w,))
    _stats_kernel(x, *scratch, z, mu, var, drange)
    return ImageStats(z=z, mu=mu, var=var, drange=drange)


@njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _pair_mean(za, mua, vara, ra, zb, mub, varb, rb, ring, plane, row):  # pragma: no cover - jit
    """Mean of one pair's SSIM map (``ring``, ``plane``, ``row``: scratch).

    ``data_range`` as in the 2D kernel: the first volume's, or the second's if the first is
    constant; two constant volumes have a map of ones.
    """
    dv, hv, wv = mua.shape
    drange = ra if ra > 0.0 else rb
    if drange == 0.0:
        return 1.0
    c1 = (K1 * drange) ** 2
    c2 = (K2 * drange) ** 2
    inv_vol = 1.0 / (WIN * WIN * WIN)
    acc = 0.0
    # Cross term: the 7 x 7 box sum of each depth slice into a ring of the last 7 slices,
    # whose sum is the 7 x 7 x 7 box sum (the ring stays in cache; nothing is recomputed).
    for s in range(za.shape[0]):
        _slice_box(za, zb, True, s, ring[s % WIN], plane, row)
        if s < WIN - 1:
            continue
        k = s - WIN + 1
        for r in range(hv):
            for c in range(wv):
                t = 0.0
                for d in range(WIN):
                    t += ring[d, r, c]
                ux = mua[k, r, c]
                uy = mub[k, r, c]
                vxy = COV_NORM_3D * (t * inv_vol - ux * uy)
                num = (2.0 * ux * uy + c1) * (2.0 * vxy + c2)
                den = (ux * ux + uy * uy + c1) * (vara[k, r, c] + varb[k, r, c] + c2)
                acc += num / den
    return acc / (dv * hv * wv)


@njit(parallel=True, fastmath=_FASTMATH, cache=True, nogil=True)
def _pairs_kernel(za, mua, vara, ra, zb, mub, varb, rb, ia, ib, rings, planes, rows, out):  # pragma: no cover - jit
    n = ia.shape[0]
    n_chunks = rings.shape[0]
    for c in prange(n_chunks):
        for k in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            i = ia[k]
            j = ib[k]
            out[k] = _pair_mean(
                za[i], mua[i], vara[i], ra[i], zb[j], mub[j], varb[j], rb[j],
                rings[c], planes[c], rows[c],
            )


def indexed_pairs_cpu(a: ImageStats, b: ImageStats, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """SSIM of the pairs of volumes ``(a[ia[k]], b[ib[k]])`` from precomputed statistics."""
    out = np.empty(ia.shape[0], dtype=np.float64)
    if ia.shape[0] == 0:
        return out
    d, h, w = a.z.shape[1:]
    _, hv, wv = _valid((d, h, w))
    scratch = _scratch(_n_chunks(ia.shape[0]), (WIN, hv, wv), (h, wv), (w,))
    _pairs_kernel(
        a.z, a.mu, a.var, a.drange, b.z, b.mu, b.var, b.drange, _indices(ia), _indices(ib),
        *scratch, out,
    )
    return out


def matrix_cpu(a: ImageStats, b: ImageStats) -> np.ndarray:
    """SSIM of every pair ``(a[i], b[j])`` of volumes, float64 of shape (len(a), len(b)).

    A plain loop over the pairs: tiling pairs and depth bands for cache reuse, as the 2D
    matrix does, measured no faster at 64^3 (the ring of 7 slices already stays in cache).
    """
    ia, ib = np.meshgrid(np.arange(len(a)), np.arange(len(b)), indexing="ij")
    return indexed_pairs_cpu(a, b, ia.ravel(), ib.ravel()).reshape(len(a), len(b))
