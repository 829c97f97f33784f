"""What to read: `SliceSpec` (which 2D slices of a volume) and `ImageRef` (one 2D image)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_RANGE = re.compile(r"(-?\d+)?:(-?\d+)?(?::(-?\d+)?)?")
_INDEX = re.compile(r"-?\d+")


@dataclass(frozen=True)
class SliceSpec:
    """Which 2D slices to take from each 3D volume (2D files always give their one image).

    Attributes:
        axis: Slicing axis 0, 1 or 2; None means the format's default: 2 for NIfTI and
            DICOM (axial, as both are read in RAS orientation; the stacking axis of a
            DICOM series without orientation tags), 0 for npy/npz stacks and
            multi-page TIFF.
        select: "center" (index n // 2), "all", a Python slice "START:STOP[:STEP]"
            ("40:120", "::4", "10:50:2", negative values count from the end) or a single
            index "N".
        skip_empty: Drop all-background slices. A slice is empty when fewer than
            `empty_fraction` of its pixels exceed vmin + 2% of (vmax - vmin), with vmin
            and vmax taken over the whole volume.
        empty_fraction: See `skip_empty`.
    """

    axis: int | None = None
    select: str = "center"
    skip_empty: bool = False
    empty_fraction: float = 0.01

    def __post_init__(self) -> None:
        if self.axis is not None and self.axis not in (0, 1, 2):
            raise ValueError(f"slice axis must be 0, 1 or 2, got {self.axis!r}")
        if not 0.0 <= self.empty_fraction <= 1.0:
            raise ValueError(f"empty_fraction must be within [0, 1], got {self.empty_fraction!r}")
        _check_select(self.select)

    @classmethod
    def parse(cls, text: str, axis: int | None = None, skip_empty: bool = False) -> SliceSpec:
        """Build a spec from user text such as "center", "all", "40:120", "::4" or "85".

        Raises:
            ValueError: the text is none of these, or has a zero step.
        """
        return cls(axis=axis, select=str(text).strip().lower().replace(" ", ""), skip_empty=skip_empty)

    def indices(self, count: int) -> list[int]:
        """Return the selected indices among `count` slices, in selection order.

        Raises:
            IndexError: a single index "N" outside the volume.
        """
        if self.select == "center":
            return [count // 2]
        if self.select == "all":
            return list(range(count))
        if _INDEX.fullmatch(self.select):
            index = int(self.select)
            if not -count <= index < count:
                raise IndexError(f"slice index {index} out of range for {count} slices")
            return [index % count]
        parts = [int(p) if p else None for p in self.select.split(":")]
        return list(range(count)[slice(*parts)])


def _check_select(select: str) -> None:
    if select in ("center", "all") or _INDEX.fullmatch(select):
        return
    match = _RANGE.fullmatch(select)
    if match is None:
        raise ValueError(
            f"bad slice selection {select!r}: use 'center', 'all', an index 'N' or a "
            "Python slice 'START:STOP[:STEP]' such as '40:120' or '::4'"
        )
    if match.group(3) is not None and int(match.group(3)) == 0:
        raise ValueError(f"bad slice selection {select!r}: step cannot be zero")


@dataclass(frozen=True)
class ImageRef:
    """One 2D image a user can name, find again (`resolve_id`) and load (`load_ref`).

    Attributes:
        id: Path relative to the scan root with POSIX separators, plus ``#member`` for
            an npz array, ``/<SeriesInstanceUID>`` for one of several DICOM series in a
            folder and ``#axis<A>:<I>`` for a slice of a volume.
        path: Absolute path of the file or DICOM series folder.
        member: npz key or DICOM SeriesInstanceUID when needed, else None.
        axis: Slicing axis for a slice of a volume, else None.
        index: Slice index along `axis`, else None.
        patient: The patient the image shows, when its file's header says (the DICOM
            PatientID, read with the header at scan time), else None. Not part of the
            image's identity: two refs to one image are equal whether or not it is known.
    """

    id: str
    path: Path
    member: str | None = None
    axis: int | None = None
    index: int | None = None
    patient: str | None = field(default=None, compare=False)
