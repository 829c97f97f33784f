"""The package version and the library versions recorded beside every result."""

from __future__ import annotations

import platform

__version__ = "0.2.0"


def library_versions() -> dict[str, str]:
    """Versions of deepssim, Python and the numerical libraries that shape its results."""
    import numpy
    import torch
    import torchvision

    return {
        "deepssim": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
    }
