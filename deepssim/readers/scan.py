"""Finding every image under a folder, without stopping at the first bad file."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .base import ImageReader, Item
from .errors import ReadError, listed, no_image_found
from .ids import absolute, relative_name
from .read import load_refs
from .registry import DICOM, NOT_REGULAR, detect_reader
from .slicing import refs_for
from .spec import ImageRef, SliceSpec


@dataclass
class ScanResult:
    """The images found under `root`, and the files that could not be read.

    Attributes:
        refs: One ref per 2D image, sorted by relative path (then npz member order,
            then slice order).
        errors: One error per unreadable file or series, sorted by path.
        root: Absolute folder the ids are relative to.
        ignored: Relative paths of files skipped for an unsupported type, sorted.
        skipped_folders: Folders not walked, as ``relative/path: reason``, sorted: symbolic
            links to a folder that is scanned where it lies or was already scanned (a link
            loop, or a second link to one folder).
    """

    refs: list[ImageRef]
    errors: list[ReadError]
    root: Path
    ignored: list[str] = field(default_factory=list)
    skipped_folders: list[str] = field(default_factory=list)

    def load(
        self,
        refs: Sequence[ImageRef] | None = None,
        progress: bool = False,
        *,
        workers: int = 1,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> Iterator[tuple[ImageRef, np.ndarray]]:
        """Yield (ref, float32 image) for `refs` (default all), reading each file once;
        ``workers`` threads read ahead, ``transform`` is applied as read (``load_refs``).

        Raises:
            ReadError: a file fails to read now (for example truncated pixel data that
                a header-only scan cannot see), naming the file.
        """
        return load_refs(self.refs if refs is None else refs, progress, workers=workers, transform=transform)

    def require_images(self, skip_unreadable: bool = False) -> None:
        """Raise ReadError listing the unreadable files (unless ``skip_unreadable``), or when
        no image at all was found (listing every file skipped and why): what a command that
        needs the images does first."""
        reasons = [str(e) for e in self.errors]
        if not self.refs:  # every file skipped: each one and why
            raise ReadError(self.root, no_image_found(reasons, self.ignored))
        if reasons and not skip_unreadable:
            raise ReadError(self.root, f"{len(reasons)} unreadable file(s): {listed(reasons)}")


def iter_images(
    inputs: Sequence[str | Path], progress: bool = False, *, slices: SliceSpec = SliceSpec(),
    skip_unreadable: bool = False,
) -> Iterator[tuple[str, ImageRef, np.ndarray]]:
    """Every image under ``inputs`` (folders or files): ``(id, ref, float32 image)``, volumes
    sliced by ``slices``.

    With several inputs an id is prefixed by its input's name (``train/a.png``), so that ids
    stay distinct. Each input must hold images, and no unreadable file unless
    ``skip_unreadable`` (those found by the scan are then left out).

    Raises:
        ReadError: naming every unreadable file, or an input without any image.
    """
    for root in inputs:
        result = scan(root, slices, progress=progress)
        result.require_images(skip_unreadable)
        for ref, image in result.load(progress=progress):
            yield (f"{Path(root).name}/{ref.id}" if len(inputs) > 1 else ref.id), ref, image


def load_stack(
    inputs: Sequence[str | Path], transform: Callable[[np.ndarray], np.ndarray], progress: bool = False, *,
    slices: SliceSpec = SliceSpec(), skip_unreadable: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """``transform`` of every image under ``inputs``, stacked, and the ids (``iter_images``,
    with its ``slices`` and ``skip_unreadable``).

    ``transform`` must bring every image to one shape (a resize).
    """
    ids: list[str] = []
    arrays: list[np.ndarray] = []
    for image_id, _, image in iter_images(inputs, progress, slices=slices, skip_unreadable=skip_unreadable):
        ids.append(image_id)
        arrays.append(transform(image))
    return np.stack(arrays), ids


def fingerprint(images: np.ndarray, ids: Sequence[str]) -> str:
    """SHA-256 of the image ids and their pixels (a ``load_stack`` result): names a data set
    in the records of what was trained on it."""
    digest = hashlib.sha256()
    for image_id in ids:
        digest.update(image_id.encode() + b"\0")
    digest.update(np.ascontiguousarray(images).tobytes())
    return digest.hexdigest()


# A unit of work: one file with its reader, or a folder's DICOM files.
_Source = tuple[ImageReader, Path, list[Path]]


@dataclass
class _Found:
    """What a walk collects besides the sources: unsupported files, files that fail before
    any reader sees them (broken links, folders that cannot be listed), folders not walked."""

    ignored: list[Path] = field(default_factory=list)
    errors: list[ReadError] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _visible(names: list[str]) -> list[str]:
    return sorted(name for name in names if not name.startswith("."))  # hidden stay hidden


def _own_folders(root: Path) -> dict[str, Path]:
    """The real folders of the tree under ``root`` (symbolic links not followed), by real path."""
    owned: dict[str, Path] = {}
    for folder, dirnames, _ in os.walk(root):
        dirnames[:] = _visible(dirnames)
        owned[os.path.realpath(folder)] = Path(folder)
    return owned


def _folders(root: Path, found: _Found) -> Iterator[tuple[Path, list[str]]]:
    """Yield (folder, visible file names) under ``root``, following symbolic links to
    folders; each real folder is walked once. A link to a folder of the tree itself is left
    for the walk to reach where the folder lies (so ids do not depend on links), and a link
    to a folder already walked (a loop, or a second link) is not followed again: both are
    listed in ``found.skipped`` with the reason. A folder that cannot be listed is an error."""
    owned = _own_folders(root)
    walked = {os.path.realpath(root)}

    def unlisted(exc: OSError) -> None:
        found.errors.append(ReadError(exc.filename or root, f"cannot list the folder: {exc.strerror or exc}"))

    for folder, dirnames, filenames in os.walk(root, onerror=unlisted, followlinks=True):
        here = Path(folder)
        keep = []
        for name in _visible(dirnames):
            path = here / name
            real = os.path.realpath(path)
            link = path.is_symlink()
            if (link and real in owned) or real in walked:
                shown = ("the scanned folder itself" if owned.get(real) == root
                         else f"'{relative_name(owned[real], root)}' of this scan" if real in owned else real)
                reason = (f"symbolic link to {shown}, which is scanned once, where it lies (a link loop "
                          "or a second link)" if link else f"already scanned as {real} (reached again through a link)")
                found.skipped.append((path, reason))
            else:
                walked.add(real)
                keep.append(name)
        dirnames[:] = keep
        yield here, _visible(filenames)


def _broken_link(path: Path) -> ReadError:
    try:
        target = os.readlink(path)
    except OSError:  # pragma: no cover - the path was a link a moment ago
        target = "?"
    return ReadError(path, f"broken symbolic link to {target} (the target is missing, or links loop)")


def _sources(root: Path, found: _Found) -> list[_Source]:
    """List what to probe under `root` in walk order (see ``_folders``)."""
    if root.is_file():
        reader = detect_reader(root)
        if reader is None:
            found.ignored.append(root)
            return []
        return [(reader, root, [])]
    sources: list[_Source] = []
    for here, filenames in _folders(root, found):
        dicom_files = []
        for filename in filenames:
            path = here / filename
            reader = detect_reader(path)
            if path.is_symlink() and not path.exists():
                # Named when it could be an image (a supported suffix, or none as DICOM files often have).
                if reader is not None or not path.suffix:
                    found.errors.append(_broken_link(path))
                else:
                    found.ignored.append(path)
            elif reader is None:
                found.ignored.append(path)
            elif not path.is_file():
                found.errors.append(ReadError(path, NOT_REGULAR))  # opening a pipe could block
            elif reader is DICOM:
                dicom_files.append(path)  # series are grouped per folder below
            else:
                sources.append((reader, path, []))
        if dicom_files:
            sources.append((DICOM, here, dicom_files))
    return sources


def _probe(source: _Source, ignored: list[Path]) -> tuple[list[Item], list[ReadError]]:
    """Probe one source; DICOM objects without an image join `ignored`."""
    reader, path, dicom_files = source
    misnamed = [p for p in (path, *dicom_files) if not _utf8(p)]
    if misnamed:
        return [], [ReadError(os.fsencode(p).decode("utf-8", "backslashreplace"),
                              "its name is not valid UTF-8 (image ids and the files that list them are "
                              "UTF-8 text): rename it") for p in misnamed]
    if dicom_files:
        found = DICOM.probe_folder(path, dicom_files)
        ignored += found.not_images
        return found.items, found.errors
    try:
        return reader.probe(path), []
    except ReadError as exc:
        return [], [exc]


def _utf8(path: Path) -> bool:
    """Whether ``path`` is valid UTF-8 (a name of other bytes decodes to lone surrogates)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _base(root: Path, items: list[Item]) -> Path:
    """Return the folder ids are relative to: `root`, or its parent when `root` is a
    file or itself one DICOM series, so that the id names it (never '.')."""
    if root.is_file() or any(item.path == root and item.member is None for item in items):
        return root.parent
    return root


