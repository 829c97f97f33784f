"""Which reader handles a path: by suffix, or by the 'DICM' marker for DICOM files
that have no suffix (or a numeric one, as in ``IM0001.12``)."""

from __future__ import annotations

from pathlib import Path

from .base import ImageReader
from .dicom import DicomReader, has_dicom_magic
from .errors import ReadError
from .nifti import NiftiReader
from .npy import NpyReader, NpzReader
from .pillow import PillowReader

DICOM = DicomReader()
READERS: tuple[ImageReader, ...] = (PillowReader(), NiftiReader(), DICOM, NpyReader(), NpzReader())
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(suffix for reader in READERS for suffix in reader.suffixes)

# Longest first, so ".nii.gz" wins over any plain ".gz" rule.
_BY_SUFFIX = sorted(
    ((suffix, reader) for reader in READERS for suffix in reader.suffixes),
    key=lambda pair: -len(pair[0]),
)


def _may_be_dicom(path: Path) -> bool:
    suffix = path.suffix
    return suffix == "" or suffix[1:].isdigit()


def detect_reader(path: Path) -> ImageReader | None:
    """Return the reader for a file, or None when it is not a supported image file."""
    name = path.name.lower()
    for suffix, reader in _BY_SUFFIX:
        if name.endswith(suffix):
            return reader
    if _may_be_dicom(path) and has_dicom_magic(path):
        return DICOM
    return None


def reader_for(path: Path) -> ImageReader:
    """Return the reader for an existing file, or DICOM for a folder (a series).

    Raises:
        ReadError: the path does not exist or its type is not supported.
    """
    if path.is_dir():
        return DICOM
    if not path.exists():
        raise ReadError(path, "file not found")
    reader = detect_reader(path)
    if reader is None:
        kind = f"suffix '{path.suffix}'" if path.suffix else "file without suffix (and no DICOM 'DICM' marker)"
        raise ReadError(path, f"unsupported {kind}; supported: {', '.join(SUPPORTED_SUFFIXES)} and DICOM without suffix")
    return reader
