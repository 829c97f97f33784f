"""2D image files (PNG, JPEG, TIFF, BMP) read with Pillow, as float32 grayscale.

Mode handling (alpha is always ignored):

- ``L``, ``LA``: the grey band as is. ``1``: 0 / 255.
- ``I;16*``, ``I``, ``F``: kept at full precision (``I`` beyond 2**24 loses float32 digits).
- ``RGB``, ``RGBA``, ``P`` (via its palette) and other colour modes: luminance
  0.299 R + 0.587 G + 0.114 B computed in float, not Pillow's 8-bit ``convert("L")``.

16-bit PNG with colour or alpha (colour types 2, 4 and 6: RGB, grey + alpha, RGBA) is
decoded by Pillow at 8 bits per channel: reading one warns.
A multi-page TIFF is a stack with the pages along axis 0; other multi-frame files
(animated PNG, MPO JPEG) give their first frame.

Size: the pixels of every page are counted from the headers and checked against the readers'
limit (``limits``) before anything is decoded. Pillow's own decompression-bomb check is
turned off (``Image.MAX_IMAGE_PIXELS = None``), as that one limit replaces it: Pillow would
otherwise warn about images within the limit and refuse others in its own words.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from .base import ImageReader, Item
from .errors import ReadError
from .pixels import as_image, image_shape, luminance

# The readers' limit (``limits.max_pixels``) is checked on every file before decoding.
Image.MAX_IMAGE_PIXELS = None

_GREY_MODES = ("L", "LA", "La")
_RGB_MODES = ("RGB", "RGBA", "RGBX")


@contextmanager
def _opened(path: Path) -> Iterator[Image.Image]:
    """Open an image lazily (header only), turning Pillow's failures into ReadError."""
    try:
        img = Image.open(path)
    except FileNotFoundError:
        raise ReadError(path, "file not found") from None
    except UnidentifiedImageError:
        raise ReadError(path, "not an image file Pillow can identify (corrupt or wrong suffix)") from None
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, struct.error...)
        raise ReadError(path, f"cannot open image: {exc}") from exc
    with img:
        yield img


def _is_stack(img: Image.Image) -> bool:
    """True for a multi-page TIFF (n_frames only walks the page directories)."""
    return img.format == "TIFF" and getattr(img, "n_frames", 1) > 1


def _frames(img: Image.Image) -> Iterator[Image.Image]:
    """Yield each page of a stack, else the image itself (Pillow reuses one object)."""
    if _is_stack(img):
        yield from ImageSequence.Iterator(img)
    else:
        yield img


def _grey(img: Image.Image) -> np.ndarray:
    """Decode one frame to a 2D float32 grayscale array (see module docstring)."""
    mode = img.mode
    if mode == "1":
        return np.asarray(img.convert("L"), dtype=np.float32)
    if mode in _GREY_MODES:
        return np.asarray(img.getchannel(0), dtype=np.float32)
    if mode.startswith("I") or mode == "F":
        return np.asarray(img).astype(np.float32)
    if mode in _RGB_MODES:
        return luminance(np.asarray(img))
    # Palette, CMYK, YCbCr...: let Pillow map to RGB exactly, then weigh in float.
    return luminance(np.asarray(img.convert("RGBA" if mode == "PA" else "RGB")))


#: PNG colour types that Pillow decodes at 8 bits per channel when 16-bit.
_PNG_8BIT_TYPES = {2: "RGB", 4: "grey+alpha", 6: "RGBA"}


def _warn_if_16bit_png_truncated(img: Image.Image, path: Path) -> None:
    """Pillow decodes 16-bit RGB, grey+alpha and RGBA PNG at 8 bits per channel; say so."""
    # IHDR: bit depth at byte 24, colour type at byte 25.
    if img.format != "PNG":
        return
    with open(path, "rb") as fh:
        header = fh.read(26)
    if len(header) == 26 and header[24] == 16 and header[25] in _PNG_8BIT_TYPES:
        warnings.warn(
            f"{path}: 16-bit {_PNG_8BIT_TYPES[header[25]]} PNG read at 8 bits per channel (a Pillow "
            "limitation); save it as 16-bit grayscale PNG without alpha, TIFF or .npy to keep full precision",
            stacklevel=3,
        )


def _shape(img: Image.Image, path: Path) -> tuple[int, ...]:
    """(H, W), or (pages, H, W) for a multi-page TIFF, from the headers; checked against the
    pixel limit.

    Raises:
        ReadError: pages of different sizes, a corrupt page directory, or too many pixels.
    """
    try:
        sizes = [frame.size for frame in _frames(img)]
    except Exception as exc:
        raise ReadError(path, f"corrupt multi-page TIFF: {exc}") from exc
    if len(set(sizes)) > 1:
        raise ReadError(path, f"TIFF pages differ in size {sorted(set(sizes))}, cannot stack them")
    width, height = sizes[0]
    return image_shape((len(sizes), height, width) if len(sizes) > 1 else (height, width), path)


class PillowReader(ImageReader):
    """PNG, JPEG, TIFF and BMP files; multi-page TIFF as a (pages, H, W) stack."""

    name = "image"
    suffixes = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
    default_axis = 0

    def probe(self, path: Path) -> list[Item]:
        with _opened(path) as img:
            return [Item(path, None, _shape(img, path))]

    def read(self, path: Path, member: str | None = None) -> np.ndarray:
        if member is not None:
            raise ReadError(path, f"an image file has no member {member!r}")
        with _opened(path) as img:
            _shape(img, path)  # sizes and pixel limit, from the headers, before decoding
            _warn_if_16bit_png_truncated(img, path)
            try:
                frames = [_grey(frame) for frame in _frames(img)]
            except Exception as exc:
                raise ReadError(path, f"corrupt or truncated image: {exc}") from exc
        if len({frame.shape for frame in frames}) > 1:
            raise ReadError(path, "TIFF pages differ in size, cannot stack them")
        return as_image(np.stack(frames) if len(frames) > 1 else frames[0], path)
