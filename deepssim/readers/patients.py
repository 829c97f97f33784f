"""Which patient an image shows, as far as its id and its file's header say.

Three sources of knowledge, each used by ``deepssim.auditing.patients`` to count patients:

- the DICOM PatientID, read with the header at scan time (``ImageRef.patient``);
- a BIDS subject, the ``sub-<label>`` component of the image's path (``bids_subject``);
- the scan an image was sliced from: the slices of one NIfTI or DICOM volume show one patient
  (``scan_name``).

A user's own rule is a regular expression searched in the id whose first group names the
patient (``compile_group_by``, ``group_key``), as ``deepssim benchmark build --group-by``
takes it.
"""

from __future__ import annotations

import re

from .ids import slice_id
from .registry import DICOM, detect_reader
from .spec import ImageRef

BIDS_SUBJECT = re.compile(r"(?:^|/)(sub-[A-Za-z0-9]+)(?=/|_)")
"""A BIDS subject in an id: a ``sub-<label>`` folder (``sub-01/anat/...``) or file name prefix
(``sub-01_T1w.nii.gz``); the label is letters and digits, as BIDS defines it."""


def compile_group_by(pattern: str, flag: str = "--group-by") -> re.Pattern[str]:
    """``pattern`` compiled, for ``group_key``: it must compile and have a group, whose text
    names the patient.

    Raises:
        ValueError: one line naming ``flag``, the pattern and the problem.
    """
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{flag}: {pattern!r} is not a valid regular expression: {exc}") from None
    if not compiled.groups:
        raise ValueError(f"{flag}: {pattern!r} has no group; put the part of the id that names the patient "
                         "in parentheses, such as '^(sub-[0-9]+)/' or '^([^/]+)/'")
    return compiled


def group_key(pattern: re.Pattern[str], image_id: str) -> str | None:
    """The first group of ``pattern`` searched in ``image_id`` (the whole match when the pattern
    has no group, or that group took no part); None when it does not match."""
    m = pattern.search(image_id)
    if m is None:
        return None
    return m.group(1) if pattern.groups and m.group(1) is not None else m.group(0)


def bids_subject(image_id: str) -> str | None:
    """The BIDS subject (``sub-01``) an id names, or None (the first one when several)."""
    m = BIDS_SUBJECT.search(image_id)
    return m.group(1) if m else None


def scan_name(image_id: str, ref: ImageRef) -> str:
    """The name of the scan an image comes from: for a slice of a NIfTI or DICOM volume, its
    id without the slice (``sub-01/T1w.nii.gz``, ``patient1/series3``), as all its slices show
    one patient; for anything else (a 2D file, a slice of an npy stack or multi-page TIFF,
    which may hold unrelated images), the id itself.

    ``image_id`` is the id the image goes by (a scan of several sources prefixes it).
    """
    if ref.axis is None or ref.index is None:
        return image_id
    fragment = slice_id("", ref.axis, ref.index)
    if not image_id.endswith(fragment):
        return image_id
    reader = DICOM if ref.path.is_dir() else detect_reader(ref.path)
    return image_id[: -len(fragment)] if reader is not None and reader.volume_is_scan else image_id
