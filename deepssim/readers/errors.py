"""The one error type that every reader raises for bad input."""

from __future__ import annotations

from pathlib import Path


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
