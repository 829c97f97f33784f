"""Slice order and orientation of DICOM files, from their headers alone.

See `dicom` for the rules; this module holds the geometry: sorting the files of a
series, checking its slice spacing, and the voxel-to-patient affine that `orient`
turns into closest-canonical RAS.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .errors import ReadError
from .orient import IDENTITY, ras_orientation


def frames(ds: Any) -> int:
    """Return the number of frames of a file (1 unless multi-frame)."""
    return int(ds.get("NumberOfFrames") or 1)


def vector(ds: Any, keyword: str, size: int) -> np.ndarray | None:
    """Return a numeric multi-valued tag, or None when missing or malformed."""
    value = ds.get(keyword)
    try:
        values = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return values if values.shape == (size,) and np.isfinite(values).all() else None


class Series(NamedTuple):
    """The files of one series in slice order."""

    files: list[tuple[Path, Any]]
    #: Slice positions along the normal (mm, ascending), or None when ordered by InstanceNumber.
    positions: np.ndarray | None


def order_series(series: list[tuple[Path, Any]], where: Path) -> Series:
    """Sort the files of one series into slice order (see the `dicom` module docstring).

    Raises:
        ReadError: mixed sizes or orientations, or repeated positions (a 4D series).
    """
    if any(frames(ds) > 1 for _, ds in series):
        raise ReadError(where, "series mixes multi-frame files with others, cannot stack it")
    sizes = {(ds.get("Rows"), ds.get("Columns")) for _, ds in series}
    if len(sizes) > 1:
        raise ReadError(where, f"slices differ in size {sorted(sizes)}, cannot stack them")
    orientations = [vector(ds, "ImageOrientationPatient", 6) for _, ds in series]
    positions = [vector(ds, "ImagePositionPatient", 3) for _, ds in series]
    if all(o is not None for o in orientations) and all(p is not None for p in positions):
        if not all(np.allclose(o, orientations[0], atol=1e-4) for o in orientations):
            raise ReadError(where, "slices have different orientations (a localizer?), cannot stack them")
        normal = np.cross(orientations[0][:3], orientations[0][3:])
        keys = [float(normal @ p) for p in positions]
        what = "slice positions"
    else:
        try:
            keys = [float(ds.InstanceNumber) for _, ds in series]
        except (AttributeError, TypeError, ValueError):
            raise ReadError(where, "slices have neither ImagePositionPatient nor InstanceNumber to order them") from None
        what = "InstanceNumbers"
    if len(np.unique(np.round(keys, 3))) < len(keys):
        raise ReadError(
            where,
            f"{len(keys)} files share {len(np.unique(np.round(keys, 3)))} distinct {what}: "
            "a 4D series (time points, echoes, b-values) is not supported",
        )
    order = np.argsort(keys, kind="stable")
    sorted_keys = np.asarray(keys)[order] if what == "slice positions" else None
    return Series([series[i] for i in order], sorted_keys)


def warn_if_gaps(series: Series, where: Path) -> None:
    """Warn when the slice spacing varies, as it does when a file is missing mid-series."""
    if series.positions is None or len(series.positions) < 3:
        return
    gaps = np.diff(series.positions)
    # 1 % (or 1 um) of slack absorbs the rounding of positions written as decimal strings.
    if np.ptp(gaps) > max(1e-3, 0.01 * float(np.median(gaps))):
        warnings.warn(
            f"{where}: slice spacing is not uniform (gaps from {gaps.min():.4g} to {gaps.max():.4g} mm); "
            "a file may be missing from the series",
            stacklevel=3,
        )


def orientation(files: list[tuple[Path, Any]], where: Path) -> np.ndarray:
    """Return the RAS orientation (see `orient`) of `files` in slice order, one file
    being a one-slice volume; `orient.IDENTITY` (the stored layout) for a multi-frame
    file or without the orientation and position tags it needs."""
    first = files[0][1]
    cosines = vector(first, "ImageOrientationPatient", 6)
    origin = vector(first, "ImagePositionPatient", 3)
    if cosines is None or frames(first) > 1:
        return IDENTITY
    normal = np.cross(cosines[:3], cosines[3:])
    if np.linalg.norm(normal) < 1e-3:  # zero or parallel direction cosines: unusable
        return IDENTITY
    if len(files) == 1:
        step = normal  # its sign only decides whether a singleton axis is flipped
    else:
        last = vector(files[-1][1], "ImagePositionPatient", 3)
        if origin is None or last is None:
            return IDENTITY
        step = (last - origin) / (len(files) - 1)
    spacing = vector(first, "PixelSpacing", 2)
    row_spacing, column_spacing = (1.0, 1.0) if spacing is None else spacing
    affine = np.eye(4)
    # Array axis 0 steps from row to row, along the column cosine (IOP[3:]) by
    # PixelSpacing[0]; axis 1 steps along a row (IOP[:3]) by PixelSpacing[1].
    affine[:3, 0] = cosines[3:] * row_spacing
    affine[:3, 1] = cosines[:3] * column_spacing
    affine[:3, 2] = step
    affine[:3, 3] = np.zeros(3) if origin is None else origin
    return ras_orientation(np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine, where)  # DICOM LPS -> RAS
