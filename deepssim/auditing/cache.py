"""Embeddings cached on disk, keyed by image content, so a second audit embeds only what is new.

Layout: ``CACHE_DIR/embeddings/<model key>/shard-*.npz``. The model key hashes the model's
weights checksum and its preprocessing contract, so another model (or the same weights with
another preprocessing) never sees these entries. An image's key hashes the bytes of its file
(all files, for a DICOM series) plus which member and slice of it is meant, so renaming or
moving a file keeps its entry and editing it invalidates it.

Each shard holds many embeddings (one file per embedding does not scale to 1e5 images), is
written atomically, and carries a SHA-256 of its own content: a shard that fails to load or
to verify is reported, deleted and its images embedded again. An interrupted run loses at
most the shard it was filling. Many small shards are merged into one when they pile up.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..storage import atomic_write_bytes
from ..readers import ImageRef

log = logging.getLogger(__name__)

CACHE_ENV = "DEEPSSIM_CACHE_DIR"
CACHE_FORMAT = 1
MERGE_AT = 32
"""Shards in a folder before they are merged into one."""


def default_cache_dir() -> Path:
    """``$DEEPSSIM_CACHE_DIR``, else ``$XDG_CACHE_HOME/deepssim``, else ``~/.cache/deepssim``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deepssim"


def model_key(checksum: str, preprocess: dict[str, object]) -> str:
    """Names the cache namespace of a model: its weights and its preprocessing contract."""
    if not checksum:
        raise ValueError("the model has no checksum: its embeddings cannot be cached safely")
    text = json.dumps({"format": CACHE_FORMAT, "weights": checksum, "preprocess": preprocess}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


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


def _digest(keys: np.ndarray, emb: np.ndarray) -> str:
    digest = hashlib.sha256("\n".join(keys.tolist()).encode())
    digest.update(np.ascontiguousarray(emb, dtype=np.float32).tobytes())
    return digest.hexdigest()


class EmbeddingCache:
    """The cached embeddings of one model (see the module docstring).

    Attributes:
        folder: Where this model's shards live.
        corrupt: Shards found damaged (and deleted) when the cache was opened.
    """

    def __init__(self, root: str | Path, key: str) -> None:
        self.folder = Path(root) / "embeddings" / key
        self.corrupt: list[str] = []
        self._index: dict[str, np.ndarray] = {}
        self._shards: list[Path] = []
        if self.folder.is_dir():
            self._load()

    def _load(self) -> None:
        for shard in sorted(self.folder.glob("shard-*.npz")):
            try:
                with np.load(shard, allow_pickle=False) as data:
                    keys, emb, digest = data["keys"], data["emb"], str(data["digest"])
                if emb.ndim != 2 or len(keys) != len(emb) or _digest(keys, emb) != digest:
                    raise ValueError("content does not match its checksum")
            except Exception as exc:  # any damage: the entries are recomputed, never trusted
                log.warning("%s: damaged embedding cache shard (%s); deleting it, its images "
                            "will be embedded again", shard, exc)
                self.corrupt.append(str(shard))
                shard.unlink(missing_ok=True)
                continue
            self._shards.append(shard)
            self._index.update(zip(keys.tolist(), emb))

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def get(self, keys: Sequence[str]) -> np.ndarray:
        """Embeddings (len(keys), D) of keys that are all in the cache."""
        return np.stack([self._index[k] for k in keys]) if keys else np.empty((0, 0), np.float32)

    def add(self, keys: Sequence[str], embeddings: np.ndarray) -> None:
        """Store embeddings of ``keys`` in a new shard (atomically)."""
        if len(keys) != len(embeddings):
            raise ValueError(f"{len(keys)} keys for {len(embeddings)} embeddings")
        if not len(keys):
            return
        self._write(np.asarray(keys, dtype=str), np.asarray(embeddings, dtype=np.float32))
        self._index.update(zip(keys, np.asarray(embeddings, dtype=np.float32)))
        if len(self._shards) >= MERGE_AT:
            self._merge()

    def _write(self, keys: np.ndarray, emb: np.ndarray) -> Path:
        buffer = io.BytesIO()
        np.savez(buffer, keys=keys, emb=emb, digest=np.array(_digest(keys, emb)))
        path = self.folder / f"shard-{uuid.uuid4().hex}.npz"
        atomic_write_bytes(path, buffer.getvalue())
        self._shards.append(path)
        return path

    def _merge(self) -> None:
        # The merged shard is complete on disk before any old one goes: a crash in between
        # leaves duplicates, which load to the same values.
        old = list(self._shards)
        self._shards = []
        keys = np.array(list(self._index), dtype=str)
        self._write(keys, np.stack(list(self._index.values())))
        for shard in old:
            shard.unlink(missing_ok=True)
