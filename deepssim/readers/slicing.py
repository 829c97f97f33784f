"""Choosing and cutting 2D slices out of 3D volumes."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np

from .base import ImageReader, Item
from .errors import ReadError
from .ids import check_slice, slice_id
from .pixels import check_finite
from .spec import ImageRef, SliceSpec

#: A pixel is foreground when it exceeds vmin + EMPTY_LEVEL * (vmax - vmin) of its volume.
EMPTY_LEVEL = 0.02


def slice_axis(spec: SliceSpec, reader: ImageReader) -> int:
    """Return the spec's axis, or the reader's default axis when the spec leaves it open."""
    return reader.default_axis if spec.axis is None else spec.axis


def nonempty_slices(volume: np.ndarray, axis: int, fraction: float) -> np.ndarray:
    """Return one bool per slice along `axis`: True unless the slice is background.

    See `SliceSpec.skip_empty` for the rule. Non-finite values do not set the range, so that a
    slice holding one stays listed, and is refused by name when it is read (``cut``).
    """
    mask = np.isfinite(volume)
    values = volume if mask.all() else volume[mask]  # a copy only when something is not finite
    if not values.size:
        return np.ones(volume.shape[axis], dtype=bool)
    vmin, vmax = float(values.min()), float(values.max())
    foreground = np.moveaxis(volume > vmin + EMPTY_LEVEL * (vmax - vmin), axis, 0)
    return foreground.reshape(foreground.shape[0], -1).mean(axis=1) >= fraction


def full_id(ref: ImageRef, reader: ImageReader) -> str:
    """The ref's id with its absolute path (``/data/vol.nii.gz#axis2:3``), for errors that
    must name the file wherever the scan started."""
    name = reader.item_name(PurePosixPath(ref.path.as_posix()), ref.member)
    return name if ref.axis is None or ref.index is None else slice_id(name, ref.axis, ref.index)


def refs_for(
    name: str,
    item: Item,
    reader: ImageReader,
    spec: SliceSpec,
    volume: np.ndarray | None = None,
) -> list[ImageRef]:
    """Return the refs an item gives under `spec`: itself if 2D, else its selected slices.

    Args:
        name: The item's id without slice fragment.
        volume: The item's data; required for a volume when `spec.skip_empty` is set.

    Raises:
        ReadError: the selection picks no slice of this volume, or an index is out of range.
    """
    if not item.is_volume:
        return [ImageRef(name, item.path, item.member, patient=item.patient)]
    axis = slice_axis(spec, reader)
    count = item.shape[axis]
    where = reader.item_name(PurePosixPath(item.path.as_posix()), item.member)  # absolute, for errors
    try:
        indices = spec.indices(count)
    except IndexError as exc:
        raise ReadError(where, f"{exc} along axis {axis}") from None
    if not indices:
        raise ReadError(where, f"selection {spec.select!r} picks no slice of {count} along axis {axis}")
    if spec.skip_empty:
        if volume is None:
            raise ValueError("skip_empty needs the volume data")
        keep = nonempty_slices(volume, axis, spec.empty_fraction)
        indices = [i for i in indices if keep[i]]
    return [ImageRef(slice_id(name, axis, i), item.path, item.member, axis, i, patient=item.patient)
            for i in indices]


def cut(data: np.ndarray, ref: ImageRef, where: str | Path, default_axis: int) -> np.ndarray:
    """Return the 2D image `ref` names within its item's `data` (2D or 3D).

    Every reading path cuts its images here, so this is where an image is checked to hold
    finite values only. `default_axis` only shapes the hint given when a volume is named
    without a slice.

    Raises:
        ReadError: a slice of 2D data, no slice of 3D data, an axis or index out of range,
            or NaN / infinite values in the image (naming `where`: the file, or the slice's id).
    """
    if ref.axis is None:
        if data.ndim != 2:
            raise ReadError(
                where,
                f"is a 3D volume of shape {data.shape}; pick a slice with "
                f"'#axis{default_axis}:N' (N < {data.shape[default_axis]}) or use read_slices",
            )
        return check_finite(data, where)
    assert ref.index is not None
    check_slice(data.shape, ref.axis, ref.index, where)  # before indexing: '#axis5:1' is no IndexError
    return check_finite(np.ascontiguousarray(np.take(data, ref.index, axis=ref.axis)), where)
