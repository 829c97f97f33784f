"""deepssim: audit synthetic medical images for memorized training data."""

from .versions import __version__

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
    register3d,
    registered_ssim,
    registered_ssim3d,
    ssim,
    ssim_against,
    ssim_matrix,
    ssim_pairs,
    zscore,
)

__all__ = [
    "Alignment",
    "AuditResult",
    "DeepSSIMModel",
    "ImageRef",
    "ReadError",
    "ScanResult",
    "SearchGrid",
    "SliceSpec",
    "__version__",
    "apply_alignment",
    "audit",
    "load_model",
    "load_ref",
    "read_image",
    "read_slices",
    "read_volume",
    "register",
    "register3d",
    "registered_ssim",
    "registered_ssim3d",
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
_AUDIT_API = ("audit", "AuditResult")


def __getattr__(name: str) -> object:
    # The model and audit APIs need torch (seconds to import); load them on first use only.
    if name in _MODEL_API:
        from . import model

        return getattr(model, name)
    if name in _AUDIT_API:
        from . import auditing

        return getattr(auditing, name)
    raise AttributeError(f"module 'deepssim' has no attribute {name!r}")
