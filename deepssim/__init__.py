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
    "DeepSSIMModel",
    "ImageRef",
    "ReadError",
    "ScanResult",
    "SearchGrid",
    "SliceSpec",
    "__version__",
    "apply_alignment",
    "load_model",
    "load_ref",
    "read_image",
    "read_slices",
    "read_volume",
    "register",
    "registered_ssim",
    "resolve_id",
    "scan",
    "score_pairs",
    "ssim",
    "ssim_against",
    "ssim_matrix",
    "ssim_pairs",
    "zscore",
]

_MODEL_API = ("DeepSSIMModel", "load_model", "score_pairs")


def __getattr__(name: str) -> object:
    # The model API needs torch (seconds to import); load it on first use only.
    if name in _MODEL_API:
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module 'deepssim' has no attribute {name!r}")
