"""Image readers: every supported file as float32 2D images with stable, readable ids.

One interface (`base.ImageReader`), one module per format, picked by suffix:

- 2D files (PNG, JPEG, TIFF, BMP) via Pillow, as float32 grayscale; multi-page TIFF
  is a stack (`pillow`).
- NIfTI via nibabel (`nifti`) and DICOM files and series folders via pydicom
  (`dicom`, any suffix with the 'DICM' marker), both in closest-canonical RAS
  orientation (`orient`); NumPy .npy / .npz (`npy`).

Volumes become 2D slices as a `SliceSpec` says. Every image has an id such as
``sub-01/T1w.nii.gz#axis2:85``, ``arrays.npz#key`` or ``patient1/series3#axis2:10``
that `resolve_id` reads back. Bad input raises `ReadError` naming the file.
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