def scan(root: str | Path, spec: SliceSpec = SliceSpec(), progress: bool = False) -> ScanResult:
    """Find all supported images under `root` (recursively; dot-files are skipped).

    Symbolic links are followed: a linked file is read, a linked folder walked, each real
    folder once (the others are listed in ``skipped_folders``, so a link loop ends). A broken
    link that could be an image is an unreadable file, named.

    Only headers are read, except for volumes when `spec.skip_empty` needs the data.
    Unreadable files become entries of `errors` instead of stopping the scan.

    Args:
        root: A folder, or a single file or a folder that is itself one DICOM series
            (ids are then relative to its parent folder and start with its name).
        spec: Which slices of each volume become refs.
        progress: Show a progress bar on stderr.

    Raises:
        ReadError: `root` does not exist.
    """
    root_path = absolute(root)
    if not root_path.exists():
        raise ReadError(root_path, "file or folder not found")
    if not (root_path.is_file() or root_path.is_dir()):
        raise ReadError(root_path, NOT_REGULAR)
    found = _Found()
    ignored, errors = found.ignored, found.errors
    probed: list[tuple[ImageReader, list[Item]]] = []
    for source in tqdm(_sources(root_path, found), desc="scanning", unit="file", file=sys.stderr, disable=not progress):
        items, failed = _probe(source, ignored)
        errors += failed
        probed.append((source[0], items))
    base = _base(root_path, [item for _, items in probed for item in items])
    keyed: list[tuple[str, int, list[ImageRef]]] = []
    reading = tqdm(probed, desc="reading volumes", unit="file", file=sys.stderr, disable=not (progress and spec.skip_empty))
    for reader, items in reading:
        for order, item in enumerate(items):
            rel = relative_name(item.path, base)
            name = reader.item_name(rel, item.member)
            sort_name = str(rel) if reader.fragment_member else name  # npz: archive order
            try:
                volume = reader.read(item.path, item.member) if spec.skip_empty and item.is_volume else None
                keyed.append((sort_name, order, refs_for(name, item, reader, spec, volume)))
            except ReadError as exc:
                errors.append(exc)
    keyed.sort(key=lambda entry: entry[:2])
    refs = [ref for _, _, item_refs in keyed for ref in item_refs]
    errors.sort(key=lambda error: str(error.path))
    return ScanResult(refs, errors, base, sorted(str(relative_name(path, base)) for path in ignored),
                      sorted(f"{relative_name(path, base)}: {reason}" for path, reason in found.skipped))
