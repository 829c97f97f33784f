"""DICOM files and series folders, read with pydicom.

- A series (files in one folder sharing a SeriesInstanceUID) is one volume. Its
  slices are ordered by ImagePositionPatient projected on the slice normal (row x
  column direction of ImageOrientationPatient), or by InstanceNumber when positions
  are missing. Every file of the folder must be readable: an unreadable one could be a
  slice of the series, so the series is refused rather than stacked with a hole; a gap
  in the slice positions (a file missing mid-series) only warns.
- Like NIfTI, volumes come in closest-canonical RAS orientation (see `orient`), from
  the voxel-to-patient affine built of ImageOrientationPatient, PixelSpacing and the
  positions of the first and last slice. A single-frame file is reoriented as a
  one-slice volume and squeezed to 2D, so it equals the matching slice of its series
  (a sagittal file gives a (y, z) image, a coronal one (x, z)).
- Without ImageOrientationPatient (or, for a series, ImagePositionPatient) the stored
  layout is kept: (rows, columns) with slices stacked along axis 2. A multi-frame file
  also keeps it, with the frames along axis 2 in stored frame order, as its geometry
  lives in per-frame functional groups that are not read here.
- Each slice gets its own RescaleSlope / RescaleIntercept (or Modality LUT) applied,
  so values are in real units. A series of one file is a 2D image named by its file.
  Colour images become luminance; MONOCHROME1 images are negated, so that bright is
  high as in MONOCHROME2 (the stored range is not restored: values become <= 0).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from .base import ImageReader, Item
from .errors import ReadError
from .dicom_series import frames, order_series, orientation, warn_if_gaps
from .orient import canonical_shape, to_canonical
from .pixels import as_image, image_shape, luminance

SUFFIXES = (".dcm", ".dicom")
#: SeriesInstanceUIDs (and any DICOM UID) are digits and dots, which lets an id like
#: ``folder/1.2.840.113619.2.5`` name one series of a folder.
UID_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)*")
_MAGIC_OFFSET = 128


def has_dicom_magic(path: Path) -> bool:
    """Return True when `path` has the 'DICM' marker after the 128-byte preamble (never for
    anything but a regular file: opening a pipe would wait for a writer)."""
    if not path.is_file():
        return False
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


def _shape(ds: Any, path: Path) -> tuple[int, ...]:
    """Shape that `_pixels` will return for one file: (rows, cols[, frames])."""
    if "Rows" not in ds or "Columns" not in ds:
        raise ReadError(path, "DICOM file without image pixels (no Rows/Columns)")
    try:
        shape = (int(ds.Rows), int(ds.Columns)) + ((frames(ds),) if frames(ds) > 1 else ())
    except (TypeError, ValueError) as exc:  # a hostile or damaged header
        raise ReadError(path, f"unusable Rows / Columns / NumberOfFrames: {exc}") from None
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
    _shape(ds, path)  # the pixel limit, from the header, before decoding
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
    if frames(ds) > 1:
        array = np.moveaxis(array, 0, -1)  # frames go to axis 2, like a series
    return as_image(array, path)


def _modality_lut(array: np.ndarray, ds: Any) -> np.ndarray:
    """Apply RescaleSlope / RescaleIntercept or a Modality LUT Sequence."""
    try:
        from pydicom.pixels import apply_modality_lut  # pydicom >= 3
    except ImportError:
        from pydicom.pixel_data_handlers.util import apply_modality_lut
    return apply_modality_lut(array, ds)


def patient_id(ds: Any) -> str | None:
    """The file's PatientID (0010,0020), stripped; None when absent or empty (the header is
    read at scan time anyway, so knowing the patient costs no second read)."""
    try:
        value = str(ds.get("PatientID", "") or "").strip()
    except Exception:  # a damaged element names no patient
        return None
    return value or None


class FolderProbe(NamedTuple):
    """What a folder of DICOM files holds."""

    items: list[Item]
    errors: list[ReadError]
    not_images: list[Path]


def _file_shape(path: Path, ds: Any) -> tuple[int, ...]:
    """Shape that `read` returns for one file, from its header."""
    return canonical_shape(_shape(ds, path), orientation([(path, ds)], path), path)


def _no_dicom(folder: Path) -> ReadError:
    return ReadError(folder, "is a folder without DICOM files; expected an image file or a DICOM series folder")


def _incomplete(failed: list[ReadError], where: Path) -> ReadError:
    """The error for a series whose folder holds files that cannot be read."""
    names = ", ".join(Path(error.path).name for error in failed)
    return ReadError(
        where,
        f"cannot read {len(failed)} DICOM file(s) of the folder: {names} ({failed[0].reason}); "
        "one may be a slice of this series, so it is not stacked without them",
    )


class DicomReader(ImageReader):
    """Single DICOM files and series folders."""

    name = "DICOM"
    suffixes = SUFFIXES
    default_axis = 2
    volume_is_scan = True

    def __init__(self, claims: Callable[[Path], bool] | None = None) -> None:
        """``claims(path)``: whether a file is this reader's; the registry passes its own
        rule (a suffix another reader claims wins over the 'DICM' marker). Default: a DICOM
        suffix or the marker."""
        self._claims = claims or (lambda path: path.name.lower().endswith(SUFFIXES) or has_dicom_magic(path))

    def files(self, folder: Path) -> list[Path]:
        """The DICOM files directly inside ``folder``, sorted."""
        return sorted(path for path in folder.iterdir()
                      if not path.name.startswith(".") and path.is_file() and self._claims(path))

    def probe(self, path: Path) -> list[Item]:
        if path.is_dir():
            files = self.files(path)
            if not files:
                raise _no_dicom(path)
            found = self.probe_folder(path, files)
            # Bad files beside good items are a scan's to report; here only the
            # absence of any image is an error.
            if not found.items:
                raise found.errors[0] if found.errors else ReadError(path, "folder holds no DICOM images")
            return found.items
        ds = _dcmread(path, pixels=False)
        return [Item(path, None, _file_shape(path, ds), patient_id(ds))]

    def probe_folder(self, folder: Path, files: Iterable[Path]) -> FolderProbe:
        """Group a folder's DICOM files into items, collecting failures instead of raising.

        Items come sorted by id (lone files by name, series by UID); DICOM objects
        that hold no image (DICOMDIR, reports) are listed apart, not as errors.
        Any unreadable file fails every multi-file series of the folder.
        """
        headers, failed = self._headers(files, pixels=False)
        volumes, lone, not_images, broken = _group(headers)
        failed += broken
        items, errors = [], []
        for path, ds in lone:
            try:
                items.append(Item(path, None, _file_shape(path, ds), patient_id(ds)))
            except ReadError as exc:
                errors.append(exc)  # a lone file is no series' slice
        for uid, series in volumes.items():
            member = uid if len(volumes) > 1 else None
            where = folder / uid if member else folder
            try:
                if failed:
                    raise _incomplete(failed, where)
                files_in_order = order_series(series, where).files
                first, ds = files_in_order[0]
                stored = _shape(ds, first) + (len(files_in_order),)
                shape = canonical_shape(stored, orientation(files_in_order, where), where)
                items.append(Item(folder, member, shape, patient_id(ds)))
            except ReadError as exc:
                errors.append(exc)
        return FolderProbe(items, errors + failed, not_images)

    def read(self, path: Path, member: str | None = None) -> np.ndarray:
        if not path.is_dir():
            if member is not None:
                raise ReadError(path, f"a DICOM file has no series member {member!r}")
            ds = _dcmread(path, pixels=True)
            return to_canonical(_pixels(ds, path), orientation([(path, ds)], path), path)
        files = self.files(path)
        if not files:
            raise _no_dicom(path)
        headers, failed = self._headers(files, pixels=True)
        volumes, _, _, broken = _group(headers)
        where = path / member if member else path
        if failed + broken:
            raise _incomplete(failed + broken, where)
        if member is None and len(volumes) != 1:
            uids = ", ".join(sorted(volumes)) or "none"
            raise ReadError(path, f"folder holds {len(volumes)} multi-file DICOM series ({uids}); name one as '<folder>/<SeriesInstanceUID>'")
        if member is not None and member not in volumes:
            raise ReadError(where, "no multi-file DICOM series with this SeriesInstanceUID in the folder")
        series = order_series(volumes[member] if member else next(iter(volumes.values())), where)
        warn_if_gaps(series, where)
        first, ds = series.files[0]
        image_shape(_shape(ds, first) + (len(series.files),), where)  # pixel limit, before decoding
        stack = np.stack([_pixels(ds, file) for file, ds in series.files], axis=2)
        return to_canonical(stack, orientation(series.files, where), where)

    @staticmethod
    def _headers(files: Iterable[Path], pixels: bool) -> tuple[list[tuple[Path, Any]], list[ReadError]]:
        headers, errors = [], []
        for file in files:
            try:
                headers.append((file, _dcmread(file, pixels=pixels)))
            except ReadError as exc:
                errors.append(exc)
        return headers, errors


def _is_image_class(ds: Any) -> bool:
    """True when the SOP class is an image storage class (MR Image Storage and so on)."""
    meta = getattr(ds, "file_meta", None)
    sop = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
    return "Image Storage" in str(getattr(sop, "name", ""))


def _group(
    headers: list[tuple[Path, Any]],
) -> tuple[dict[str, list[tuple[Path, Any]]], list[tuple[Path, Any]], list[Path], list[ReadError]]:
    """Split files into multi-file series (by SeriesInstanceUID, sorted), lone image
    files, files that hold no image at all, and image files without pixels (broken)."""
    by_uid: dict[str, list[tuple[Path, Any]]] = {}
    lone, not_images, broken = [], [], []
    for path, ds in headers:
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if "Rows" not in ds:
            if _is_image_class(ds):  # pydicom reads a truncated header without complaint
                broken.append(ReadError(path, "DICOM image file without Rows/Columns (truncated header?)"))
            else:
                not_images.append(path)
        elif UID_PATTERN.fullmatch(uid):
            by_uid.setdefault(uid, []).append((path, ds))
        else:
            lone.append((path, ds))  # without a usable UID a file cannot join a series
    volumes = {uid: files for uid, files in sorted(by_uid.items()) if len(files) > 1}
    lone += [files[0] for files in by_uid.values() if len(files) == 1]
    return volumes, sorted(lone, key=lambda pair: pair[0]), not_images, broken
