"""Embeddings cached on disk, keyed by image content, so a second audit embeds only what is new.

Layout: ``CACHE_DIR/embeddings/<model key>/shard-*.npz``. The model key hashes the model's
weights checksum and its preprocessing contract, so another model (or the same weights with
another preprocessing) never sees these entries. An image's key hashes the bytes of its file
(all files, for a DICOM series) plus which member and slice of it is meant, so renaming or
moving a file keeps its entry and editing it invalidates it.

Each shard holds many embeddings (one file per embedding does not scale to 1e5 images), is
written atomically, and carries an HMAC-SHA256 of its content and model key under a secret
of the user's (``load_cache_key``: a key file outside the cache folder). A shard is used only
when its MAC verifies: whoever can write a shared cache folder but lacks the key cannot edit
an entry (say, to hide a copy from an audit) without the shard being left out and its images
embedded again. What this does not protect against: anyone holding the key can write entries
that verify; deleting shards only costs the time of embedding again; the cache never holds
images, only embeddings and content hashes.

A shard that verifies under another key (another user's, in a shared folder), that was
edited, or that carries the plain SHA-256 of the previous format is *untrusted*: left in
place, counted and warned about, its images embedded again. A shard that cannot be read as a
shard at all is *corrupt*: deleted, its images embedded again. An interrupted run loses at
most the shard it was filling. Many small shards are merged into one when they pile up.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import math
import os
import secrets
import stat
import tempfile
import uuid
import zipfile
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from ..readers import ImageRef
from ..storage import atomic_write_bytes, within

log = logging.getLogger(__name__)

CACHE_ENV = "DEEPSSIM_CACHE_DIR"
KEY_ENV = "DEEPSSIM_KEY_FILE"
CACHE_FORMAT = 1
"""Version of the model key (the folder name): a change would orphan every cached entry."""
SHARD_FORMAT = 2
"""Version of a shard's content: 2 carries an HMAC-SHA256 (``mac``), 1 a plain SHA-256."""
KEY_BYTES = 32
"""Random bytes of a new cache key."""
MIN_KEY_BYTES = 16
MERGE_AT = 32
"""Shards in a folder before they are merged into one."""
MAX_MEMBERS = 8
"""Arrays a shard file may hold: more is not a shard."""


class CacheKeyError(ValueError):
    """The cache key file cannot be used safely (inside the cache, readable by others...)."""


