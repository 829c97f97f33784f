"""Image readers: every supported file as float32 2D images with stable, readable ids.

One interface (`base.ImageReader`), one module per format, picked by suffix:

- 2D files (PNG, JPEG, TIFF, BMP) via Pillow, as float32 grayscale; multi-page TIFF
  is a stack (`pillow`).
- NIfTI via nibabel (`nifti`) and DICOM files and series folders via pydicom
  (`dicom`, any suffix with the 'DICM' marker), both in closest-canonical RAS
  orientation (`orient`); NumPy .npy / .npz (`npy`).

Volumes become 2D slices as a `SliceSpec` says. Every image has an id such as
``sub-01/T1w.nii.gz#axis2:85``, ``arrays.npz#key`` or ``patient1/series3#axis2:10``
that `resolve_id` reads back. Bad input raises `ReadError` naming the file, and so do:

- an image or volume over the pixel limit (`limits`: 2**27 elements by default,
  ``DEEPSSIM_MAX_PIXELS`` or ``deepssim --max-pixels N``), checked from its header before
  anything is decoded, so that a decompression bomb costs no memory; reading with N threads
  holds at most about N files of that size at once;
- an image or volume slice holding NaN or infinite values.

Scans follow symbolic links (each real folder once) and list what they leave out. Image
paths listed in a file (pair files) must stay inside their root folder (`ids.outside_root`),
and every CSV input is read as UTF-8 with or without a byte-order mark (`tables`).
"""

from __future__ import annotations

from .errors import ReadError
from .ids import resolve_id
from .read import load_ref, read_image, read_slices, read_volume
from .registry import SUPPORTED_SUFFIXES
from .scan import ScanResult, fingerprint, iter_images, load_stack, scan
from .spec import ImageRef, SliceSpec

__all__ = [
    "SUPPORTED_SUFFIXES",
    "ImageRef",
    "ReadError",
    "ScanResult",
    "SliceSpec",
    "fingerprint",
    "iter_images",
    "load_ref",
    "load_stack",
    "read_image",
    "read_slices",
    "read_volume",
    "resolve_id",
    "scan",
]
