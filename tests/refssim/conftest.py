"""Helpers shared by the reference SSIM tests."""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity


def skimage_reference(a: np.ndarray, b: np.ndarray) -> float:
    """The paper's ground truth (images or whole volumes), written independently of deepssim."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    za = (a - a.mean()) / a.std()
    zb = (b - b.mean()) / b.std()
    return float(structural_similarity(za, zb, data_range=za.max() - za.min()))
