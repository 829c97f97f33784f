"""Reading images: one 2D image, one 3D volume, the slices of a file, or a list of refs."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .errors import ReadError
from .ids import absolute, locate, relative_name
from .registry import reader_for
from .slicing import cut, full_id, refs_for
from .spec import ImageRef, SliceSpec

log = logging.getLogger(__name__)


def _read_item(path: str | Path) -> tuple[np.ndarray, ImageRef, int]:
    """Read what `path` (a path, or an id relative to the cwd) names.

    Returns:
        The item's full data (2D or 3D), a ref with the slice named (if any), and
        the reader's default axis.
    """
    text = str(path)
    loc = locate(absolute("."), text) if not Path(text).exists() else None
    if loc is None:
        target = absolute(text)
        reader = reader_for(target)
        return reader.read(target), ImageRef(text, target), reader.default_axis
    data = loc.reader.read(loc.path, loc.member)
    return data, ImageRef(text, loc.path, loc.member, loc.axis, loc.index), loc.reader.default_axis


def read_image(path: str | Path) -> np.ndarray:
    """Return one 2D float32 image.

    Args:
        path: A 2D file, or an id with a fragment relative to the current directory,
            e.g. "vol.nii.gz#axis2:85" or "arrays.npz#key".

    Raises:
        ReadError: unreadable input, or a 3D volume named without a slice.
    """
    data, ref, default_axis = _read_item(path)
    return cut(data, ref, path, default_axis)


def read_volume(path: str | Path) -> np.ndarray:
    """Return one 3D float32 volume.

    NIfTI files and DICOM series folders come in closest-canonical RAS orientation
    (axis 2 inferior -> superior; a DICOM series without orientation tags, or a
    multi-frame file, stacked along axis 2), npy/npz stacks and multi-page TIFF with
    their images along axis 0.

    Raises:
        ReadError: unreadable input, a 2D image, 4D data, or a DICOM series folder
            with a file that cannot be read.
    """
    data, ref, _ = _read_item(path)
    if ref.axis is not None:
        raise ReadError(path, "names one slice; give the volume without '#axis' fragment")
    if data.ndim != 3:
        raise ReadError(path, f"is 2D (shape {data.shape}), a 3D volume is needed")
    return data


def read_slices(
    path: str | Path, spec: SliceSpec = SliceSpec(), root: str | Path | None = None
) -> list[tuple[ImageRef, np.ndarray]]:
    """Return the 2D images of a file or DICOM series folder, each with its ref.

    A 2D file gives one item, a volume its slices selected by `spec` (read once), an
    npz file the items of each member, a folder every series in it.

    Args:
        root: Folder the ids are relative to; default the parent of `path`.

    Raises:
        ReadError: unreadable input or a selection that picks no slice.
    """
    target = absolute(path)
    reader = reader_for(target)
    base = absolute(root) if root is not None else target.parent
    images = []
    for item in reader.probe(target):
        data = reader.read(item.path, item.member)
        name = reader.item_name(relative_name(item.path, base), item.member)
        for ref in refs_for(name, item, reader, spec, data):
            images.append((ref, cut(data, ref, ref.id, reader.default_axis)))
    return images


def load_ref(ref: ImageRef) -> np.ndarray:
    """Return the 2D float32 image that `ref` names.

    Raises:
        ReadError: the file changed or is unreadable, naming the ref's id.
    """
    reader = reader_for(ref.path)
    return cut(reader.read(ref.path, ref.member), ref, ref.id, reader.default_axis)


MAX_READING_WORKERS = 8


def reading_workers(workers: int | None = None) -> int:
    """Threads that read files while a network runs: ``workers``, or by default half the
    cores this process may use (the network gets the others), at least 1 and at most
    MAX_READING_WORKERS. On 2 cores, 2 reading threads embedded 0-7% slower than 1 in two
    runs of benchmarks/embed_speed.py."""
    if workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, min(MAX_READING_WORKERS, cores // 2))
    if isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return workers


def load_refs(
    refs: Sequence[ImageRef],
    progress: bool = False,
    *,
    workers: int = 1,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Iterator[tuple[ImageRef, np.ndarray]]:
    """Yield (ref, image) in `refs` order, reading each file or volume only once.

    A volume is kept in memory from its first ref to its last, so refs grouped by file (as a
    scan gives them) hold few volumes at a time.

    Args:
        workers: with more than one, files are read (and ``transform``-ed) in that many
            threads, up to ``2 * workers`` files ahead of the consumer: decoding and resizing
            release the GIL, so this scales with the cores. The output is the same.
        transform: applied to each image where it is read (e.g. a resize).

    Raises:
        ReadError: a file cannot be read (raised when its first ref is reached), or a slice
            of it cannot be cut (raised at that slice).
    """
    bar = tqdm(total=len(refs), desc="reading", unit="img", file=sys.stderr, disable=not progress)
    with bar:
        for run, images in read_runs(refs, workers=workers, transform=transform):
            if isinstance(images, ReadError):
                raise images
            for ref, image in zip(run, images):
                bar.update(1)
                yield ref, image


def _split_at_errors(
    refs: Sequence[ImageRef], images: list[np.ndarray | ReadError], start: int
) -> Iterator[tuple[list[ImageRef], list[np.ndarray] | ReadError]]:
    """The run of ``images`` (for ``refs[start:]``) as sub-runs of images, each failed slice
    a run of its own with its error."""
    first = 0
    for k, image in enumerate(images + [None]):
        if image is None or isinstance(image, ReadError):
            if k > first:
                yield list(refs[start + first:start + k]), images[first:k]  # type: ignore[misc]
            if image is not None:
                yield [refs[start + k]], image
            first = k + 1


def read_runs(
    refs: Sequence[ImageRef],
    *,
    workers: int = 1,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Iterator[tuple[list[ImageRef], list[np.ndarray] | ReadError]]:
    """The images of ``refs`` in order, run by run (consecutive refs of one file or volume):
    ``(run, images)``, or ``(run, error)`` for a file that cannot be read, so that a caller
    may skip it. A slice that cannot be cut (out of range, or NaN / infinite values) is a run
    of its own with its error, between the runs of the file's other slices. Each file is read
    once; ``workers`` and ``transform`` as in ``load_refs``.

    Memory: each reading thread holds one file's data (at most the pixel limit,
    ``limits.max_pixels``, elements) and its slices (transformed one by one as they are cut),
    and up to ``2 * workers`` files' slices wait for the consumer: memory grows with the
    workers, and with large volumes and all their slices, fewer workers hold less."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    keys = [(ref.path, ref.member) for ref in refs]
    uses: dict[tuple[Path, str | None], list[int]] = {}
    for position, key in enumerate(keys):
        uses.setdefault(key, []).append(position)
    files = iter(uses)  # in order of first use, the order in which they are needed

    keep = transform if transform is not None else (lambda image: image)

    def read(key: tuple[Path, str | None]) -> dict[int, np.ndarray | ReadError] | ReadError:
        try:
            reader = reader_for(key[0])
            data = reader.read(*key)
        except ReadError as exc:
            return exc
        images: dict[int, np.ndarray | ReadError] = {}
        for p in uses[key]:
            try:
                images[p] = keep(cut(data, refs[p], full_id(refs[p], reader), reader.default_axis))
            except ReadError as exc:
                images[p] = exc
        return images

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deepssim-read") if workers > 1 else None
    pending: dict[tuple[Path, str | None], Future[dict[int, np.ndarray | ReadError] | ReadError]] = {}

    def submit(key: tuple[Path, str | None]) -> None:
        if pool is not None:
            pending[key] = pool.submit(read, key)
        else:
            pending[key] = done = Future()
            done.set_result(read(key))

    try:
        start = 0
        while start < len(refs):
            key = keys[start]
            stop = start + 1
            while stop < len(refs) and keys[stop] == key:
                stop += 1
            while key not in pending:
                submit(next(files))
            while pool is not None and len(pending) < 2 * workers and (ahead := next(files, None)) is not None:
                submit(ahead)
            result = pending[key].result()
            if uses[key][-1] < stop:  # its last use: let the images go
                del pending[key]
            if isinstance(result, ReadError):
                yield list(refs[start:stop]), result
            else:
                yield from _split_at_errors(refs, [result[p] for p in range(start, stop)], start)
            start = stop
    finally:  # a consumer that stops early leaves no reads queued
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def read_skipping(
    refs: Sequence[ImageRef],
    *,
    skip: bool,
    done: list[int],
    failed: list[ReadError],
    workers: int = 1,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Iterator[np.ndarray]:
    """The images of ``refs`` that can be read, in order (``read_runs``): the positions read
    go to ``done``, the files and slices that fail go to ``failed`` and are logged, unless
    ``skip`` is False, when the first one is raised. What a ``--skip-unreadable`` command
    reads through: a file can pass the header scan and still fail here (truncated pixel
    data, NaN values).

    Raises:
        ReadError: the first unreadable file or slice, unless ``skip``.
    """
    start = 0
    for run, images in read_runs(refs, workers=workers, transform=transform):
        if isinstance(images, ReadError):
            if not skip:
                raise images
            log.warning("skipping unreadable %s", images)
            failed.append(images)
        else:
            done.extend(range(start, start + len(run)))
            yield from images
        start += len(run)
