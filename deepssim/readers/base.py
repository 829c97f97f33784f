"""The reader interface that each format module implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import ClassVar

import numpy as np


@dataclass(frozen=True)
class Item:
    """One readable unit inside a source: a 2D image or a 3D volume.

    Attributes:
        path: Absolute path of the file, or of the folder for a DICOM series.
        member: npz key or DICOM SeriesInstanceUID when the path holds several units.
        shape: Array shape as the reader will return it (2 or 3 dims).
        patient: The patient the item shows, when its header says (DICOM PatientID), else None.
    """

    path: Path
    member: str | None
    shape: tuple[int, ...]
    patient: str | None = None

    @property
    def is_volume(self) -> bool:
        return len(self.shape) == 3


class ImageReader(ABC):
    """Reads one family of formats, picked by file suffix.

    Subclasses return float32 arrays that are 2D (one image) or 3D (a volume or stack);
    they raise `ReadError` for anything else.
    """

    #: Human-readable format name, used in messages.
    name: ClassVar[str]
    #: Lower-case suffixes this reader claims (".nii.gz" style double suffixes allowed).
    suffixes: ClassVar[tuple[str, ...]]
    #: Axis that `SliceSpec(axis=None)` means for this format.
    default_axis: ClassVar[int]
    #: True when members are named in the id fragment (`file#member`), as for npz.
    fragment_member: ClassVar[bool] = False
    #: True when a 3D item is one scan of one patient (NIfTI, DICOM), so that its slices show
    #: one patient; False for stacks that may hold unrelated images (npy, multi-page TIFF).
    volume_is_scan: ClassVar[bool] = False

    @abstractmethod
    def probe(self, path: Path) -> list[Item]:
        """Return the items in `path` from headers only (no full decode where avoidable).

        Raises:
            ReadError: the file is missing, corrupt, or not a 2D/3D image.
        """

    @abstractmethod
    def read(self, path: Path, member: str | None = None) -> np.ndarray:
        """Return the item's pixels as a float32 2D or 3D array.

        Raises:
            ReadError: the file is unreadable, or `member` is missing or needed.
        """

    def item_name(self, rel: PurePosixPath, member: str | None) -> str:
        """Return the id of an item (without slice fragment) given its relative path."""
        if member is None:
            return str(rel)
        return f"{rel}#{member}" if self.fragment_member else str(rel / member)
