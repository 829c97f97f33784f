"""NIfTI volumes (.nii, .nii.gz) read with nibabel, in closest-canonical RAS orientation.

Reorienting to RAS (what ``nibabel.as_closest_canonical`` does: axis flips and
permutations only, no resampling) makes axis 2 run inferior -> superior whatever the
scanner stored, so "axis 2" means axial slices for every file.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .base import ImageReader, Item
from .errors import ReadError
from .pixels import as_image, image_shape


def _nibabel(path: Path) -> ModuleType:
    """Import nibabel on first use, as it is only needed for NIfTI files."""
    try:
        import nibabel
    except ImportError:
        raise ReadError(path, "reading NIfTI files needs nibabel: pip install nibabel") from None
    return nibabel


def _load(path: Path) -> tuple[ModuleType, Any, np.ndarray]:
    """Open the header; return nibabel, the lazy image and its RAS orientation."""
    nib = _nibabel(path)
    if not path.is_file():
        raise ReadError(path, "file not found")
    try:
        img = nib.load(path)
        ornt = nib.io_orientation(img.affine)
    except Exception as exc:
        raise ReadError(path, f"not a readable NIfTI file: {exc}") from exc
    return nib, img, ornt


def _pad3(shape: tuple[int, ...]) -> tuple[int, ...]:
    # A 2D NIfTI still has a 3D affine; give it its singleton third axis to reorient.
    return shape + (1,) * (3 - len(shape))


class NiftiReader(ImageReader):
    """NIfTI-1/2 files; 3D data in RAS orientation, a 2D file as one image."""

    name = "NIfTI"
    suffixes = (".nii", ".nii.gz")
    default_axis = 2

    def probe(self, path: Path) -> list[Item]:
        _, img, ornt = _load(path)
        stored = _pad3(tuple(img.shape))
        canonical = list(stored)
        for axis, (target, _flip) in enumerate(ornt):
            canonical[int(target)] = stored[axis]
        return [Item(path, None, image_shape(tuple(canonical), path))]

    def read(self, path: Path, member: str | None = None) -> np.ndarray:
        if member is not None:
            raise ReadError(path, f"a NIfTI file has no member {member!r}")
        nib, img, ornt = _load(path)
        image_shape(img.shape, path)  # refuse 4D before decompressing it
        try:
            data = img.get_fdata(dtype=np.float32)
        except Exception as exc:
            raise ReadError(path, f"corrupt or truncated NIfTI data: {exc}") from exc
        data = nib.orientations.apply_orientation(data.reshape(_pad3(data.shape)), ornt)
        return as_image(data, path)
