"""Pixel-space metrics: the reference SSIM and its variants, normalised L2, correlation."""

from __future__ import annotations

import hashlib
import sys
from abc import abstractmethod
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from ...auditing.correction import VerifyCorrection, obtain_correction
from ...auditing.options import VerifyGrid
from ...auditing.verify import verify_pairs
from ...refssim import apply_alignment, registered_ssim, ssim_pairs, zscore
from ...refssim.registered import FLIPS
from ._prep import unit_range
from .base import Metric, MetricOptions, check_pairs, per_image, unique_by_identity


class SSIMMetric(Metric):
    """The reference SSIM (per-image z-score, scikit-image defaults, data range of the real
    image): the ground truth of the labels, exact in the registered condition."""

    name = "ssim"
    scale = "ssim"
    summary = "reference SSIM (z-score, scikit-image defaults, data range of the real image)"

    def score(self, real: Sequence[np.ndarray], synthetic: Sequence[np.ndarray]) -> np.ndarray:
        check_pairs(real, synthetic, same_shape=True)
        if not len(real):
            return np.empty(0)
        return ssim_pairs(list(real), list(synthetic), device=self.options.device,
                          num_threads=self.options.num_threads, progress=self.options.progress)


class FlipSSIMMetric(SSIMMetric):
    """The best reference SSIM over the four flips (none, axis 0, axis 1, both) of the
    synthetic image: four SSIMs a pair, blind to flips but not to rotation or contrast."""

    name = "ssim-flip"
    summary = "best reference SSIM over the four flips of the synthetic image"

    def score(self, real: Sequence[np.ndarray], synthetic: Sequence[np.ndarray]) -> np.ndarray:
        check_pairs(real, synthetic, same_shape=True)
        best = np.full(len(real), -np.inf)
        for flip in FLIPS:
            # One flipped array per distinct image, so the SSIM engine reuses its statistics.
            flipped = per_image(synthetic, lambda im: apply_alignment(im, flip, 0.0, (0, 0)))
            best = np.maximum(best, super().score(real, flipped))
        return best


class RegisteredSSIMMetric(Metric):
    """The registered SSIM (``deepssim.registered_ssim``): the best reference SSIM over
    flips, rotations within +-15 degrees and small shifts. The slow oracle (~0.16 s a
    128 x 128 pair on 2 CPU cores)."""

    name = "registered-ssim"
    scale = "ssim"
    summary = "best reference SSIM over flips, rotations (+-15 deg) and shifts: the slow oracle"

    def score(self, real: Sequence[np.ndarray], synthetic: Sequence[np.ndarray]) -> np.ndarray:
        check_pairs(real, synthetic, same_shape=True)
        pairs = tqdm(zip(real, synthetic), total=len(real), desc="registered ssim", unit="pair",
                     file=sys.stderr, disable=not self.options.progress)
        return np.array([registered_ssim(a, b, device=self.options.device) for a, b in pairs],
                        dtype=np.float64)


class AuditSSIMMetric(Metric):
    """What the audit decides a pair with: the verified SSIM (the best reference SSIM over
    flips, rotations, shifts and gamma curves, ``deepssim.auditing.verify``) less its lean,
    measured on near-copies of the pairs' real images (``deepssim.auditing.correction``): an
    estimate of the clean-frame SSIM."""

    name = "audit-ssim"
    scale = "ssim"
    summary = "the audit's decision: verified SSIM less its lean measured on near-copies of the real images"

    def __init__(self, options: MetricOptions = MetricOptions()) -> None:
        super().__init__(options)
        self._corrections: dict[str, VerifyCorrection] = {}

    def score(self, real: Sequence[np.ndarray], synthetic: Sequence[np.ndarray]) -> np.ndarray:
        check_pairs(real, synthetic, same_shape=False)
        if not len(real):
            return np.empty(0)
        grid = VerifyGrid()
        distinct, _ = unique_by_identity(real)
        digest = hashlib.sha256()
        for image in distinct:
            digest.update(repr(image.shape).encode() + np.ascontiguousarray(image).tobytes())
        key = digest.hexdigest()
        if key not in self._corrections:  # the conditions of one evaluation share their real images
            self._corrections[key] = obtain_correction(lambda i: distinct[i], len(distinct), [], grid, None, None,
                                                       progress=self.options.progress)[0]
        return self._corrections[key](verify_pairs(list(zip(real, synthetic)), grid, progress=self.options.progress))


class _PixelwiseMetric(Metric):
    """Each distinct image prepared once (``_prepare``), then each pair compared (``_compare``)."""

    @abstractmethod
    def _prepare(self, image: np.ndarray) -> np.ndarray:
        """The array a pair comparison reads."""

    @abstractmethod
    def _compare(self, a: np.ndarray, b: np.ndarray) -> float:
        """The similarity of two prepared images."""

    def score(self, real: Sequence[np.ndarray], synthetic: Sequence[np.ndarray]) -> np.ndarray:
        check_pairs(real, synthetic, same_shape=True)
        pa, pb = per_image(real, self._prepare), per_image(synthetic, self._prepare)
        return np.array([self._compare(a, b) for a, b in zip(pa, pb)], dtype=np.float64)


class L2Metric(_PixelwiseMetric):
    """Normalised L2 as a similarity: ``1 - ||a - b||_2 / sqrt(n_pixels)`` of the two images
    min-max scaled to [0, 1], i.e. one minus their root-mean-square difference (the L2
    distance normalised by the image dimension, as in the memorization literature; the
    reference code leaves its UMS-L2 scorer unimplemented). 1 for identical images, 0 for a
    black image against a white one."""

    name = "l2"
    scale = "similarity"
    summary = "1 - RMS difference of the images min-max scaled to [0, 1]"

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        return unit_range(image).astype(np.float64)

    def _compare(self, a: np.ndarray, b: np.ndarray) -> float:
        return 1.0 - float(np.sqrt(np.mean((a - b) ** 2)))


class CorrelationMetric(_PixelwiseMetric):
    """Pearson correlation of the pixels: the mean product of the two z-scored images, in
    [-1, 1]. A constant image z-scores to zeros and so correlates 0 with anything."""

    name = "correlation"
    scale = "similarity"
    summary = "Pearson correlation of the pixels"

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        return zscore(image)

    def _compare(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean(a * b))
