"""NumPy arrays: ``.npy`` (one array) and ``.npz`` (one item per member array).

A 2D array is an image. A 3D array whose last axis has 3 or 4 entries, (H, W, 3) or
(H, W, 4), is a colour image: its luminance 0.299 R + 0.587 G + 0.114 B (the 4th
channel, alpha, ignored). Any other 3D array is a stack of images along axis 0 (the
layout ``np.stack(images)`` gives); so a stack of 3 or 4 images must be saved with the
images first, shape (3, H, W), and its W must not be 3 or 4. Headers are parsed without
loading the data, so a scan of large arrays stays cheap, and an array is checked against
the pixel limit (``limits``, counting every element) from its header before it is loaded.
Arrays are loaded with ``allow_pickle=False``: opening an array file must never run code.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import IO

import numpy as np

from .base import ImageReader, Item
from .errors import ReadError
from .pixels import as_image, check_dtype, image_shape, luminance

_NPY = ".npy"


def _header(fh: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    """Read the shape and dtype from the header of an open .npy stream."""
    version = np.lib.format.read_magic(fh)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _fortran, dtype = read(fh)
    return tuple(shape), dtype


def _dims(shape: tuple[int, ...], dtype: np.dtype, where: str | Path) -> tuple[tuple[int, ...], bool]:
    """Return the checked stored shape and whether its last axis holds RGB(A) channels."""
    check_dtype(dtype, where)
    dims = image_shape(shape, where)
    return dims, len(dims) == 3 and dims[-1] in (3, 4)  # see module docstring


def _item(path: Path, member: str | None, shape: tuple[int, ...], dtype: np.dtype) -> Item:
    dims, colour = _dims(shape, dtype, f"{path}#{member}" if member is not None else path)
    return Item(path, member, dims[:2] if colour else dims)


def _image(array: np.ndarray, where: str | Path) -> np.ndarray:
    """Return a loaded array as a float32 image or stack, colour as luminance."""
    dims, colour = _dims(array.shape, array.dtype, where)
    return as_image(luminance(array.reshape(dims)) if colour else array, where)


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise ReadError(path, "file not found")


class NpyReader(ImageReader):
    """`.npy` files: a 2D image, an (H, W, 3|4) colour image or a 3D stack."""

    name = "NumPy .npy"
    suffixes = (_NPY,)
    default_axis = 0

    def probe(self, path: Path) -> list[Item]:
        _require_file(path)
        try:
            with path.open("rb") as fh:
                shape, dtype = _header(fh)
                expected = fh.tell() + math.prod(shape) * dtype.itemsize
        except Exception as exc:
            raise ReadError(path, f"not a readable .npy file: {exc}") from exc
        item = _item(path, None, shape, dtype)  # dims and pixel limit before the size
        if path.stat().st_size < expected:
            raise ReadError(path, "truncated .npy file (data shorter than its header says)")
        return [item]

    def read(self, path: Path, member: str | None = None) -> np.ndarray:
        _require_file(path)
        if member is not None:
            raise ReadError(path, f"a .npy file has no member {member!r}")
        self.probe(path)  # the header's checks, before the data is allocated
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise ReadError(path, f"not a readable .npy file: {exc}") from exc
        return _image(array, path)


class NpzReader(ImageReader):
    """`.npz` archives; each member array is an item named `archive.npz#key`."""

    name = "NumPy .npz"
    suffixes = (".npz",)
    default_axis = 0
    fragment_member = True

    def probe(self, path: Path) -> list[Item]:
        _require_file(path)
        items = []
        try:
            with zipfile.ZipFile(path) as archive:
                for name in archive.namelist():
                    if name.endswith(_NPY):
                        with archive.open(name) as fh:
                            items.append(_item(path, name[: -len(_NPY)], *_header(fh)))
        except ReadError:
            raise
        except Exception as exc:
            raise ReadError(path, f"not a readable .npz file: {exc}") from exc
        if not items:
            raise ReadError(path, "npz archive holds no arrays")
        return items

    def read(self, path: Path, member: str | None = None) -> np.ndarray:
        _require_file(path)
        try:
            with np.load(path, allow_pickle=False) as archive:
                key = self._member(path, archive.files, member)
                with archive.zip.open(f"{key}{_NPY}") as fh:  # the header's checks, before loading
                    _item(path, key, *_header(fh))
                array = archive[key]
        except ReadError:
            raise
        except Exception as exc:
            raise ReadError(path, f"not a readable .npz file: {exc}") from exc
        return _image(array, f"{path}#{key}")

    @staticmethod
    def _member(path: Path, keys: list[str], member: str | None) -> str:
        """Pick the requested member, or the only one when none is named."""
        if member is None:
            if len(keys) == 1:
                return keys[0]
            raise ReadError(path, f"npz holds {len(keys)} arrays {keys}; name one as '{path.name}#KEY'")
        if member not in keys:
            raise ReadError(path, f"npz has no array {member!r} (it has {keys})")
        return member