def default_cache_dir() -> Path:
    """``$DEEPSSIM_CACHE_DIR``, else ``$XDG_CACHE_HOME/deepssim``, else ``~/.cache/deepssim``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deepssim"


def default_key_file() -> Path:
    """``$DEEPSSIM_KEY_FILE``, else ``$XDG_CONFIG_HOME/deepssim/cache.key``, else
    ``~/.config/deepssim/cache.key``."""
    if os.environ.get(KEY_ENV):
        return Path(os.environ[KEY_ENV]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "deepssim" / "cache.key"


def load_cache_key(cache_root: str | Path, path: str | Path | None = None) -> bytes:
    """The user's secret that signs the cache's shards: the bytes of the key file ``path``
    (``default_key_file()``), made with ``KEY_BYTES`` random bytes and mode 0600 when it does
    not exist yet.

    Raises:
        CacheKeyError: the key file lies inside the cache folder ``cache_root``, cannot be
            made or read, is not a file, is shorter than ``MIN_KEY_BYTES``, or (POSIX) belongs
            to another user or can be read or written by others.
    """
    path = default_key_file() if path is None else Path(path).expanduser()
    if within(path, cache_root):
        raise CacheKeyError(f"{path}: the cache key lies inside the cache folder {cache_root}, where whoever "
                            f"can write the cache could read or replace it; keep it elsewhere (${KEY_ENV})")
    if not path.exists():
        try:
            _create_key(path)
        except OSError as exc:
            raise CacheKeyError(f"{path}: cannot make the cache key ({exc.strerror or exc}); name a key file "
                                f"you can write with ${KEY_ENV}, or turn the cache off (--no-cache)") from None
    if not path.is_file():
        raise CacheKeyError(f"{path}: the cache key is not a file")
    if os.name == "posix":
        st = path.stat()
        if st.st_uid != os.geteuid():
            raise CacheKeyError(f"{path}: the cache key belongs to another user; use a key file of your own "
                                f"(${KEY_ENV})")
        if st.st_mode & 0o077:
            raise CacheKeyError(f"{path}: the cache key can be read or written by others (mode "
                                f"{st.st_mode & 0o777:o}); make it private with: chmod 600 {path}")
    try:
        secret = path.read_bytes()
    except OSError as exc:
        raise CacheKeyError(f"{path}: cannot read the cache key ({exc.strerror or exc})") from None
    if len(secret) < MIN_KEY_BYTES:
        raise CacheKeyError(f"{path}: the cache key has {len(secret)} bytes, fewer than {MIN_KEY_BYTES}; "
                            "delete it and a new one is made")
    return secret


def _create_key(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(KEY_BYTES))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # complete when it appears, and never replaces a key made meanwhile
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)


def model_key(checksum: str, preprocess: dict[str, object]) -> str:
    """Names the cache namespace of a model: its weights and its preprocessing contract."""
    if not checksum:
        raise ValueError("the model has no checksum: its embeddings cannot be cached safely")
    text = json.dumps({"format": CACHE_FORMAT, "weights": checksum, "preprocess": preprocess}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def verified_store(root: str | Path, grid: dict[str, object], secret: bytes) -> EmbeddingCache:
    """The verified SSIMs of pairs under ``root``, for the verification ``grid``: one value per
    pair of content keys (``pair_key``), kept as the embeddings are (signed
    shards written as verification goes), so that an audit interrupted while verifying, or a
    later audit of the same images, verifies only the pairs not kept yet."""
    text = json.dumps({"format": CACHE_FORMAT, "verify": grid}, sort_keys=True)
    return EmbeddingCache(root, hashlib.sha256(text.encode()).hexdigest()[:24], secret=secret, kind="verified")


def pair_key(synthetic: str, train: str) -> str:
    """The ``verified_store`` key of a pair of images by their content keys: a 128-bit hash of
    both (two full keys would cost a value 516 bytes)."""
    return hashlib.sha256(f"{synthetic}|{train}".encode()).hexdigest()[:32]


class ContentHasher:
    """SHA-256 of image files, each file hashed once however many slices it holds."""

    def __init__(self) -> None:
        self._files: dict[Path, str] = {}

    def file_digest(self, path: Path) -> str:
        if path not in self._files:
            digest = hashlib.sha256()
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for file in files:  # a DICOM series is a folder: its files, in name order
                if path.is_dir():
                    digest.update(file.relative_to(path).as_posix().encode() + b"\0")
                with open(file, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(chunk)
            self._files[path] = digest.hexdigest()
        return self._files[path]

    def key(self, ref: ImageRef) -> str:
        """Content key of one 2D image: file bytes + member + slice."""
        where = f"{ref.member or ''}|{'' if ref.axis is None else ref.axis}|{'' if ref.index is None else ref.index}"
        return hashlib.sha256(f"{self.file_digest(ref.path)}|{where}".encode()).hexdigest()


def shard_mac(secret: bytes, namespace: str, keys: np.ndarray, emb: np.ndarray) -> str:
    """HMAC-SHA256 of a shard: its format, model key, image keys and embeddings."""
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    header = {"format": SHARD_FORMAT, "namespace": namespace, "shape": list(emb.shape), "keys": keys.tolist()}
    mac.update(json.dumps(header).encode() + b"\0")
    mac.update(memoryview(np.ascontiguousarray(emb, dtype="<f4")).cast("B"))  # no copy of a large shard
    return mac.hexdigest()


def read_shard(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a shard file, read without trusting it: an uncompressed zip of at most
    ``MAX_MEMBERS`` ``.npy`` arrays, none of objects, each exactly as large as its header
    says (so a hostile file cannot make this allocate more than its own size).

    Raises:
        ValueError: the file is not such an archive.
        OSError: the file cannot be read.
    """
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):  # a FIFO or a device would block or never end
        raise ValueError("not a regular file")
    size = info.st_size
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > MAX_MEMBERS:
                raise ValueError(f"{len(members)} members, a shard has at most {MAX_MEMBERS}")
            for info in members:
                if info.compress_type != zipfile.ZIP_STORED or info.file_size > size:
                    raise ValueError(f"member {info.filename!r} is compressed or larger than the file")
                with archive.open(info) as fh:
                    arrays[info.filename.removesuffix(".npy")] = _read_npy(fh, info.file_size)
    except (zipfile.BadZipFile, EOFError, UnicodeDecodeError, SyntaxError) as exc:
        raise ValueError(f"not a shard archive ({exc})") from None
    return arrays


