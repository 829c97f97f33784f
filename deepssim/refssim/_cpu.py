"""The CPU backend: fused, multi-threaded numba kernels.

For each pair only the cross term (the 7 x 7 box mean of ``za * zb``) is new; the rest of the
SSIM map is built from per-image statistics (see ``_stats``). A kernel computes the cross term
with separable 7-tap sums in per-thread scratch, then evaluates and sums the SSIM map in the
same pass, so nothing of size pairs x pixels is ever stored.

For all-pairs matrices the kernel works on tiles of TILE x TILE pairs and on bands of rows:
the band of each of the 2 x TILE images stays in the core's cache while it is used TILE times,
instead of every pair streaming both images from memory (what limits large images).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numba
import numpy as np
from numba import njit, prange

from ._stats import COV_NORM, K1, K2, WIN, ImageStats

# fastmath lets LLVM vectorise the 7-tap sums and the map average (re-association only:
# the error stays at the 1e-15 level, far inside the 1e-6 contract; inputs are finite).
_FASTMATH = {"reassoc", "contract", "arcp", "nsz", "nnan", "ninf"}


@njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _image_stats(x, z, mu, var, s1, s2, sq_row):  # pragma: no cover - jit
    """Z-score one image into ``z``; local mean / variance into ``mu`` / ``var``; its range."""
    h, w = x.shape
    hv = h - WIN + 1
    wv = w - WIN + 1
    flat_x = x.ravel()
    flat_z = z.ravel()
    total = 0.0
    lo = flat_x[0]
    hi = flat_x[0]
    for p in range(h * w):
        v = flat_x[p]
        total += v
        lo = min(lo, v)
        hi = max(hi, v)
    mean = total / (h * w)
    sq = 0.0
    for p in range(h * w):
        d = flat_x[p] - mean
        sq += d * d
    std = np.sqrt(sq / (h * w))
    # A constant image z-scores to zeros rather than NaN.
    inv_std = 1.0 / std if std > 0.0 else 1.0
    for p in range(h * w):
        flat_z[p] = (flat_x[p] - mean) * inv_std
    # Separable 7 x 7 sums of z and z**2: along rows into s1 / s2, then down the columns.
    for r in range(h):
        for c in range(w):
            sq_row[c] = z[r, c] * z[r, c]
        for c in range(wv):
            a1 = 0.0
            a2 = 0.0
            for d in range(WIN):
                a1 += z[r, c + d]
                a2 += sq_row[c + d]
            s1[r, c] = a1
            s2[r, c] = a2
    inv_area = 1.0 / (WIN * WIN)
    for r in range(hv):
        for c in range(wv):
            a1 = 0.0
            a2 = 0.0
            for d in range(WIN):
                a1 += s1[r + d, c]
                a2 += s2[r + d, c]
            m = a1 * inv_area
            mu[r, c] = m
            var[r, c] = COV_NORM * (a2 * inv_area - m * m)
    return (hi - lo) * inv_std if std > 0.0 else 0.0


def _scratch(n_chunks: int, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    """One scratch array per shape with a leading chunk axis, allocated before the parallel
    region: large allocations inside it are freed by several threads at once, and the page
    unmapping that follows is slower than the kernels themselves (seen: 3x on 224 px)."""
    return [np.empty((n_chunks, *shape)) for shape in shapes]


def _n_chunks(n_items: int) -> int:
    """Work is split into one contiguous chunk per thread (the items cost the same)."""
    return max(1, min(n_items, numba.get_num_threads()))


@njit(parallel=True, fastmath=_FASTMATH, cache=True, nogil=True)
def _stats_kernel(x, s1, s2, rows, z, mu, var, drange):  # pragma: no cover - jit
    n = x.shape[0]
    n_chunks = s1.shape[0]
    for c in prange(n_chunks):
        for k in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            drange[k] = _image_stats(x[k], z[k], mu[k], var[k], s1[c], s2[c], rows[c])


def compute_stats(stack: np.ndarray) -> ImageStats:
    """Per-image statistics of an (N, H, W) stack of checked (finite, >= 7 x 7) images."""
    x = np.ascontiguousarray(stack, dtype=np.float64)
    n, h, w = x.shape
    hv, wv = h - WIN + 1, w - WIN + 1
    z = np.empty_like(x)
    mu = np.empty((n, hv, wv))
    var = np.empty((n, hv, wv))
    drange = np.empty(n)
    s1, s2, rows = _scratch(_n_chunks(n), (h, wv), (h, wv), (w,))
    _stats_kernel(x, s1, s2, rows, z, mu, var, drange)
    return ImageStats(z=z, mu=mu, var=var, drange=drange)


@njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _pair_sum(za, mua, vara, ra, zb, mub, varb, rb, y0, y1, hsum, row):  # pragma: no cover - jit
    """Sum of one pair's SSIM map over valid rows ``y0:y1`` (``hsum``, ``row``: scratch).

    ``data_range`` is the first image's range, or the second's if the first is constant; two
    constant images have identical (empty) structure and a map of ones.
    """
    w = za.shape[1]
    wv = w - WIN + 1
    drange = ra if ra > 0.0 else rb
    if drange == 0.0:
        return float((y1 - y0) * wv)
    c1 = (K1 * drange) ** 2
    c2 = (K2 * drange) ** 2
    # Cross term: 7-tap sums of za * zb along the rows the band needs, then down the columns.
    for r in range(y0, y1 + WIN - 1):
        for x in range(w):
            row[x] = za[r, x] * zb[r, x]
        for x in range(wv):
            s = 0.0
            for d in range(WIN):
                s += row[x + d]
            hsum[r - y0, x] = s
    inv_area = 1.0 / (WIN * WIN)
    acc = 0.0
    for y in range(y0, y1):
        for x in range(wv):
            s = 0.0
            for d in range(WIN):
                s += hsum[y - y0 + d, x]
            ux = mua[y, x]
            uy = mub[y, x]
            vxy = COV_NORM * (s * inv_area - ux * uy)
            num = (2.0 * ux * uy + c1) * (2.0 * vxy + c2)
            den = (ux * ux + uy * uy + c1) * (vara[y, x] + varb[y, x] + c2)
            acc += num / den
    return acc


@njit(parallel=True, fastmath=_FASTMATH, cache=True, nogil=True)
def _matrix_kernel(za, mua, vara, ra, zb, mub, varb, rb, tile, band, hsums, rows, accs, out):  # pragma: no cover - jit
    na, h, w = za.shape
    nb = zb.shape[0]
    hv = h - WIN + 1
    wv = w - WIN + 1
    n_ti = (na + tile - 1) // tile
    n_tj = (nb + tile - 1) // tile
    n_tiles = n_ti * n_tj
    n_chunks = hsums.shape[0]
    for c in prange(n_chunks):
        acc = accs[c]
        for t in range(c * n_tiles // n_chunks, (c + 1) * n_tiles // n_chunks):
            i0 = (t // n_tj) * tile
            j0 = (t % n_tj) * tile
            i1 = min(i0 + tile, na)
            j1 = min(j0 + tile, nb)
            acc[:, :] = 0.0
            for y0 in range(0, hv, band):
                y1 = min(y0 + band, hv)
                for i in range(i0, i1):
                    for j in range(j0, j1):
                        acc[i - i0, j - j0] += _pair_sum(
                            za[i], mua[i], vara[i], ra[i], zb[j], mub[j], varb[j], rb[j],
                            y0, y1, hsums[c], rows[c],
                        )
            for i in range(i0, i1):
                for j in range(j0, j1):
                    out[i, j] = acc[i - i0, j - j0] / (hv * wv)


@njit(parallel=True, fastmath=_FASTMATH, cache=True, nogil=True)
def _indexed_pairs_kernel(za, mua, vara, ra, zb, mub, varb, rb, ia, ib, hsums, rows, out):  # pragma: no cover - jit
    n = ia.shape[0]
    hv, wv = mua.shape[1:]
    n_chunks = hsums.shape[0]
    for c in prange(n_chunks):
        for k in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            i = ia[k]
            j = ib[k]
            total = _pair_sum(
                za[i], mua[i], vara[i], ra[i], zb[j], mub[j], varb[j], rb[j], 0, hv,
                hsums[c], rows[c],
            )
            out[k] = total / (hv * wv)


@njit(parallel=True, fastmath=_FASTMATH, cache=True, nogil=True)
def _raw_pairs_kernel(xa, xb, ia, ib, zs, mus, vars_, s1, s2, rows, out):  # pragma: no cover - jit
    n = ia.shape[0]
    hv, wv = mus.shape[2:]
    n_chunks = zs.shape[0]
    for c in prange(n_chunks):
        # Both images' statistics live in this chunk's scratch, in cache, and are not kept.
        za, zb = zs[c, 0], zs[c, 1]
        mua, mub = mus[c, 0], mus[c, 1]
        vara, varb = vars_[c, 0], vars_[c, 1]
        for k in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            ra = _image_stats(xa[ia[k]], za, mua, vara, s1[c], s2[c], rows[c])
            rb = _image_stats(xb[ib[k]], zb, mub, varb, s1[c], s2[c], rows[c])
            total = _pair_sum(za, mua, vara, ra, zb, mub, varb, rb, 0, hv, s1[c], rows[c])
            out[k] = total / (hv * wv)


TILE = 4
"""Pairs per tile side in ``matrix_cpu``."""
BAND_BYTES = 3 << 19
"""Cache budget for the bands of the 2 x TILE images of a tile (L2 is 1-2 MiB per core;
tuned on a 2 MiB-L2 Xeon: 1.5 MiB beat 0.5 and 1 MiB by 3-10%)."""


def _indices(ia: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(ia, dtype=np.int64)


def matrix_cpu(a: ImageStats, b: ImageStats) -> np.ndarray:
    """SSIM of every pair ``(a[i], b[j])`` on the CPU, float64 of shape (len(a), len(b))."""
    h, w = a.z.shape[1:]
    wv = w - WIN + 1
    per_row = 8 * (w + 2 * wv)  # one row of z, mu and var
    band = int(min(h - WIN + 1, max(8, BAND_BYTES // (2 * TILE * per_row) - (WIN - 1))))
    n_tiles = -(-len(a) // TILE) * -(-len(b) // TILE)
    hsums, rows, accs = _scratch(_n_chunks(n_tiles), (band + WIN - 1, wv), (w,), (TILE, TILE))
    out = np.empty((len(a), len(b)), dtype=np.float64)
    _matrix_kernel(
        a.z, a.mu, a.var, a.drange, b.z, b.mu, b.var, b.drange, TILE, band, hsums, rows, accs, out
    )
    return out


def indexed_pairs_cpu(a: ImageStats, b: ImageStats, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """SSIM of the pairs ``(a[ia[k]], b[ib[k]])`` from precomputed statistics."""
    out = np.empty(ia.shape[0], dtype=np.float64)
    if ia.shape[0] == 0:
        return out
    h, w = a.z.shape[1:]
    hsums, rows = _scratch(_n_chunks(ia.shape[0]), (h, w - WIN + 1), (w,))
    _indexed_pairs_kernel(
        a.z, a.mu, a.var, a.drange, b.z, b.mu, b.var, b.drange, _indices(ia), _indices(ib),
        hsums, rows, out,
    )
    return out


def raw_pairs_cpu(xa: np.ndarray, xb: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """SSIM of ``(xa[ia[k]], xb[ib[k]])`` for (N, H, W) stacks of checked images.

    For pairs whose images are rarely reused: each pair's statistics are computed and consumed
    in per-thread scratch that stays in cache, several times faster than materialising them.
    """
    xa = np.ascontiguousarray(xa, dtype=np.float64)
    xb = np.ascontiguousarray(xb, dtype=np.float64)
    out = np.empty(ia.shape[0], dtype=np.float64)
    if ia.shape[0] == 0:
        return out
    h, w = xa.shape[1:]
    hv, wv = h - WIN + 1, w - WIN + 1
    scratch = _scratch(
        _n_chunks(ia.shape[0]), (2, h, w), (2, hv, wv), (2, hv, wv), (h, wv), (h, wv), (w,)
    )
    _raw_pairs_kernel(xa, xb, _indices(ia), _indices(ib), *scratch, out)
    return out


@contextmanager
def cpu_threads(num_threads: int | None) -> Iterator[None]:
    """Run the kernels with ``num_threads`` threads (None: all cores), then restore."""
    previous = numba.get_num_threads()
    if num_threads is not None:
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        numba.set_num_threads(min(num_threads, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        numba.set_num_threads(previous)
