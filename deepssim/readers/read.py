"""Reading images: one 2D image, one 3D volume, the slices of a file, or a list of refs."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .errors import ReadError
from .ids import absolute, locate, relative_name
from .registry import reader_for
from .slicing import cut, refs_for
from .spec import ImageRef, SliceSpec


def _read_item(path: str | Path) -> tuple[np.ndarray, ImageRef, int]:
    """Read what `path` (a path, or an id relative to the cwd) names.

    Returns:
        The item's full data (2D or 3D), a ref with the slice named (if any), and
        the reader's default axis.
    """
    text = str(path)
    loc = locate(absolute("."), text) if not Path(text).exists() else None
    if loc is None:
        target = absolute(text)
        reader = reader_for(target)
        return reader.read(target), ImageRef(text, target), reader.default_axis
    data = loc.reader.read(loc.path, loc.member)
    return data, ImageRef(text, loc.path, loc.member, loc.axis, loc.index), loc.reader.default_axis


def read_image(path: str | Path) -> np.ndarray:
    """Return one 2D float32 image.

    Args:
        path: A 2D file, or an id with a fragment relative to the current directory,
            e.g. "vol.nii.gz#axis2:85" or "arrays.npz#key".

    Raises:
        ReadError: unreadable input, or a 3D volume named without a slice.
    """
    data, ref, default_axis = _read_item(path)
    return cut(data, ref, path, default_axis)


def read_volume(path: str | Path) -> np.ndarray:
    """Return one 3D float32 volume.

    NIfTI files and DICOM series folders come in closest-canonical RAS orientation
    (axis 2 inferior -> superior; a DICOM series without orientation tags, or a
    multi-frame file, stacked along axis 2), npy/npz stacks and multi-page TIFF with
    their images along axis 0.

    Raises:
        ReadError: unreadable input, a 2D image, 4D data, or a DICOM series folder
            with a file that cannot be read.
    """
    data, ref, _ = _read_item(path)
    if ref.axis is not None:
        raise ReadError(path, "names one slice; give the volume without '#axis' fragment")
    if data.ndim != 3:
        raise ReadError(path, f"is 2D (shape {data.shape}), a 3D volume is needed")
    return data


def read_slices(
    path: str | Path, spec: SliceSpec = SliceSpec(), root: str | Path | None = None
) -> list[tuple[ImageRef, np.ndarray]]:
    """Return the 2D images of a file or DICOM series folder, each with its ref.

    A 2D file gives one item, a volume its slices selected by `spec` (read once), an
    npz file the items of each member, a folder every series in it.

    Args:
        root: Folder the ids are relative to; default the parent of `path`.

    Raises:
        ReadError: unreadable input or a selection that picks no slice.
    """
    target = absolute(path)
    reader = reader_for(target)
    base = absolute(root) if root is not None else target.parent
    images = []
    for item in reader.probe(target):
        data = reader.read(item.path, item.member)
        name = reader.item_name(relative_name(item.path, base), item.member)
        for ref in refs_for(name, item, reader, spec, data):
            images.append((ref, cut(data, ref, ref.id, reader.default_axis)))
    return images


def load_ref(ref: ImageRef) -> np.ndarray:
    """Return the 2D float32 image that `ref` names.

    Raises:
        ReadError: the file changed or is unreadable, naming the ref's id.
    """
    reader = reader_for(ref.path)
    return cut(reader.read(ref.path, ref.member), ref, ref.id, reader.default_axis)


def load_refs(refs: Sequence[ImageRef], progress: bool = False) -> Iterator[tuple[ImageRef, np.ndarray]]:
    """Yield (ref, image) in `refs` order, reading each file or volume only once.

    A volume is kept in memory from its first ref to its last, so refs grouped by
    file (as a scan gives them) hold at most one volume at a time.

    Raises:
        ReadError: a file cannot be read (raised when its first ref is reached).
    """
    last_use = {(ref.path, ref.member): position for position, ref in enumerate(refs)}
    cache: dict[tuple[Path, str | None], tuple[np.ndarray, int]] = {}
    for position, ref in enumerate(tqdm(refs, desc="reading", unit="img", file=sys.stderr, disable=not progress)):
        key = (ref.path, ref.member)
        if key not in cache:
            reader = reader_for(ref.path)
            cache[key] = (reader.read(ref.path, ref.member), reader.default_axis)
        data, default_axis = cache[key]
        if last_use[key] == position:
            del cache[key]
        yield ref, cut(data, ref, ref.id, default_axis)
