"""``deepssim.audit``: every synthetic image against every training image.

read -> (cached) embed -> top-k search -> decide. Images are found by the readers (any format
they accept, volumes sliced by ``slices``), embedded by the model through its own
preprocessing contract, and looked up in the embedding cache by content, so a second audit
against the same training set embeds only the new images.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..model.api import DeepSSIMModel, load_model
from ..model.flips import FLIPS
from ..readers import ImageRef, ReadError, SliceSpec, load_ref, scan
from ..readers.read import read_runs, reading_workers
from .cache import ContentHasher, EmbeddingCache, default_cache_dir, model_key
from ..classes import CLASSES, REFERENCE_THRESHOLDS, Thresholds, classify, wilson_interval
from ..versions import library_versions
from .decide import resolve_thresholds
from .nearest import rescore, search_flips
from .result import AuditResult, Match
from .verify import VerifyGrid, verify_pairs

log = logging.getLogger(__name__)

Sources = str | Path | Sequence[str | Path]
CHUNK = 512
"""Images embedded between two cache writes: what an interruption can lose at most."""
MOST_COPIED = 10


@dataclass
class ImageSet:
    """The images of one side of the audit (training or synthetic), with stable ids."""

    name: str
    ids: list[str]
    refs: list[ImageRef]
    sources: list[str]
    skipped: list[str] = field(default_factory=list)


def collect(sources: Sources, name: str, slices: SliceSpec, skip_unreadable: bool, progress: bool) -> ImageSet:
    """Scan every source folder or file; ids are prefixed by the source's name when several.

    Raises:
        ReadError: an empty folder, or unreadable files (listed) unless ``skip_unreadable``.
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
        result = scan(root, slices, progress=progress)
        try:
            result.require_images(skip_unreadable)
        except ReadError as exc:
            raise ReadError(exc.path, f"{exc.reason} (in the {name} set)") from None
        skipped += [str(e) for e in result.errors]
        prefix = f"{root_name}/" if len(roots) > 1 else ""
        ids += [prefix + ref.id for ref in result.refs]
        refs += result.refs
    return ImageSet(name, ids, refs, [str(r) for r in roots], skipped)


def _readable(
    refs: Sequence[ImageRef], skip: bool, done: list[int], failed: list[str], workers: int,
    transform: Callable[[np.ndarray], np.ndarray],
) -> Iterator[np.ndarray]:
    """Images of ``refs`` file by file, ``transform``-ed as read (in ``workers`` threads);
    positions read go to ``done``, failures to ``failed`` (or raise, unless ``skip``). A file
    can pass the header scan and still fail here."""
    start = 0
    for run, images in read_runs(refs, workers=workers, transform=transform):
        if isinstance(images, ReadError):
            if not skip:
                raise images
            log.warning("skipping unreadable %s", images)
            failed.append(str(images))
        else:
            done.extend(range(start, start + len(run)))
            yield from images
        start += len(run)


def _views(key: str, flips: bool) -> list[str]:
    """Cache keys of an image: its own, and with ``flips`` one per other flip (``flips.FLIPS``),
    so that an image embedded with and without its flips shares its unflipped entry."""
    return [key, *(f"{key}|flip{f}" for f in range(1, len(FLIPS)))] if flips else [key]


