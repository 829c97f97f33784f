"""Closest-canonical RAS orientation, shared by the NIfTI and DICOM readers.

Reorienting to RAS (what ``nibabel.as_closest_canonical`` does: axis flips and
permutations only, no resampling) makes axis 0 run left -> right, axis 1 posterior ->
anterior and axis 2 inferior -> superior whatever the scanner stored, so "axis 2"
means axial slices for every file. Data that has only two axes longer than 1 after
reorienting is a 2D image and loses its singleton axis, wherever that axis lies (a
coronal 2D NIfTI, a single sagittal DICOM slice).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np

from .errors import ReadError
from .pixels import as_image, image_shape

#: The orientation that keeps the stored layout (no flip, no permutation).
IDENTITY = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])


def nibabel(path: str | Path) -> ModuleType:
    """Import nibabel on first use, as only volumes need it."""
    try:
        import nibabel as nib
    except ImportError:
        raise ReadError(path, "reading volumes needs nibabel: pip install nibabel") from None
    return nib


def ras_orientation(affine: np.ndarray, path: str | Path) -> np.ndarray:
    """Return nibabel's orientation array taking the voxel axes of `affine` to closest RAS.

    Raises:
        ReadError: the affine is degenerate (a zero or repeated axis direction).
    """
    nib = nibabel(path)
    try:
        ornt = nib.io_orientation(np.asarray(affine, dtype=np.float64))
    except Exception as exc:
        raise ReadError(path, f"unusable orientation (affine): {exc}") from exc
    if np.isnan(ornt).any():  # io_orientation marks axes it cannot place with NaN
        raise ReadError(path, "degenerate orientation: an axis has no direction in the affine")
    return ornt


def _pad3(dims: tuple[int, ...]) -> tuple[int, ...]:
    # A 2D image still has a 3D affine; give it its singleton third axis to reorient.
    return dims + (1,) * (3 - len(dims))


def _squeeze_plane(shape: tuple[int, ...], path: str | Path) -> tuple[int, ...]:
    """Drop the singleton axis of a 3D shape with exactly two axes longer than 1."""
    if len(shape) == 3 and sum(d > 1 for d in shape) == 2:
        shape = tuple(d for d in shape if d > 1)
    return image_shape(shape, path)


def canonical_shape(shape: tuple[int, ...], ornt: np.ndarray, path: str | Path) -> tuple[int, ...]:
    """Return the shape `to_canonical` gives for stored data of `shape` (headers only).

    Raises:
        ReadError: the data is not a 2D or 3D image.
    """
    stored = _pad3(image_shape(shape, path))
    canonical = [0, 0, 0]
    for axis, (target, _flip) in enumerate(ornt):
        canonical[int(target)] = stored[axis]
    return _squeeze_plane(tuple(canonical), path)


def to_canonical(data: np.ndarray, ornt: np.ndarray, path: str | Path) -> np.ndarray:
    """Return stored `data` flipped and permuted by `ornt` as float32, 2D if it is a plane.

    Raises:
        ReadError: the data is not a 2D or 3D image.
    """
    data = np.asarray(data).reshape(_pad3(image_shape(data.shape, path)))
    data = nibabel(path).orientations.apply_orientation(data, ornt)
    return as_image(data.reshape(_squeeze_plane(data.shape, path)), path)
