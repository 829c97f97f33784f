"""Image-quality metrics from maintained libraries: MS-SSIM (pytorch-msssim), FSIM (piq).

Both run on torch tensors in batches of one image shape; the libraries are imported on first
use and a clear message names the package when it is missing.
"""

from __future__ import annotations

import importlib
import sys
from abc import abstractmethod
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from tqdm.auto import tqdm

from ._prep import batches, shape_groups, unit_range, zscore_pair
from .base import (
    Metric,
    MetricOptions,
    MetricUnavailable,
    MissingDependencyError,
    check_pairs,
    per_image,
)

if TYPE_CHECKING:
    import torch

MSSSIM_WIN = 7
"""Gaussian window of MS-SSIM (sigma 1.5). 7 like the reference SSIM's window; the usual 11
would need images over 160 px for the five scales, and the benchmarks are 128 px."""
MSSSIM_SCALES = 5
MSSSIM_MIN_SIDE = (MSSSIM_WIN - 1) * 2 ** (MSSSIM_SCALES - 1) + 1
"""97 px: pytorch-msssim's condition for five scales with a 7-px window."""


class _TorchBatchMetric(Metric):
    """Pairs scored in batches of one shape by ``_score_batch`` on (B, 1, H, W) tensors, with
    the library ``library`` = (module, pip package) imported on construction as ``_lib``."""

    library: ClassVar[tuple[str, str]]

    def __init__(self, options: MetricOptions = MetricOptions()) -> None:
        super().__init__(options)
        module, package = self.library
        try:
            self._lib: ModuleType = importlib.import_module(module)
        except ImportError:
            raise MissingDependencyError(
                f"metric {self.name!r} needs the package {package}: pip install {package}") from None

    @abstractmethod
    def _prepare(self, real: Sequence[np.ndarray], synthetic: Sequence[np.ndarray]
                 ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The float32 arrays the library compares, pair by pair."""

    @abstractmethod
    def _score_batch(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Scores (B,) of a batch of (B, 1, H, W) pairs."""

    def score(self, real: Sequence[np.ndarray], synthetic: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        check_pairs(real, synthetic, same_shape=True)
        xa, xb = self._prepare(real, synthetic)
        out = np.empty(len(xa), dtype=np.float64)
        size = max(1, self.options.batch_size)
        with tqdm(total=len(xa), desc=self.name, unit="pair", file=sys.stderr,
                  disable=not self.options.progress) as bar:
            for idx in shape_groups(xa).values():
                for part in batches(len(idx), size):
                    chosen = idx[part]
                    a = torch.from_numpy(np.stack([xa[k] for k in chosen]))[:, None]
                    b = torch.from_numpy(np.stack([xb[k] for k in chosen]))[:, None]
                    with torch.no_grad():
                        out[chosen] = self._score_batch(a, b).double().numpy()
                    bar.update(len(chosen))
        return out


class MSSSIMMetric(_TorchBatchMetric):
    """Multi-scale SSIM (Wang et al. 2003; pytorch-msssim) of the two images prepared as for
    the reference SSIM (z-scored, data range of the real image), five scales with the
    standard weights and a 7-px Gaussian window. Needs images of at least 97 px a side."""

    name = "ms-ssim"
    scale = "similarity"
    summary = "multi-scale SSIM (pytorch-msssim, 5 scales, 7-px window) on z-scored images"
    library = ("pytorch_msssim", "pytorch-msssim")

    def _prepare(self, real: Sequence[np.ndarray], synthetic: Sequence[np.ndarray]
                 ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        small = [np.shape(a) for a in real if min(np.shape(a)) < MSSSIM_MIN_SIDE]
        if small:
            raise MetricUnavailable(
                f"metric 'ms-ssim' needs images of at least {MSSSIM_MIN_SIDE} px a side for its "
                f"{MSSSIM_SCALES} scales; got {small[0][0]}x{small[0][1]}")
        pairs = [zscore_pair(a, b) for a, b in zip(real, synthetic)]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def _score_batch(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self._lib.ms_ssim(a, b, data_range=1.0, size_average=False, win_size=MSSSIM_WIN)


class FSIMMetric(_TorchBatchMetric):
    """Feature similarity (Zhang et al. 2011; piq's port of the authors' MATLAB code) in
    its grayscale form (phase congruency and gradient magnitude of the luminance; no
    chromatic term), each image min-max scaled to [0, 1] first."""

    name = "fsim"
    scale = "similarity"
    summary = "FSIM, grayscale (piq), images min-max scaled to [0, 1]"
    library = ("piq", "piq")

    def _prepare(self, real: Sequence[np.ndarray], synthetic: Sequence[np.ndarray]
                 ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        return per_image(real, unit_range), per_image(synthetic, unit_range)

    def _score_batch(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self._lib.fsim(a, b, data_range=1.0, chromatic=False, reduction="none")
