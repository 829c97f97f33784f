"""Fixtures for the reader tests: writers of small synthetic DICOM files, and of a PNG bomb."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

DicomWriter = Callable[..., Path]


def png_header_bomb(path: Path, width: int, height: int) -> Path:
    """A valid 8-bit grey PNG of ``width`` x ``height`` black pixels, compressed row by row
    (a 12,000 x 12,000 one is about 140 KB and never held in memory here)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def _write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    series_uid: str = "1.2.826.0.1.3680043.2.1125.1",
    position: Sequence[float] | None = (0.0, 0.0, 0.0),
    orientation: Sequence[float] | None = (1, 0, 0, 0, 1, 0),
    instance: int | None = 1,
    slope: float | None = None,
    intercept: float | None = None,
    transfer_syntax: str | None = None,
    encapsulated: bytes | None = None,
    **extra: Any,
) -> Path:
    """Write an MR DICOM file with unsigned/signed 16-bit pixels (frames first if 3D).

    `encapsulated` replaces the pixel data by one compressed fragment (for a
    compressed `transfer_syntax`); only the headers then describe `pixels`.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    pixels = np.asarray(pixels)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "MR"
    if instance is not None:
        ds.InstanceNumber = instance
    if position is not None:
        ds.ImagePositionPatient = [float(v) for v in position]
    if orientation is not None:
        ds.ImageOrientationPatient = [float(v) for v in orientation]
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    ds.PixelData = pixels.astype("<i2" if pixels.dtype.kind == "i" else "<u2").tobytes()
    if encapsulated is not None:
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([encapsulated])
        ds["PixelData"].VR = "OB"
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def write_dicom() -> DicomWriter:
    """Return a function writing one synthetic DICOM file (see `_write_dicom`)."""
    pytest.importorskip("pydicom")
    return _write_dicom


@pytest.fixture
def dicom_series(tmp_path: Path, write_dicom: DicomWriter) -> tuple[Path, np.ndarray]:
    """A 5-slice axial series written in shuffled file order, one file without suffix.

    Returns the folder and the volume expected in RAS: each stored (rows, cols) slice
    transposed and flipped in both axes (rows run posterior, columns left, as in a
    standard axial DICOM), slices ascending in z.
    """
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 4000, size=(6, 7, 5), dtype=np.uint16)
    folder = tmp_path / "patient1" / "series3"
    # File k holds slice order[k] at z = 3 * slice - 2: neither file names nor
    # instance numbers follow the position, so only position sorting gets it right.
    order = [2, 0, 4, 1, 3]
    names = ["a.dcm", "b.dcm", "IM0005", "d.dcm", "e.dcm"]
    for k, (name, j) in enumerate(zip(names, order)):
        write_dicom(folder / name, volume[:, :, j], position=(1.5, -2.0, 3.0 * j - 2), instance=5 - k)
    return folder, np.ascontiguousarray(volume.transpose(1, 0, 2)[::-1, ::-1], dtype=np.float32)
