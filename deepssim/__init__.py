"""deepssim: audit synthetic medical images for memorized training data."""

__version__ = "0.1.0"

from .readers import ImageRef, ReadError, ScanResult, SliceSpec, read_image, read_slices, read_volume, scan
from .refssim import (
    Alignment,
    SearchGrid,
    register,
    registered_ssim,
    ssim,
    ssim_matrix,
    ssim_pairs,
    zscore,
)

__all__ = [
    "Alignment",
    "ImageRef",
    "ReadError",
    "ScanResult",
    "SearchGrid",
    "SliceSpec",
    "__version__",
    "read_image",
    "read_slices",
    "read_volume",
    "register",
    "registered_ssim",
    "scan",
    "ssim",
    "ssim_matrix",
    "ssim_pairs",
    "zscore",
]