def embed_set(
    model: DeepSSIMModel, images: ImageSet, keys: list[str], cache: EmbeddingCache | None, *,
    skip_unreadable: bool, batch_size: int, progress: bool, flips: bool = False, workers: int = 1,
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Embeddings of the set (cached ones read, the rest computed and cached chunk by chunk):
    (N, D), or with ``flips`` (N, 4, D), those of each image's four flips.

    Returns:
        The embeddings of the readable images, the positions (into ``images.refs``) they
        belong to, and cache counts.
    """
    hit, miss = [], []
    for k, key in enumerate(keys):
        cached = cache is not None and all(v in cache for v in _views(key, flips))
        (hit if cached else miss).append(k)
    shape = (len(FLIPS), -1) if flips else (-1,)
    parts: dict[int, np.ndarray] = {}
    if hit:
        stored = cache.get([v for k in hit for v in _views(keys[k], flips)])  # type: ignore[union-attr]
        parts.update(zip(hit, stored.reshape(len(hit), *shape)))
    failed: list[str] = []
    with tqdm(total=len(miss), unit="img", desc=f"embed {images.name}", file=sys.stderr,
              disable=not (progress and miss)) as bar:
        for start in range(0, len(miss), CHUNK):
            chunk = miss[start:start + CHUNK]
            done: list[int] = []
            emb = model.embed(_readable([images.refs[k] for k in chunk], skip_unreadable, done, failed,
                                        workers, model.preprocess.resize),
                              batch_size=batch_size, progress=False, flips=flips)
            positions = [chunk[d] for d in done]
            parts.update(zip(positions, emb))
            if cache is not None:
                cache.add([v for p in positions for v in _views(keys[p], flips)],
                          emb.reshape(-1, emb.shape[-1]))
            bar.update(len(chunk))
    images.skipped += failed
    order = np.array(sorted(parts), dtype=np.int64)
    if not len(order):
        raise ReadError(images.sources[0], f"no readable image in the {images.name} set")
    return np.stack([parts[k] for k in order]).astype(np.float32), order, {"hits": len(hit), "misses": len(miss)}


def audit(
    train: Sources,
    synthetic: Sources,
    model: str | Path | DeepSSIMModel,
    *,
    top_k: int = 5,
    thresholds: Thresholds | tuple[float, float] | str | None = None,
    calibration: str | Path | None = None,
    backend: str = "auto",
    index: str = "flat",
    device: str = "auto",
    slices: SliceSpec = SliceSpec(),
    cache_dir: str | Path | None = "default",
    skip_unreadable: bool = False,
    batch_size: int = 64,
    progress: bool = False,
    trust_torchscript: bool = False,
    verify: int = 0,
    verify_grid: VerifyGrid = VerifyGrid(),
    verify_max: int | None = None,
    verify_thresholds: Thresholds | tuple[float, float] | str | None = None,
    workers: int | None = None,
) -> AuditResult:
    """Find, for every synthetic image, its ``top_k`` closest training images and its class.

    Args:
        train, synthetic: Folders or files (several allowed) in any format the readers accept.
        model: A model folder (``deepssim train``), or a loaded model.
        thresholds: ``(low, high)`` or ``"low,high"``; else ``calibration`` (a JSON file from
            ``deepssim evaluate --calibrate``); else the model's recorded thresholds.
        backend: ``exact`` (streamed matrix products), ``faiss`` or ``auto`` (by size);
            ``index`` ``flat`` (exact) or an approximate FAISS index (``ivf``, ``hnsw``),
            whose measured recall goes into the summary.
        cache_dir: Embedding cache folder; ``"default"`` is ``default_cache_dir()``, None
            turns the cache off.
        skip_unreadable: Audit the readable images and list the others in the summary
            instead of stopping with an error that names them.
        verify: Re-score the best ``verify`` candidates of every suspicious synthetic image
            (best score above the low threshold) with the reference SSIM after undoing flips,
            rotations and contrast changes (``verify.py``); the best verified candidate
            becomes rank 1 and its verified SSIM decides the class (reference thresholds
            0.60 / 0.85, or ``verify_thresholds``). 0 (default): DeepSSIM scores only.
        verify_max: Where all ``verify`` candidates of an image verify as duplicates (it copies
            one of a cluster of near-identical training images, which fill its candidates),
            the next ``verify`` are verified too, and so on up to ``verify_max`` candidates
            (default ``4 * verify``; ``verify`` turns this off).
        verify_thresholds: ``(low, high)`` or ``"low,high"`` for the verified SSIMs, e.g.
            calibrated on a validation benchmark; default: the reference 0.60 / 0.85.
        workers: threads that read and resize the files while the network runs (default:
            ``reading_workers()``, half the cores up to 8); results do not depend on it.

    Raises:
        ReadError: empty folders or unreadable files (unless ``skip_unreadable``).
        ModelFolderError: ``model`` is not a model folder.
        RuntimeError: an approximate index found no training neighbour for some synthetic
            image (named).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if verify_max is not None and verify_max < verify:
        raise ValueError(f"verify_max ({verify_max}) must be at least verify ({verify})")
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    net = model if isinstance(model, DeepSSIMModel) else load_model(
        model, device=device, trust_torchscript=trust_torchscript)
    chosen = resolve_thresholds(thresholds, calibration, net.config)
    verify_chosen = REFERENCE_THRESHOLDS if verify_thresholds is None else resolve_thresholds(
        verify_thresholds, None, {})

    t0 = time.perf_counter()
    train_set = collect(train, "training", slices, skip_unreadable, progress)
    synth_set = collect(synthetic, "synthetic", slices, skip_unreadable, progress)
    hasher = ContentHasher()
    train_keys = [hasher.key(r) for r in train_set.refs]
    synth_keys = [hasher.key(r) for r in synth_set.refs]
    timings["scan_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cache = None
    if cache_dir is not None:
        root = default_cache_dir() if cache_dir == "default" else Path(cache_dir)
        cache = EmbeddingCache(root, model_key(net.checksum, net.preprocess.to_dict()))
    common = {"skip_unreadable": skip_unreadable, "batch_size": batch_size, "progress": progress,
              "workers": reading_workers(workers)}
    # The cache holds per-flip embeddings; the score's vectors are made from them (flips.py).
    train_emb, train_pos, train_counts = embed_set(net, train_set, train_keys, cache, **common,
                                                   flips=net.real_flips)
    synth_emb, synth_pos, synth_counts = embed_set(net, synth_set, synth_keys, cache, **common,
                                                   flips=net.synthetic_flips)
    train_emb, synth_emb = net.as_real(train_emb), net.as_synthetic(synth_emb)
    timings["embed_s"] = time.perf_counter() - t0
    train_set, train_keys = _keep(train_set, train_keys, train_pos)
    synth_set, synth_keys = _keep(synth_set, synth_keys, synth_pos)

    t0 = time.perf_counter()
    # Verification looks at up to ``most`` candidates even when fewer are reported.
    most = (4 * verify if verify_max is None else verify_max) if verify > 0 else 0
    found = search_flips(synth_emb, train_emb, max(top_k, most), backend=backend, index=index,
                         device=device, progress=progress)
    rescored = None
    if net.cross_fit:  # found by the best flip, scored by the cross-fitted one
        found, rescored = _rescore_cross_fitted(found, synth_emb, train_emb, net)
    timings["search_s"] = time.perf_counter() - t0
    # Cosines of unit vectors: float rounding can step past 1, and must not outrank an exact copy.
    scores = np.clip(found.scores, -1.0, 1.0)
    scores, indices = _put_exact_copies_first(scores, found.indices, synth_keys, train_keys)
    _check_found(indices, synth_set.ids, found.index)
    train_key_set = set(train_keys)
    exact = np.array([k in train_key_set for k in synth_keys], dtype=bool)
    verified = np.full(scores.shape, np.nan)
    verify_info = None
    if verify > 0:
        t0 = time.perf_counter()
        suspicious = np.flatnonzero((scores[:, 0] > chosen.different_max) & ~exact)
        scores, indices, verified, extended = _verify(
            scores, indices, suspicious, verify, most, verify_chosen.duplicate_min, synth_set.refs,
            train_set.refs, verify_grid, progress)
        verified[exact, 0] = 1.0
        timings["verify_s"] = time.perf_counter() - t0
        verify_info = {"top": verify, "max": most, "extended": extended,
                       "synthetic_images": int(len(suspicious)),
                       "pairs": int(np.isfinite(verified).sum() - exact.sum()),
                       "thresholds": verify_chosen.to_dict(), "grid": asdict(verify_grid)}

    scores, indices, verified = scores[:, :top_k], indices[:, :top_k], verified[:, :top_k]
    pair_labels = classify(scores, chosen)
    checked = np.isfinite(verified)
    pair_labels[checked] = classify(verified[checked], verify_chosen)
    labels = pair_labels[:, 0]
    matches = [
        Match(synth_set.ids[s], r + 1, train_set.ids[int(indices[s, r])], float(scores[s, r]),
              str(pair_labels[s, r]), bool(exact[s]) and r == 0,
              float(verified[s, r]) if checked[s, r] else None)
        for s in range(len(synth_set.ids)) for r in range(scores.shape[1]) if indices[s, r] >= 0
    ]
    timings["total_s"] = time.perf_counter() - t_start
    summary = _summary(net, chosen, train_set, synth_set, scores[:, 0], indices[:, 0], labels, exact,
                       found, top_k, cache, train_counts, synth_counts, timings)
    summary["verify"] = verify_info
    summary["search"]["rescored"] = rescored
    summary["search"]["missing_slots"] = int((indices < 0).sum())
    deciding = np.where(checked[:, 0], verified[:, 0], scores[:, 0]) if verify > 0 else None
    return AuditResult(matches, summary, synth_set.ids, train_set.ids, scores[:, 0].copy(),
                       indices[:, 0].copy(), labels, chosen, synth_set.refs, train_set.refs,
                       deciding, verify_chosen if verify > 0 else None)


def _keep(images: ImageSet, keys: list[str], positions: np.ndarray) -> tuple[ImageSet, list[str]]:
    """The set without the images that could not be read."""
    if len(positions) == len(images.ids):
        return images, keys
    pick = positions.tolist()
    kept = ImageSet(images.name, [images.ids[k] for k in pick], [images.refs[k] for k in pick],
                    images.sources, images.skipped)
    return kept, [keys[k] for k in pick]


def _verify(
    scores: np.ndarray, indices: np.ndarray, rows: np.ndarray, top: int, most: int, duplicate_min: float,
    synth_refs: list[ImageRef], train_refs: list[ImageRef], grid: VerifyGrid, progress: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Verified SSIM of the ``top`` candidates of ``rows``, which are re-ranked by it.

    Where every candidate verified so far is a duplicate (verified SSIM > ``duplicate_min``),
    the image copies a cluster of near-identical training images, and the best of them can
    rank further down by DeepSSIM: the next ``top`` candidates are verified too, up to
    ``most`` in all. Returns the scores, indices and verified SSIMs (NaN where not verified),
    re-ordered, and the number of images whose candidates were extended.
    """
    scores, indices = scores.copy(), indices.copy()
    verified = np.full(scores.shape, np.nan)
    synthetic = {int(s): load_ref(synth_refs[s]) for s in rows}
    train_images: dict[int, np.ndarray] = {}
    todo, start, end = [int(s) for s in rows], 0, min(most, scores.shape[1])
    while todo and start < end:
        stop = min(start + top, end)
        pairs, where = [], []
        for s in todo:
            for r in range(start, stop):
                t = int(indices[s, r])
                if t < 0:  # an approximate index found fewer neighbours
                    continue
                if t not in train_images:
                    train_images[t] = load_ref(train_refs[t])
                pairs.append((train_images[t], synthetic[s]))
                where.append((s, r))
        for (s, r), v in zip(where, verify_pairs(pairs, grid, progress=progress)):
            verified[s, r] = v
        found = indices[:, start:stop] >= 0  # a block an approximate index left empty is passed over
        todo = [s for s in todo if np.all(verified[s, start:stop][found[s]] > duplicate_min)]
        start = stop
    extended = int(np.isfinite(verified[rows, top:]).any(axis=1).sum()) if len(rows) else 0
    for s in rows:
        span = int(np.flatnonzero(np.isfinite(verified[s])).max(initial=-1)) + 1
        order = np.argsort(-verified[s, :span], kind="stable")  # NaN (empty slots) last
        for arr in (scores, indices, verified):
            arr[s, :span] = arr[s, :span][order]
    return scores, indices, verified, extended


def _check_found(indices: np.ndarray, synth_ids: list[str], index: str) -> None:
    """Approximate indexes may return fewer neighbours than asked (index -1): those slots are
    left out of the matches, but an image with no neighbour at all cannot be judged."""
    empty = np.flatnonzero(indices[:, 0] < 0)
    if len(empty):
        names = ", ".join(synth_ids[s] for s in empty[:5]) + (", ..." if len(empty) > 5 else "")
        raise RuntimeError(
            f"the approximate {index!r} index found no training neighbour for {len(empty)} synthetic "
            f"image(s) ({names}); use the exact search (index 'flat')"
        )


def _put_exact_copies_first(
    scores: np.ndarray, indices: np.ndarray, synth_keys: list[str], train_keys: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic image whose content equals a training image's is matched to that image
    first, with score 1: equal embeddings can lose a float tie to a near-identical image."""
    first: dict[str, int] = {}
    for k, key in enumerate(train_keys):
        first.setdefault(key, k)
    scores, indices = scores.copy(), indices.copy()
    for s, key in enumerate(synth_keys):
        t = first.get(key)
        if t is None:
            continue
        rest = [(sc, ix) for sc, ix in zip(scores[s], indices[s]) if ix != t][: scores.shape[1] - 1]
        scores[s] = [1.0] + [sc for sc, _ in rest]
        indices[s] = [t] + [ix for _, ix in rest]
    return scores, indices


def _rescore_cross_fitted(found: Any, synth_emb: np.ndarray, train_emb: np.ndarray,
                          net: DeepSSIMModel) -> tuple[Any, dict[str, Any]]:
    """The best-flip search's candidates re-scored and re-ordered by the cross-fitted rule,
    and for how many synthetic images the first is certainly the cross-fitted best of the
    whole training set: a cross-fitted score never exceeds the best-flip one, so no image
    the search left out can beat a first that scores at least the last candidate's best-flip
    score (or when the search returned every training image; with an approximate index,
    certain among what the index finds)."""
    everything = found.indices.shape[1] >= len(train_emb)
    floor = found.scores[:, -1]
    found = rescore(found, synth_emb, train_emb, net.pair_scores)
    certain = np.ones(len(floor), bool) if everything else np.isfinite(floor) & (found.scores[:, 0] >= floor)
    return found, {"rule": "cross_fit", "top1_certain": int(certain.sum()), "synthetic_images": len(floor)}


def _summary(
    model: DeepSSIMModel, thresholds: Thresholds, train_set: ImageSet, synth_set: ImageSet,
    best: np.ndarray, best_train: np.ndarray, labels: np.ndarray, exact: np.ndarray, found: Any,
    top_k: int, cache: EmbeddingCache | None, train_counts: dict[str, int],
    synth_counts: dict[str, int], timings: dict[str, float],
) -> dict[str, Any]:
    n = len(labels)
    counts = {c: int((labels == c).sum()) for c in CLASSES}
    copied = Counter(int(t) for t, c in zip(best_train, labels) if c == "duplicate")
    top_score: dict[int, float] = {}
    for t, c, s in zip(best_train, labels, best):
        if c == "duplicate":
            top_score[int(t)] = max(top_score.get(int(t), -1.0), float(s))
    most = sorted(copied.items(), key=lambda kv: (-kv[1], -top_score[kv[0]], kv[0]))[:MOST_COPIED]
    rate = counts["duplicate"] / n if n else 0.0
    return {
        "deepssim_version": library_versions()["deepssim"],
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "n_train": len(train_set.ids),
        "n_synthetic": n,
        "train_sources": train_set.sources,
        "synthetic_sources": synth_set.sources,
        "counts": counts,
        "memorization_rate": rate,
        "memorization_rate_ci95": list(wilson_interval(counts["duplicate"], n)),
        "n_train_copied": len(copied),
        "most_copied": [{"train": train_set.ids[t], "n_copies": k, "max_score": round(top_score[t], 6)}
                        for t, k in most],
        "exact_copies": int(exact.sum()),
        "best_score": {"mean": float(best.mean()), "median": float(np.median(best)), "max": float(best.max())},
        "thresholds": thresholds.to_dict(),
        "model": {"path": model.path, "sha256": model.checksum,
                  "preset": model.config.get("preset"), "preprocess": model.preprocess.to_dict(),
                  "device": str(model.device), "flip_search": model.flip_search,
                  "joint_flips": model.joint_flips, "cross_fit": model.cross_fit},
        "search": {"backend": found.backend, "index": found.index, "top_k": top_k,
                   "device": found.device, "recall": found.recall},
        "cache": None if cache is None else {
            "folder": str(cache.folder), "hits": train_counts["hits"] + synth_counts["hits"],
            "misses": train_counts["misses"] + synth_counts["misses"], "corrupt_shards": len(cache.corrupt)},
        "skipped_unreadable": train_set.skipped + synth_set.skipped,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "versions": library_versions(),
    }
