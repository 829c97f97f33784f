"""The one error type that every reader raises for bad input."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

LISTED = 10
"""Files an error message names at most; the count of the rest follows."""


class ReadError(ValueError):
    """A file (or DICOM series folder) could not be read as an image.

    Attributes:
        path: The file, folder or id that failed.
        reason: What is wrong with it, in words a user can act on.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type[ReadError], tuple[str | Path, str]]:
        # Keeps the error picklable (multiprocessing workers send errors back).
        return (type(self), (self.path, self.reason))


def listed(items: Sequence[str], sep: str = "; ") -> str:
    """The first ``LISTED`` of ``items`` joined by ``sep``, then the count of the rest."""
    more = f" (and {len(items) - LISTED} more)" if len(items) > LISTED else ""
    return sep.join(items[:LISTED]) + more


def no_image_found(unreadable: Sequence[str], ignored: Sequence[str] = ()) -> str:
    """Why no image came out of a folder: each unreadable file with its reason, and the files
    of a type no reader takes (each list as ``listed`` shows it)."""
    text = "no readable image found"
    if unreadable:
        text += f"; {len(unreadable)} unreadable file(s): {listed(unreadable)}"
    if ignored:
        text += f"; {len(ignored)} file(s) of a type no reader takes: {listed(ignored, ', ')}"
    return text
