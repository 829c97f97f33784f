"""NIfTI volumes (.nii, .nii.gz) read with nibabel, in closest-canonical RAS orientation.

See `orient` for the reorientation: axis 2 runs inferior -> superior whatever the
scanner stored, and a file with only two axes longer than 1 (after reorienting) is
one 2D image, whichever axis is the singleton.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .base import ImageReader, Item
from .errors import ReadError
from .orient import canonical_shape, nibabel, ras_orientation, to_canonical


def _load(path: Path) -> tuple[Any, np.ndarray]:
    """Open the header; return the lazy image and its RAS orientation."""
    nib = nibabel(path)
    if not path.is_file():
        raise ReadError(path, "file not found")
    try:
        img = nib.load(path)
    except Exception as exc:
        raise ReadError(path, f"not a readable NIfTI file: {exc}") from exc
    return img, ras_orientation(img.affine, path)


class NiftiReader(ImageReader):
    """NIfTI-1/2 files; 3D data in RAS orientation, a 2D file as one image."""

    name = "NIfTI"
    suffixes = (".nii", ".nii.gz")
    default_axis = 2
    volume_is_scan = True

    def probe(self, path: Path) -> list[Item]:
        img, ornt = _load(path)
        return [Item(path, None, canonical_shape(tuple(img.shape), ornt, path))]

    def read(self, path: Path, member: str | None = None) -> np.ndarray:
        if member is not None:
            raise ReadError(path, f"a NIfTI file has no member {member!r}")
        img, ornt = _load(path)
        canonical_shape(tuple(img.shape), ornt, path)  # refuse 4D before decompressing it
        try:
            data = img.get_fdata(dtype=np.float32)
        except Exception as exc:
            raise ReadError(path, f"corrupt or truncated NIfTI data: {exc}") from exc
        return to_canonical(data, ornt, path)