def _read_npy(fh: io.BufferedIOBase, size: int) -> np.ndarray:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ValueError(f"unsupported .npy version {version}")
    if dtype.hasobject:
        raise ValueError("an array of Python objects")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes != size - fh.tell():
        raise ValueError(f"an array of {nbytes} bytes in a member of {size - fh.tell()}")
    # Read into the array itself, by pieces: one read() of a zip member makes a second copy.
    out = np.empty(math.prod(shape), dtype=dtype)
    view, got = memoryview(out).cast("B"), 0
    while got < nbytes:
        n = fh.readinto(view[got:got + (16 << 20)])
        if not n:
            raise EOFError(f"the member ends after {got} of {nbytes} bytes")
        got += n
    return out.reshape(shape, order="F" if fortran else "C")


def check_cache_root(root: str | Path) -> None:
    """NotADirectoryError when the cache folder ``root`` is a file."""
    if Path(root).exists() and not Path(root).is_dir():
        raise NotADirectoryError(f"{root}: the embedding cache is a file, not a folder")


class EmbeddingCache:
    """The cached embeddings of one model (see the module docstring).

    Attributes:
        folder: Where this model's shards live.
        corrupt: Shards found damaged (and deleted) when the cache was opened.
        untrusted: Shards left out (and left in place) because their MAC does not verify
            under this user's key: another user's, edited, or of the previous format.
    """

    def __init__(self, root: str | Path, key: str, *, secret: bytes | None = None, kind: str = "embeddings",
                 wanted: Collection[str] | None = None) -> None:
        """Open the cache of model key ``key`` under ``root``, trusting the shards signed with
        ``secret`` (default: ``load_cache_key(root)``, which raises ``CacheKeyError``).
        ``kind`` names the folder of the values kept: ``embeddings``, or ``verified`` for the
        verified SSIMs of pairs (``verified_store``). With ``wanted``, only those keys' entries
        are held in memory (copied out of each shard as it is read), so memory follows the
        audit's own images rather than everything the folder has kept; merges then take only
        the shards this cache wrote, and the others stay as they are."""
        check_cache_root(root)
        self.folder = Path(root) / kind / key
        self.corrupt: list[str] = []
        self.untrusted: list[str] = []
        self._namespace = key
        self._secret = load_cache_key(root) if secret is None else secret
        self._writable = True
        self._index: dict[str, np.ndarray] = {}
        self._shards: list[Path] = []
        self._wanted = None if wanted is None else set(wanted)
        self._partial = False  # entries on disk were left out of memory: merge only our own shards
        self._own: list[Path] = []
        self._own_keys: list[str] = []
        if self.folder.is_dir():
            self._load()

    def _load(self) -> None:
        previous = 0
        for shard in sorted(self.folder.glob("shard-*.npz")):
            try:
                arrays = read_shard(shard)
                keys, emb = arrays["keys"], arrays["emb"]
                if keys.ndim != 1 or keys.dtype.kind != "U" or emb.ndim != 2 or emb.dtype != np.float32 \
                        or len(keys) != len(emb):
                    raise ValueError("keys and embeddings do not match")
            except PermissionError as exc:  # another user's shard this user may not read
                log.debug("%s: unreadable cache shard (%s), left out", shard, exc)
                self.untrusted.append(str(shard))
                continue
            except (OSError, ValueError, KeyError) as exc:  # any damage: recomputed, never trusted
                log.warning("%s: damaged cache shard (%s); deleting it, its entries will be "
                            "computed again", shard, exc)
                self.corrupt.append(str(shard))
                try:
                    shard.unlink(missing_ok=True)
                except OSError:
                    pass
                continue
            mac = arrays.get("mac")
            if mac is None or mac.ndim != 0 or not hmac.compare_digest(
                    str(mac).encode(), shard_mac(self._secret, self._namespace, keys, emb).encode()):
                if mac is None and "digest" in arrays:
                    previous += 1
                self.untrusted.append(str(shard))
                continue
            self._shards.append(shard)
            names = keys.tolist()
            if self._wanted is not None:
                keep = np.array([k in self._wanted for k in names], dtype=bool)
                self._partial = self._partial or not keep.all()
                names, emb = [k for k, w in zip(names, keep) if w], emb[keep]  # a copy: the shard is let go
            self._index.update(zip(names, emb))
        if previous:
            log.warning("%s: %d embedding cache shard(s) of the previous cache format, whose checksum "
                        "anyone can recompute: not trusted, their images are embedded again (once); "
                        "the old shards can be deleted", self.folder, previous)
        if len(self.untrusted) > previous:
            log.warning("%s: %d embedding cache shard(s) not trusted (written with another user's key, or "
                        "edited since they were written): left in place, their images embedded again",
                        self.folder, len(self.untrusted) - previous)

    def __len__(self) -> int:
        return len(self._index)

    def release(self) -> None:
        """Let go of the entries held in memory once the audit has read what it needs (the
        shards stay on disk for the next one); the cache looks empty afterwards and writes
        nothing more (a merge of what it no longer holds would lose the shards)."""
        self._index = {}
        self._shards, self._own, self._own_keys = [], [], []
        self._writable = False

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def get(self, keys: Sequence[str]) -> np.ndarray:
        """Embeddings (len(keys), D) of keys that are all in the cache."""
        return np.stack([self._index[k] for k in keys]) if keys else np.empty((0, 0), np.float32)

    def add(self, keys: Sequence[str], embeddings: np.ndarray) -> None:
        """Store embeddings of ``keys`` in a new shard (atomically). A cache folder that
        cannot be written is warned about once; the entries then stay in memory only."""
        if len(keys) != len(embeddings):
            raise ValueError(f"{len(keys)} keys for {len(embeddings)} embeddings")
        if not len(keys):
            return
        emb = np.asarray(embeddings, dtype=np.float32)
        self._index.update(zip(keys, emb))
        if not self._writable:
            return
        try:
            self._own.append(self._write(np.asarray(keys, dtype=str), emb))
            self._own_keys += list(keys)
            if len(self._own if self._partial else self._shards) >= MERGE_AT:
                self._merge()
        except OSError as exc:
            self._writable = False
            log.warning("%s: cannot write the embedding cache (%s); new embeddings are not cached", self.folder, exc)

    def _write(self, keys: np.ndarray, emb: np.ndarray) -> Path:
        buffer = io.BytesIO()
        np.savez(buffer, keys=keys, emb=emb, mac=np.array(shard_mac(self._secret, self._namespace, keys, emb)),
                 format=np.array(SHARD_FORMAT))
        path = self.folder / f"shard-{uuid.uuid4().hex}.npz"
        atomic_write_bytes(path, buffer.getvalue())
        self._shards.append(path)
        return path

    def _merge(self) -> None:
        # The merged shard is complete on disk before any old one goes: a crash in between
        # leaves duplicates, which load to the same values. What memory does not hold (a
        # ``wanted`` cache) is never merged: only the shards written here are.
        old = list(self._own if self._partial else self._shards)
        names = list(dict.fromkeys(self._own_keys)) if self._partial else list(self._index)
        gone = set(old)
        self._shards = [s for s in self._shards if s not in gone]
        merged = self._write(np.array(names, dtype=str), np.stack([self._index[k] for k in names]))
        self._own, self._own_keys = [merged], names
        for shard in old:
            try:
                shard.unlink(missing_ok=True)
            except OSError:  # a shard signed with a shared key but owned by another user
                pass
