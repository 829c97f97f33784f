"""DICOM files and series folders, read with pydicom.

- A series (files in one folder sharing a SeriesInstanceUID) is one volume, slices
  stacked along axis 2 in the order of ImagePositionPatient projected on the slice
  normal (row x column direction of ImageOrientationPatient), ascending, which is
  inferior -> superior for axial slices; InstanceNumber when positions are missing.
- Each slice keeps its stored (rows, columns) layout and gets its own
  RescaleSlope / RescaleIntercept (or Modality LUT) applied, so values are in real units.
- A series of one file is a 2D image named by its file; a multi-frame file is a
  volume with the frames along axis 2 (in stored frame order). Colour images become
  luminance; MONOCHROME1 images keep their stored values (not inverted).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from .base import ImageReader, Item
from .errors import ReadError
from .pixels import as_image, image_shape, luminance

SUFFIXES = (".dcm", ".dicom")
#: SeriesInstanceUIDs (and any DICOM UID) are digits and dots, which lets an id like
#: ``folder/1.2.840.113619.2.5`` name one series of a folder.
UID_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)*")
_MAGIC_OFFSET = 128


def has_dicom_magic(path: Path) -> bool:
    """Return True when `path` has the 'DICM' marker after the 128-byte preamble."""
    try:
        with path.open("rb") as fh:
            fh.seek(_MAGIC_OFFSET)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _pydicom(path: Path) -> ModuleType:
    """Import pydicom on first use, as it is only needed for DICOM files."""
    try:
        import pydicom
    except ImportError:
        raise ReadError(path, "reading DICOM files needs pydicom: pip install pydicom") from None
    return pydicom


def _dcmread(path: Path, pixels: bool) -> Any:
    """Read one file; without `pixels` stop before the pixel data (a header scan)."""
    pydicom = _pydicom(path)
    if not path.is_file():
        raise ReadError(path, "file not found")
    try:
        # defer_size leaves the pixel data on disk until a slice is decoded.
        return pydicom.dcmread(path, stop_before_pixels=not pixels, defer_size="64 KB")
    except Exception as exc:
        raise ReadError(path, f"not a readable DICOM file: {exc}") from exc


def _frames(ds: Any) -> int:
    return int(ds.get("NumberOfFrames") or 1)


def _shape(ds: Any, path: Path) -> tuple[int, ...]:
    """Shape that `_pixels` will return for one file: (rows, cols[, frames])."""
    if "Rows" not in ds or "Columns" not in ds:
        raise ReadError(path, "DICOM file without image pixels (no Rows/Columns)")
    shape = (int(ds.Rows), int(ds.Columns)) + ((_frames(ds),) if _frames(ds) > 1 else ())
    return image_shape(shape, path)


def _decoder_hint(ds: Any) -> str | None:
    """Say which package to install when compressed pixels have no decoder, else None."""
    try:
        syntax = ds.file_meta.TransferSyntaxUID
        if not syntax.is_compressed:
            return None
    except (AttributeError, ValueError):
        return None
    try:
        from pydicom.pixels import get_decoder  # pydicom >= 3

        decoder = get_decoder(syntax)
        if decoder.is_available:
            return None
        needs = "; ".join(decoder.missing_dependencies) or "a pydicom pixel-data plugin"
    except Exception:  # pydicom 2.x, or a transfer syntax pydicom has no decoder for
        needs = "pylibjpeg with pylibjpeg-libjpeg / pylibjpeg-openjpeg, or python-gdcm"
    return f"pixel data is compressed ({syntax.name}) and no installed decoder reads it; install one of: {needs}"


def _pixels(ds: Any, path: Path) -> np.ndarray:
    """Decode one file to float32 (rows, cols[, frames]) in real-world units."""
    if "PixelData" not in ds:
        raise ReadError(path, "DICOM file has no pixel data (not an image)")
    try:
        array = ds.pixel_array
    except Exception as exc:
        raise ReadError(path, _decoder_hint(ds) or f"cannot decode pixel data: {exc}") from exc
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        array = luminance(array)  # pydicom already converted YBR to RGB
    else:
        try:
            array = _modality_lut(array, ds)
        except Exception as exc:
            raise ReadError(path, f"cannot apply RescaleSlope/Intercept or Modality LUT: {exc}") from exc
        if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
            # MONOCHROME1 shows low values bright; negate so that bright is high in every
            # file (a fixed map, so the slices of a series stay comparable).
            array = -np.asarray(array, dtype=np.float64)
    if _frames(ds) > 1:
        array = np.moveaxis(array, 0, -1)  # frames go to axis 2, like a series
    return as_image(array, path)


def _modality_lut(array: np.ndarray, ds: Any) -> np.ndarray:
    """Apply RescaleSlope / RescaleIntercept or a Modality LUT Sequence."""
    try:
        from pydicom.pixels import apply_modality_lut  # pydicom >= 3
    except ImportError:
        from pydicom.pixel_data_handlers.util import apply_modality_lut
    return apply_modality_lut(array, ds)


def _vector(ds: Any, keyword: str, size: int) -> np.ndarray | None:
    """Return a numeric multi-valued tag, or None when missing or malformed."""
    value = ds.get(keyword)
    try:
        vector = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return vector if vector.shape == (size,) and np.isfinite(vector).all() else None


def _ordered(series: list[tuple[Path, Any]], where: Path) -> list[tuple[Path, Any]]:
    """Sort the files of one series into slice order (see module docstring).

    Raises:
        ReadError: mixed sizes or orientations, or repeated positions (a 4D series).
    """
    if any(_frames(ds) > 1 for _, ds in series):
        raise ReadError(where, "series mixes multi-frame files with others, cannot stack it")
    sizes = {(ds.get("Rows"), ds.get("Columns")) for _, ds in series}
    if len(sizes) > 1:
        raise ReadError(where, f"slices differ in size {sorted(sizes)}, cannot stack them")
    orientations = [_vector(ds, "ImageOrientationPatient", 6) for _, ds in series]
    positions = [_vector(ds, "ImagePositionPatient", 3) for _, ds in series]
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
    return [series[i] for i in order]


class FolderProbe(NamedTuple):
    """What a folder of DICOM files holds."""

    items: list[Item]
    errors: list[ReadError]
    not_images: list[Path]


def dicom_files(folder: Path) -> list[Path]:
    """Return the DICOM files directly inside `folder`, by suffix or 'DICM' magic, sorted."""
    from .registry import detect_reader  # the registry owns the suffix rules

    return sorted(
        path
        for path in folder.iterdir()
        if not path.name.startswith(".") and path.is_file() and isinstance(detect_reader(path), DicomReader)
    )


class DicomReader(ImageReader):
    """Single DICOM files and series folders."""

    name = "DICOM"
    suffixes = SUFFIXES
    default_axis = 2

    def probe(self, path: Path) -> list[Item]:
        if path.is_dir():
            found = self.probe_folder(path, dicom_files(path))
            # Bad files beside good series are a scan's to report; here only the
            # absence of any image is an error.
            if not found.items:
                raise found.errors[0] if found.errors else ReadError(path, "folder holds no DICOM images")
            return found.items
        return [Item(path, None, _shape(_dcmread(path, pixels=False), path))]

    def probe_folder(self, folder: Path, files: Iterable[Path]) -> FolderProbe:
        """Group a folder's DICOM files into items, collecting failures instead of raising.

        Items come sorted by id (lone files by name, series by UID); DICOM objects
        that hold no image (DICOMDIR, reports) are listed apart, not as errors.
        """
        headers, errors = self._headers(files, pixels=False)
        volumes, lone, not_images = _group(headers)
        items = []
        for path, ds in lone:
            try:
                items.append(Item(path, None, _shape(ds, path)))
            except ReadError as exc:
                errors.append(exc)
        for uid, series in volumes.items():
            member = uid if len(volumes) > 1 else None
            where = folder / uid if member else folder
            try:
                ordered = _ordered(series, where)
                rows, cols = _shape(ordered[0][1], ordered[0][0])
                items.append(Item(folder, member, (rows, cols, len(ordered))))
            except ReadError as exc:
                errors.append(exc)
        return FolderProbe(items, errors, not_images)

    def read(self, path: Path, member: str | None = None) -> np.ndarray:
        if not path.is_dir():
            if member is not None:
                raise ReadError(path, f"a DICOM file has no series member {member!r}")
            return _pixels(_dcmread(path, pixels=True), path)
        headers, _ = self._headers(dicom_files(path), pixels=True)  # scan reports bad files
        volumes, _, _ = _group(headers)
        if member is None and len(volumes) != 1:
            uids = ", ".join(sorted(volumes)) or "none"
            raise ReadError(path, f"folder holds {len(volumes)} multi-file DICOM series ({uids}); name one as '<folder>/<SeriesInstanceUID>'")
        if member is not None and member not in volumes:
            raise ReadError(path / member, "no multi-file DICOM series with this SeriesInstanceUID in the folder")
        where = path / member if member else path
        series = _ordered(volumes[member] if member else next(iter(volumes.values())), where)
        return np.stack([_pixels(ds, file) for file, ds in series], axis=2)

    @staticmethod
    def _headers(files: Iterable[Path], pixels: bool) -> tuple[list[tuple[Path, Any]], list[ReadError]]:
        headers, errors = [], []
        for file in files:
            try:
                headers.append((file, _dcmread(file, pixels=pixels)))
            except ReadError as exc:
                errors.append(exc)
        return headers, errors


def _group(
    headers: list[tuple[Path, Any]],
) -> tuple[dict[str, list[tuple[Path, Any]]], list[tuple[Path, Any]], list[Path]]:
    """Split files into multi-file series (by SeriesInstanceUID, sorted), lone image
    files, and files that hold no image at all."""
    by_uid: dict[str, list[tuple[Path, Any]]] = {}
    lone, not_images = [], []
    for path, ds in headers:
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if "Rows" not in ds:
            not_images.append(path)
        elif UID_PATTERN.fullmatch(uid):
            by_uid.setdefault(uid, []).append((path, ds))
        else:
            lone.append((path, ds))  # without a usable UID a file cannot join a series
    volumes = {uid: files for uid, files in sorted(by_uid.items()) if len(files) > 1}
    lone += [files[0] for files in by_uid.values() if len(files) == 1]
    return volumes, sorted(lone, key=lambda pair: pair[0]), not_images
