"""Writing results so that a reader never sees half a file or half a folder: atomic writes,
folders replaced whole, output paths checked before any work, CSV, checksums."""

from __future__ import annotations

import contextlib
import csv
import ctypes
import errno
import hashlib
import hmac
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it into place, so that
    readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (``atomic_write``)."""
    atomic_write(path, lambda fh: fh.write(data))


def write_csv(path: str | Path | None, header: Sequence[str], rows: Sequence[dict[str, str]]) -> str:
    """The CSV text; also written atomically to ``path`` when given."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(header), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    text = buffer.getvalue()
    if path is not None:
        atomic_write_bytes(Path(path), text.encode())
    return text


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class OutputError(ValueError):
    """An output path that cannot or must not be written; raised before any work.

    Attributes:
        path: The output (or the input) the problem is about.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def within(inner: str | Path, outer: str | Path) -> bool:
    """Whether ``inner`` is ``outer`` or lies inside it, symlinks resolved."""
    inner, outer = _resolved(inner), _resolved(outer)
    return inner == outer or outer in inner.parents


def _check_inputs(given: str | Path, out: Path, inputs: Iterable[str | Path], what: str) -> None:
    """Refuse an output equal to, inside or holding an input (symlinks resolved): a later
    run would read its own outputs, or replacing the output would take the input with it."""
    for source in inputs:
        src = _resolved(source)
        if out == src:
            raise OutputError(given, f"the output {what} is the input {source}; choose another {what}")
        if within(out, src):
            raise OutputError(given, f"the output {what} lies inside the input folder {source}: a later "
                                     f"run would read its own outputs as inputs; choose a {what} outside it")
        if within(src, out):
            raise OutputError(given, f"the input {source} lies inside the output {what}; choose a {what} "
                                     "that holds none of the inputs")


def _check_writable(given: str | Path, folder: Path) -> None:
    """Refuse unless the nearest existing folder at or above ``folder`` can be written in."""
    for place in (folder, *folder.parents):
        if place.exists():
            if not place.is_dir():
                raise OutputError(given, f"{place} is a file, not a folder")
            if not os.access(place, os.W_OK | os.X_OK):
                raise OutputError(given, f"cannot write in {place} (permission denied)")
            return


def check_output_file(path: str | Path, *, inputs: Iterable[str | Path] = ()) -> Path:
    """Check, before any work, that the file ``path`` can be written: it is not a folder, it
    is neither one of ``inputs`` nor inside an input folder (symlinks resolved), and its
    folder exists (a missing one is created here) and can be written in.

    Raises:
        OutputError: naming the path and what is wrong with it.
    """
    given = path
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(given, "is a folder; give the name of a file to write")
    _check_inputs(given, _resolved(path), inputs, "file")
    _check_writable(given, path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(given, f"cannot create its folder {path.parent} ({exc.strerror or exc})") from None
    return path


def check_output_folder(path: str | Path, *, inputs: Iterable[str | Path] = (),
                        only: Collection[str] | None = None, folders: Collection[str] = ()) -> Path:
    """Check, before any work, that the folder ``path`` can be written: it is not a file, it
    neither lies inside nor holds any of ``inputs`` (symlinks resolved), and it (or the
    nearest folder above it) can be written in.

    With ``only`` (the files a command writes there, the folder then replaced whole by
    ``replacing_folder``), an existing folder may hold those files (and the subfolders named
    in ``folders``) and nothing else, and the folder above it must be writable: a user's
    other files are never moved or deleted.

    Raises:
        OutputError: naming the path (and one file that is in the way) and what is wrong.
    """
    given = path
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError(given, "exists and is not a folder; give a folder to write in")
    if path.is_symlink() and not path.exists():
        raise OutputError(given, f"is a link to {os.readlink(path)}, which does not exist")
    _check_inputs(given, _resolved(path), inputs, "folder")
    _check_writable(given, path)
    if only is not None:  # the new folder is made beside it, then swapped in
        _check_writable(given, _resolved(path).parent)
        if path.is_dir():
            others = sorted(p.name for p in path.iterdir()
                            if not (p.name in only and p.is_file() or p.name in folders and p.is_dir()))
            if others:
                more = f" and {len(others) - 1} other(s)" if len(others) > 1 else ""
                raise OutputError(given, f"holds {others[0]!r}{more}, not among the files written here "
                                         f"({', '.join(sorted(only))}); choose a new or empty folder "
                                         "(files that are not outputs are never moved or deleted)")
    return path


@contextlib.contextmanager
def replacing_folder(out: str | Path) -> Iterator[Path]:
    """An empty temporary folder beside ``out`` to write into; when the block ends, it
    replaces ``out`` whole (``install_folder``), so that ``out`` holds the complete new
    content or the previous one, never a mix. If the block (or the swap) fails, the
    temporary folder is removed and ``out`` is left as it was."""
    out = _resolved(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        install_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # after a swap: the previous content


def install_folder(tmp: str | Path, out: str | Path) -> None:
    """Move the finished folder ``tmp`` to ``out`` (its sibling). An existing ``out`` is
    swapped with it in one step where the system can (Linux ``renameat2`` exchange), else by
    two renames, the previous folder put back if the second fails; the previous content is
    then at ``tmp``, for the caller to remove."""
    tmp, out = Path(tmp), Path(out)
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.rename(tmp, out)
        return
    if _exchange(tmp, out):
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    try:
        _rename(out, aside / out.name)
        try:
            _rename(tmp, out)
        except BaseException:
            _rename(aside / out.name, out)
            raise
        _rename(aside / out.name, tmp)
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def _rename(src: Path, dst: Path) -> None:
    os.rename(src, dst)


RENAME_EXCHANGE = 2
AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux ``renameat2(RENAME_EXCHANGE)``; False where the C
    library, the kernel or the file system does not offer it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a C library older than glibc 2.28
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def record_mac(secret: bytes, record: dict[str, Any]) -> str:
    """HMAC-SHA256 of a JSON record with ``secret``, its ``mac`` field left out: a cache
    record signed so, edited by whoever cannot read the key, is refused."""
    body = {k: v for k, v in record.items() if k != "mac"}
    return hmac.new(secret, json.dumps(body, sort_keys=True).encode(), hashlib.sha256).hexdigest()
