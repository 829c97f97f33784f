"""The torch backend (CUDA, and the CPU for testing): the same computation as ``_cpu`` and
``_cpu3d``, for images and volumes alike.

Pairs are processed in chunks sized to a memory budget; everything stays float64 so that the
result matches scikit-image to the same tolerance as the CPU kernels. The box sums are
separable valid 7-tap sums along each spatial axis (2 for images, 3 for volumes).
"""

from __future__ import annotations

import numpy as np
import torch

from ._stats import COV_NORM, COV_NORM_3D, K1, K2, WIN, ImageStats


def _valid_sum(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum of every WIN consecutive entries along ``dim`` (valid part only)."""
    n = x.shape[dim] - WIN + 1
    out = x.narrow(dim, 0, n).clone()
    for d in range(1, WIN):
        out += x.narrow(dim, d, n)
    return out


class TorchStats:
    """``ImageStats`` moved to a torch device."""

    def __init__(self, stats: ImageStats, device: torch.device) -> None:
        def put(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a).to(device=device, dtype=torch.float64)

        self.z = put(stats.z)
        self.mu = put(stats.mu)
        self.var = put(stats.var)
        self.drange = put(stats.drange)


def pairs_torch(
    a: ImageStats | TorchStats,
    b: ImageStats | TorchStats,
    ia: np.ndarray,
    ib: np.ndarray,
    device: torch.device,
    max_bytes: int = 1 << 30,
) -> np.ndarray:
    """SSIM of the pairs ``(a[ia[k]], b[ib[k]])`` with torch on ``device``, float64 numpy."""
    ta = a if isinstance(a, TorchStats) else TorchStats(a, device)
    tb = b if isinstance(b, TorchStats) else TorchStats(b, device)
    n = int(ia.shape[0])
    out = np.empty(n, dtype=np.float64)
    if n == 0:
        return out
    spatial = tuple(range(1, ta.z.ndim))  # (1, 2) for images, (1, 2, 3) for volumes
    cov_norm = COV_NORM if len(spatial) == 2 else COV_NORM_3D
    window = WIN ** len(spatial)
    expand = (slice(None),) + (None,) * len(spatial)
    # About six image-sized float64 temporaries live per pair at the peak.
    chunk = max(1, int(max_bytes // (6 * 8 * ta.z[0].numel())))
    ia_t = torch.from_numpy(np.asarray(ia, dtype=np.int64)).to(device)
    ib_t = torch.from_numpy(np.asarray(ib, dtype=np.int64)).to(device)
    with torch.no_grad():
        for start in range(0, n, chunk):
            i = ia_t[start : start + chunk]
            j = ib_t[start : start + chunk]
            uxy = ta.z[i] * tb.z[j]
            for dim in reversed(spatial):
                uxy = _valid_sum(uxy, dim)
            uxy = uxy / window
            ux = ta.mu[i]
            uy = tb.mu[j]
            drange = torch.where(ta.drange[i] > 0, ta.drange[i], tb.drange[j])
            c1 = ((K1 * drange) ** 2)[expand]
            c2 = ((K2 * drange) ** 2)[expand]
            vxy = cov_norm * (uxy - ux * uy)
            num = (2.0 * ux * uy + c1) * (2.0 * vxy + c2)
            den = (ux * ux + uy * uy + c1) * (ta.var[i] + tb.var[j] + c2)
            value = (num / den).mean(dim=spatial)
            # Both images constant: identical (empty) structure, defined as 1 (as on the CPU).
            value = torch.where(drange > 0, value, torch.ones_like(value))
            out[start : start + chunk] = value.cpu().numpy()
    return out
