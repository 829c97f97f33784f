"""Which reader handles a path: by suffix, or by the 'DICM' marker for DICOM files
whose suffix no reader claims (none, ``IM0001.12``, Siemens ``.IMA``...)."""

from __future__ import annotations

from pathlib import Path

from .base import ImageReader
from .dicom import DicomReader, has_dicom_magic
from .errors import ReadError
from .nifti import NiftiReader
from .npy import NpyReader, NpzReader
from .pillow import PillowReader

NOT_REGULAR = "not a regular file (a pipe, socket or device): not read"

DICOM = DicomReader(claims=lambda path: detect_reader(path) is DICOM)
READERS: tuple[ImageReader, ...] = (PillowReader(), NiftiReader(), DICOM, NpyReader(), NpzReader())
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(suffix for reader in READERS for suffix in reader.suffixes)

# Longest first, so ".nii.gz" wins over any plain ".gz" rule.
_BY_SUFFIX = sorted(
    ((suffix, reader) for reader in READERS for suffix in reader.suffixes),
    key=lambda pair: -len(pair[0]),
)


def detect_reader(path: Path) -> ImageReader | None:
    """Return the reader for a file, or None when it is not a supported image file."""
    name = path.name.lower()
    for suffix, reader in _BY_SUFFIX:
        if name.endswith(suffix):
            return reader
    # DICOM files come with any name; a 132-byte read of the marker tells them apart.
    return DICOM if has_dicom_magic(path) else None


def reader_for(path: Path) -> ImageReader:
    """Return the reader for an existing file, or DICOM for a folder (a series).

    Raises:
        ReadError: the path does not exist, is no regular file (a pipe, socket or device,
            which could block or never end), or its type is not supported.
    """
    if path.is_dir():
        return DICOM
    if not path.exists():
        raise ReadError(path, "file not found")
    if not path.is_file():
        raise ReadError(path, NOT_REGULAR)
    reader = detect_reader(path)
    if reader is None:
        kind = f"suffix '{path.suffix}'" if path.suffix else "file without suffix"
        raise ReadError(
            path,
            f"unsupported {kind}; supported: {', '.join(SUPPORTED_SUFFIXES)}, and DICOM files "
            "of any name (found by their 'DICM' marker, which this file lacks)",
        )
    return reader
