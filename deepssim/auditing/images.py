"""The two image sets of an audit: found by the readers, keyed by content, embedded through
the cache.

Images are found by the readers (any format they accept, volumes sliced as ``ReadOptions``
says), keyed by their content (``cache.ContentHasher``) and embedded by the model through its
own preprocessing contract. Embeddings are looked up in the cache by that key, so a second
audit against the same training set embeds only the new images, and an interrupted one
resumes from the last chunk written.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..model.api import DeepSSIMModel
from ..model.flips import FLIPS
from ..readers import ImageRef, ReadError, scan
from ..readers.errors import no_image_found
from ..readers.read import read_skipping
from .cache import ContentHasher, EmbeddingCache, default_cache_dir, model_key
from .options import ReadOptions

log = logging.getLogger(__name__)

Sources = str | Path | Sequence[str | Path]
CHUNK = 512
"""Images embedded between two cache writes: what an interruption can lose at most."""


@dataclass
class ImageSet:
    """The images of one side of the audit (training or synthetic), with stable ids and
    content keys (equal keys: equal pixels)."""

    name: str
    ids: list[str]
    refs: list[ImageRef]
    keys: list[str]
    sources: list[str]
    skipped: list[str] = field(default_factory=list)

    def subset(self, positions: Sequence[int], skipped: list[str]) -> ImageSet:
        """The images at ``positions``, with ``skipped`` as the files left out."""
        return ImageSet(self.name, [self.ids[k] for k in positions], [self.refs[k] for k in positions],
                        [self.keys[k] for k in positions], self.sources, skipped)


@dataclass
class EmbeddedSet:
    """The readable images of a set and their embeddings, as the model's score takes them.

    Attributes:
        images: The images embedded (the unreadable ones left out, listed in ``skipped``).
        vectors: One row per image of ``images``: the network's embeddings (``embed_set``,
            ``embed_queries``: the search makes the score's vectors from them a chunk at a
            time), or the score's vectors made from them (the training set of ``embed_sets``).
        hits, misses: Images found in the embedding cache, and embedded here.
    """

    images: ImageSet
    vectors: np.ndarray
    hits: int
    misses: int


def collect(sources: Sources, name: str, reading: ReadOptions, hasher: ContentHasher,
            progress: bool) -> ImageSet:
    """Scan every source folder or file; ids are prefixed by the source's name when several.

    Raises:
        ReadError: a source without any readable image (each unreadable file listed with its
            reason), or unreadable files (listed) unless ``skip_unreadable``.
    """
    roots = [sources] if isinstance(sources, (str, Path)) else list(sources)
    if not roots:
        raise ValueError(f"no {name} images given")
    names = [Path(root).name for root in roots]
    if len(set(names)) < len(names):  # two sources with one name (a/x and b/x): number them
        names = [f"{k}:{n}" for k, n in enumerate(names)]
    ids: list[str] = []
    refs: list[ImageRef] = []
    skipped: list[str] = []
    for root, root_name in zip(roots, names):
        result = scan(root, reading.slices, progress=progress)
        try:
            result.require_images(reading.skip_unreadable)
        except ReadError as exc:
            raise ReadError(exc.path, f"{exc.reason} (in the {name} set)") from None
        skipped += [str(e) for e in result.errors]
        prefix = f"{root_name}/" if len(roots) > 1 else ""
        ids += [prefix + ref.id for ref in result.refs]
        refs += result.refs
    return ImageSet(name, ids, refs, [hasher.key(r) for r in refs], [str(r) for r in roots], skipped)


def open_cache(cache_dir: str | Path | None, model: DeepSSIMModel, train: ImageSet,
               *queries: ImageSet | None) -> EmbeddingCache | None:
    """The model's embedding cache in ``cache_dir`` (``"default"``: ``default_cache_dir()``;
    None: no cache), holding in memory only the entries of the training set and the sets
    compared with it (``queries``), with the flips each side is embedded with."""
    if cache_dir is None:
        return None
    root = default_cache_dir() if cache_dir == "default" else Path(cache_dir)
    wanted = {v for key in train.keys for v in _views(key, model.real_flips)}
    wanted |= {v for q in queries if q is not None for key in q.keys for v in _views(key, model.synthetic_flips)}
    return EmbeddingCache(root, model_key(model.checksum, model.preprocess.to_dict()), wanted=wanted)


def cache_summary(cache: EmbeddingCache | None, *sets: EmbeddedSet) -> dict[str, Any] | None:
    """The summary's ``cache`` entry: the folder, hits and misses over ``sets``, shards found
    corrupt (deleted) and untrusted (left in place); the images of both were embedded again."""
    if cache is None:
        return None
    return {"folder": str(cache.folder), "hits": sum(s.hits for s in sets),
            "misses": sum(s.misses for s in sets), "corrupt_shards": len(cache.corrupt),
            "untrusted_shards": len(cache.untrusted)}


def _views(key: str, flips: bool) -> list[str]:
    """Cache keys of an image: its own, and with ``flips`` one per other flip (``flips.FLIPS``),
    so that an image embedded with and without its flips shares its unflipped entry."""
    return [key, *(f"{key}|flip{f}" for f in range(1, len(FLIPS)))] if flips else [key]


def embed_set(
    model: DeepSSIMModel, images: ImageSet, cache: EmbeddingCache | None, reading: ReadOptions, *,
    flips: bool, progress: bool,
) -> EmbeddedSet:
    """The network's embeddings of the set (cached ones read, the rest computed and cached
    chunk by chunk): (N, D), or with ``flips`` (N, 4, D), those of each image's four flips.
    The unreadable images are left out and added to the set's ``skipped``.

    Raises:
        ReadError: an unreadable file (unless ``reading.skip_unreadable``), or no readable
            image at all (every file skipped listed with its reason).
    """
    keys = images.keys
    hit, miss = [], []
    for k, key in enumerate(keys):
        cached = cache is not None and all(v in cache for v in _views(key, flips))
        (hit if cached else miss).append(k)
    shape = (len(FLIPS), -1) if flips else (-1,)
    # One array filled in place: the embeddings are held once, not also in pieces.
    vectors: np.ndarray | None = None
    filled = np.zeros(len(keys), dtype=bool)

    def put(positions: list[int], emb: np.ndarray) -> None:
        nonlocal vectors
        if vectors is None:
            vectors = np.empty((len(keys), *emb.shape[1:]), dtype=np.float32)
        vectors[positions] = emb
        filled[positions] = True

    for start in range(0, len(hit), CHUNK):  # by chunks: no second copy of every cached row
        part = hit[start:start + CHUNK]
        put(part, cache.get([v for k in part for v in _views(keys[k], flips)]).reshape(len(part), *shape))  # type: ignore[union-attr]
    failed: list[ReadError] = []
    workers = reading.threads
    with tqdm(total=len(miss), unit="img", desc=f"embed {images.name}", file=sys.stderr,
              disable=not (progress and miss)) as bar:
        for start in range(0, len(miss), CHUNK):
            chunk = miss[start:start + CHUNK]
            done: list[int] = []
            emb = model.embed(read_skipping([images.refs[k] for k in chunk], skip=reading.skip_unreadable,
                                            done=done, failed=failed, workers=workers,
                                            transform=model.preprocess.resize),
                              batch_size=reading.batch_size, progress=False, flips=flips)
            positions = [chunk[d] for d in done]
            if positions:
                put(positions, emb)
            if cache is not None:
                cache.add([v for p in positions for v in _views(keys[p], flips)],
                          emb.reshape(-1, emb.shape[-1]))
            bar.update(len(chunk))
    order = np.flatnonzero(filled).tolist()
    skipped = images.skipped + [str(e) for e in failed]
    if not order:
        raise ReadError(images.sources[0], f"{no_image_found(skipped)} (in the {images.name} set)")
    assert vectors is not None
    if len(order) < len(keys):
        vectors = vectors[filled]
    return EmbeddedSet(images.subset(order, skipped), vectors, len(hit), len(miss))


def embed_sets(
    model: DeepSSIMModel, train: ImageSet, synthetic: ImageSet, cache: EmbeddingCache | None,
    reading: ReadOptions, progress: bool,
) -> tuple[EmbeddedSet, EmbeddedSet]:
    """Both sets embedded: the training set as the score's vectors (made from the network's
    per-flip embeddings the cache holds, ``flips.py``), the synthetic set as ``embed_queries``."""
    real = embed_set(model, train, cache, reading, flips=model.real_flips, progress=progress)
    return replace(real, vectors=model.as_real(real.vectors)), embed_queries(model, synthetic, cache, reading, progress)


def embed_queries(model: DeepSSIMModel, images: ImageSet, cache: EmbeddingCache | None, reading: ReadOptions,
                  progress: bool) -> EmbeddedSet:
    """A set compared with the training set as the synthetic images are (the synthetic set
    itself, or a holdout): the network's embeddings, with each image's flips where the score
    takes them (``candidates.find_candidates`` makes the score's vectors)."""
    return embed_set(model, images, cache, reading, flips=model.synthetic_flips, progress=progress)
