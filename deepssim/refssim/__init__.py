"""The reference SSIM engine: exact (scikit-image to 1e-6), batched, multi-threaded, CUDA;
for 2D images and, with ``ndim=3``, 3D volumes."""

from ._stats import K1, K2, WIN, check_image, zscore
from .engine import resolve_device, ssim, ssim_against, ssim_matrix, ssim_pairs
from .registered import Alignment, SearchGrid, apply_alignment, register, registered_ssim
from .registered3d import (
    Alignment3D,
    SearchGrid3D,
    apply_alignment3d,
    register3d,
    registered_ssim3d,
)

__all__ = [
    "K1",
    "K2",
    "WIN",
    "Alignment",
    "Alignment3D",
    "SearchGrid",
    "SearchGrid3D",
    "apply_alignment",
    "apply_alignment3d",
    "check_image",
    "register",
    "register3d",
    "registered_ssim",
    "registered_ssim3d",
    "resolve_device",
    "ssim",
    "ssim_against",
    "ssim_matrix",
    "ssim_pairs",
    "zscore",
]
