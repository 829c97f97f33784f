"""deepssim: audit synthetic medical images for memorized training data."""

__version__ = "0.1.0"

from .readers import (
    ImageRef,
    ReadError,
    ScanResult,
    SliceSpec,
    load_ref,
    read_image,
    read_slices,
    read_volume,
    resolve_id,
    scan,
)
from .refssim import (
    Alignment,
    SearchGrid,
    apply_alignment,
    register,
    registered_ssim,
    ssim,
    ssim_against,
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
    "apply_alignment",
    "load_ref",
    "read_image",
    "read_slices",
    "read_volume",
    "register",
    "registered_ssim",
    "resolve_id",
    "scan",
    "ssim",
    "ssim_against",
    "ssim_matrix",
    "ssim_pairs",
    "zscore",
]
