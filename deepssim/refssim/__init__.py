"""The reference SSIM engine: exact (scikit-image to 1e-6), batched, multi-threaded, CUDA."""

from ._stats import K1, K2, WIN, check_image, zscore
from .engine import resolve_device, ssim, ssim_against, ssim_matrix, ssim_pairs
from .registered import Alignment, SearchGrid, apply_alignment, register, registered_ssim

__all__ = [
    "K1",
    "K2",
    "WIN",
    "Alignment",
    "SearchGrid",
    "apply_alignment",
    "check_image",
    "register",
    "registered_ssim",
    "resolve_device",
    "ssim",
    "ssim_against",
    "ssim_matrix",
    "ssim_pairs",
    "zscore",
]
