"""Image ids: writing them, and reading them back into the file, member and slice they name.

Grammar: ``<relative/posix/path>[/<SeriesInstanceUID>][#<npz key>][#axis<A>:<I>]``.
A '#' inside a file name is allowed: the path part is the shortest prefix that exists.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .base import ImageReader
from .dicom import UID_PATTERN
from .errors import ReadError
from .registry import DICOM, reader_for
from .spec import ImageRef

_SLICE = re.compile(r"axis(\d+):(\d+)")
_MEMBER_SLICE = re.compile(r"(.+)#axis(\d+):(\d+)", re.DOTALL)


def slice_id(name: str, axis: int, index: int) -> str:
    """Return the id of slice `index` along `axis` of the item called `name`."""
    return f"{name}#axis{axis}:{index}"


def check_slice(shape: tuple[int, ...], axis: int, index: int, where: str | Path) -> None:
    """Raise ReadError unless an array of `shape` is 3D and has slice `index` along `axis`."""
    if len(shape) != 3:
        raise ReadError(where, f"is 2D (shape {tuple(shape)}), it has no slices")
    if not 0 <= axis < 3:
        raise ReadError(where, f"no axis {axis}: the volume has 3 axes (0, 1, 2), shape {tuple(shape)}")
    if not 0 <= index < shape[axis]:
        raise ReadError(where, f"slice index {index} out of range: axis {axis} has {shape[axis]} slices")


def absolute(path: str | Path) -> Path:
    """Return `path` made absolute and normalised, without resolving symlinks."""
    return Path(os.path.abspath(os.path.expanduser(path)))


def relative_name(path: Path, root: Path) -> PurePosixPath:
    """Return `path` relative to `root` with POSIX separators (absolute if outside root)."""
    try:
        return PurePosixPath(path.relative_to(root).as_posix())
    except ValueError:
        return PurePosixPath(path.as_posix())


def outside_root(root: str | Path, name: str) -> Path | None:
    """Where ``name`` (a path or id relative to ``root``, or absolute) leads when that is
    outside ``root``, else None: the one rule for "inside the root", after ``..`` and
    symbolic links (of the root too). Every path an id could name (each prefix before a
    ``#``, see ``locate``) must stay inside. ``name`` holds no NUL character."""
    base = Path(os.path.realpath(absolute(root)))
    cuts = [match.start() for match in re.finditer("#", name)] + [len(name)]
    for cut in cuts:
        if not cut:
            continue
        target = Path(os.path.realpath(base.joinpath(*PurePosixPath(name[:cut]).parts)))
        if target != base and base not in target.parents:
            return target
    return None


def check_inside_root(root: str | Path, name: str, where: str | Path, *, allow_outside: bool = False) -> None:
    """Raise ReadError (at ``where``: the file and line naming it) when ``name`` is no path
    at all (a NUL character), or leads outside ``root`` (``outside_root``) unless
    ``allow_outside``; the message says how to allow it."""
    if "\0" in name:
        raise ReadError(where, f"{name!r} holds a NUL character: not a file path")
    if allow_outside:
        return
    target = outside_root(root, name)
    if target is not None:
        raise ReadError(
            where,
            f"{name!r} leads outside the root folder {absolute(root)} (to {target}); paths must stay "
            "inside it unless allowed (--allow-outside-root, or allow_outside_root=True)",
        )


def check_listed_paths(
    listing: str | Path, root: str | Path, columns: dict[str, Sequence[str]], *, allow_outside: bool = False
) -> None:
    """``check_inside_root`` for every path a CSV file lists (``columns``: column name -> the
    path of each row, the first row on line 2), naming the file, line and column of the first
    bad one."""
    for column, names in columns.items():
        for line, name in enumerate(names, start=2):
            check_inside_root(root, name, f"{listing}, line {line}, column {column}", allow_outside=allow_outside)


@dataclass(frozen=True)
class Location:
    """What an id points at, before checking it against the file's contents."""

    reader: ImageReader
    path: Path
    member: str | None
    axis: int | None
    index: int | None


def locate(root: Path, image_id: str) -> Location:
    """Split an id (relative to `root`, or absolute) into reader, path, member and slice.

    Raises:
        ReadError: nothing on disk matches the id, or its fragment is malformed.
    """
    cuts = [match.start() for match in re.finditer("#", image_id)] + [len(image_id)]
    for cut in cuts:
        target = root.joinpath(*PurePosixPath(image_id[:cut]).parts)
        if cut and target.exists():
            reader, path, member = reader_for(target), target, None
            break
        if cut and UID_PATTERN.fullmatch(target.name) and target.parent.is_dir() and DICOM.files(target.parent):
            reader, path, member = DICOM, target.parent, target.name  # folder/SeriesUID
            break
    else:
        raise ReadError(root.joinpath(*PurePosixPath(image_id[: cuts[0]]).parts), "file not found")
    if cut == len(image_id):
        return Location(reader, path, member, None, None)
    fragment = image_id[cut + 1 :]
    if reader.fragment_member:
        match = _MEMBER_SLICE.fullmatch(fragment)
        if match is None:
            return Location(reader, path, fragment, None, None)
        return Location(reader, path, match.group(1), int(match.group(2)), int(match.group(3)))
    match = _SLICE.fullmatch(fragment)
    if match is None:
        raise ReadError(image_id, f"bad slice fragment '#{fragment}', expected '#axis<A>:<I>' such as '#axis2:85'")
    return Location(reader, path, member, int(match.group(1)), int(match.group(2)))


def resolve_id(root: str | Path, image_id: str) -> ImageRef:
    """Return the `ImageRef` that `image_id` names under `root` (the inverse of a scan).

    Only headers are read: the member, slice axis and index are checked to exist.

    Raises:
        ReadError: the file, member or slice does not exist, or a volume is named
            without a slice.
    """
    root_path = absolute(root)
    loc = locate(root_path, image_id)
    items = [item for item in loc.reader.probe(loc.path) if item.path == loc.path and item.member == loc.member]
    if not items:
        what = "array" if loc.reader.fragment_member else "single DICOM series"
        raise ReadError(image_id, f"no {what} {loc.member!r} in {loc.path}" if loc.member else f"{loc.path} is not one {what}")
    item = items[0]
    axis, index = loc.axis, loc.index
    if axis is None or index is None:
        if item.is_volume:
            raise ReadError(
                image_id,
                f"is a 3D volume of shape {item.shape}; name a slice as '#axis{loc.reader.default_axis}:N'",
            )
    else:
        check_slice(item.shape, axis, index, image_id)
    name = loc.reader.item_name(relative_name(loc.path, root_path), loc.member)
    full = name if axis is None or index is None else slice_id(name, axis, index)
    return ImageRef(full, loc.path, loc.member, axis, index, patient=item.patient)
