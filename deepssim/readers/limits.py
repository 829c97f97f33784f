"""The one limit on the size of what the readers decode: a guard against decompression bombs.

A 140 KB PNG can declare 12,000 x 12,000 pixels and a few bytes of .npy header can declare
gigabytes. Every reader checks the element count of an image or volume (pixels, voxels, or
array elements) from its header, before decoding, against ``max_pixels()``:

- default ``DEFAULT_MAX_PIXELS`` (2**27 = 134,217,728: a 512 x 512 x 512 volume passes, a
  12,000 x 12,000 image does not);
- ``DEEPSSIM_MAX_PIXELS=N`` in the environment, or ``deepssim --max-pixels N <command>``,
  or ``set_max_pixels(N)`` in Python (which wins over the environment).

A file over the limit is a `ReadError` naming it, its size, the limit and how to raise it,
so a folder scan lists it among the unreadable files and ``--skip-unreadable`` skips it.
Memory: each reading thread decodes one file at a time, so the decoded data in flight is
at most about ``workers x limit`` elements (float32: 4 bytes each, 512 MiB per thread at the
default) plus the slices already cut and waiting to be used.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from .errors import ReadError

MAX_PIXELS_ENV = "DEEPSSIM_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 2**27

_override: int | None = None


def parse_max_pixels(text: str | int) -> int:
    """``text`` as a pixel limit: a whole number >= 1 (``_`` and ``,`` separators allowed).

    Raises:
        ValueError: anything else.
    """
    cleaned = str(text).strip().replace("_", "").replace(",", "")
    try:
        value = int(cleaned)
    except ValueError:
        raise ValueError(f"the pixel limit must be a whole number of pixels, got {text!r}") from None
    if value < 1:
        raise ValueError(f"the pixel limit must be >= 1, got {text!r}")
    return value


def max_pixels() -> int:
    """The largest element count a reader decodes: ``set_max_pixels``, else
    ``$DEEPSSIM_MAX_PIXELS``, else ``DEFAULT_MAX_PIXELS``.

    Raises:
        ValueError: ``$DEEPSSIM_MAX_PIXELS`` is not a whole number >= 1 (naming it).
    """
    if _override is not None:
        return _override
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        return parse_max_pixels(text)
    except ValueError as exc:
        raise ValueError(f"{MAX_PIXELS_ENV}: {exc}") from None


def set_max_pixels(limit: int | None) -> None:
    """Set the limit for this process (None: back to the environment or the default).

    Raises:
        ValueError: ``limit`` is below 1.
    """
    global _override
    _override = None if limit is None else parse_max_pixels(limit)


def check_pixels(shape: Sequence[int], where: str | Path) -> None:
    """Raise ReadError unless an image or volume of ``shape`` is within ``max_pixels()``."""
    limit = max_pixels()
    count = math.prod(int(d) for d in shape)
    if count > limit:
        size = " x ".join(str(int(d)) for d in shape)
        raise ReadError(
            where,
            f"{size} = {count:,} pixels is over the limit of {limit:,} (a guard against "
            f"decompression bombs); if the file is trusted, raise the limit with "
            f"'deepssim --max-pixels N ...' or {MAX_PIXELS_ENV}=N",
        )
