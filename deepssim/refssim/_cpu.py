"""The CPU backend: one fused, multi-threaded numba kernel for many pairs.

For each pair only the cross term (the 7 x 7 box mean of ``za * zb``) is new; the rest of the
SSIM map is built from per-image statistics (see ``_stats``). The kernel computes the cross
term with separable 7-tap sums in a per-thread buffer that stays in cache, then evaluates and
averages the SSIM map in the same pass, so nothing of size pairs x pixels is ever stored.
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


@njit(parallel=True, fastmath=_FASTMATH, cache=True, nogil=True)
def _stats_kernel(x, n_chunks, z, mu, var, drange):  # pragma: no cover - jit
    n, h, w = x.shape
    wv = w - WIN + 1
    for chunk in prange(n_chunks):
        # Buffers once per chunk: fresh large allocations cost page faults on every image.
        s1 = np.empty((h, wv))
        s2 = np.empty((h, wv))
        sq_row = np.empty(w)
        for k in range(chunk * n // n_chunks, (chunk + 1) * n // n_chunks):
            drange[k] = _image_stats(x[k], z[k], mu[k], var[k], s1, s2, sq_row)


def compute_stats(stack: np.ndarray) -> ImageStats:
    """Per-image statistics of an (N, H, W) stack of checked (finite, >= 7 x 7) images."""
    x = np.ascontiguousarray(stack, dtype=np.float64)
    n, h, w = x.shape
    hv, wv = h - WIN + 1, w - WIN + 1
    z = np.empty_like(x)
    mu = np.empty((n, hv, wv))
    var = np.empty((n, hv, wv))
    drange = np.empty(n)
    _stats_kernel(x, min(n, numba.get_num_threads() * 8), z, mu, var, drange)
    return ImageStats(z=z, mu=mu, var=var, drange=drange)


@njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _pair_value(za, mua, vara, ra, zb, mub, varb, rb, hsum, row):  # pragma: no cover - jit
    """Mean SSIM map of one pair from its per-image statistics (``hsum``, ``row``: scratch)."""
    h, w = za.shape
    hv = h - WIN + 1
    wv = w - WIN + 1
    drange = ra if ra > 0.0 else rb
    if drange == 0.0:
        # Both images constant: identical (empty) structure, defined as 1.
        return 1.0
    c1 = (K1 * drange) ** 2
    c2 = (K2 * drange) ** 2
    # Cross term: 7-tap sums of za * zb along rows, then down the columns in the map loop.
    for r in range(h):
        for x in range(w):
            row[x] = za[r, x] * zb[r, x]
        for x in range(wv):
            s = 0.0
            for d in range(WIN):
                s += row[x + d]
            hsum[r, x] = s
    inv_area = 1.0 / (WIN * WIN)
    acc = 0.0
    for y in range(hv):
        for x in range(wv):
            s = 0.0
            for d in range(WIN):
                s += hsum[y + d, x]
            ux = mua[y, x]
            uy = mub[y, x]
            vxy = COV_NORM * (s * inv_area - ux * uy)
            num = (2.0 * ux * uy + c1) * (2.0 * vxy + c2)
            den = (ux * ux + uy * uy + c1) * (vara[y, x] + varb[y, x] + c2)
            acc += num / den
    return acc / (hv * wv)


@njit(parallel=True, fastmath=_FASTMATH, cache=True, nogil=True)
def _pairs_kernel(za, mua, vara, ra, zb, mub, varb, rb, ia, ib, n_chunks, out):  # pragma: no cover - jit
    n = ia.shape[0]
    h, w = za.shape[1:]
    for c in prange(n_chunks):
        hsum = np.empty((h, w - WIN + 1))
        row = np.empty(w)
        for k in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            i = ia[k]
            j = ib[k]
            out[k] = _pair_value(
                za[i], mua[i], vara[i], ra[i], zb[j], mub[j], varb[j], rb[j], hsum, row
            )


@njit(parallel=True, fastmath=_FASTMATH, cache=True, nogil=True)
def _raw_pairs_kernel(xa, xb, ia, ib, n_chunks, out):  # pragma: no cover - jit
    n = ia.shape[0]
    h, w = xa.shape[1:]
    hv = h - WIN + 1
    wv = w - WIN + 1
    for c in prange(n_chunks):
        # All statistics of a pair live in per-thread scratch that stays in cache.
        za = np.empty((h, w))
        zb = np.empty((h, w))
        mua = np.empty((hv, wv))
        mub = np.empty((hv, wv))
        vara = np.empty((hv, wv))
        varb = np.empty((hv, wv))
        s1 = np.empty((h, wv))
        s2 = np.empty((h, wv))
        row = np.empty(w)
        for k in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            ra = _image_stats(xa[ia[k]], za, mua, vara, s1, s2, row)
            rb = _image_stats(xb[ib[k]], zb, mub, varb, s1, s2, row)
            out[k] = _pair_value(za, mua, vara, ra, zb, mub, varb, rb, s1, row)


def pairs_cpu(a: ImageStats, b: ImageStats, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """SSIM of the pairs ``(a[ia[k]], b[ib[k]])`` on the CPU, float64 of shape (len(ia),)."""
    out = np.empty(ia.shape[0], dtype=np.float64)
    if ia.shape[0] == 0:
        return out
    _pairs_kernel(
        a.z, a.mu, a.var, a.drange, b.z, b.mu, b.var, b.drange,
        np.ascontiguousarray(ia, dtype=np.int64), np.ascontiguousarray(ib, dtype=np.int64),
        min(ia.shape[0], numba.get_num_threads() * 8), out,
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
    _raw_pairs_kernel(
        xa, xb, np.ascontiguousarray(ia, dtype=np.int64), np.ascontiguousarray(ib, dtype=np.int64),
        min(ia.shape[0], numba.get_num_threads() * 4), out,
    )
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
