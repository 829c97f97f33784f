"""File-level scoring: embeddings of a folder to ``.npz``, scores of a pairs CSV."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from ..readers import ReadError, SliceSpec, read_image, scan
from ..readers.ids import check_listed_paths
from ..readers.read import read_skipping, reading_workers
from ..readers.tables import read_table
from .api import DeepSSIMModel
from ..storage import atomic_write_bytes

log = logging.getLogger(__name__)


def embed_folder(
    model: DeepSSIMModel,
    root: str | Path,
    *,
    slices: SliceSpec = SliceSpec(),
    batch_size: int = 64,
    progress: bool | None = None,
    skip_unreadable: bool = False,
    flips: bool = False,
    workers: int | None = None,
    skipped: list[ReadError] | None = None,
) -> tuple[list[str], np.ndarray]:
    """Ids and float32 embeddings of every image under ``root``: (N, D), or with ``flips``
    (N, 4, D), those of each image's four flips (what the scores of a ``best-flip`` or
    ``cross-fit`` model are made of). Files are read and resized in ``workers`` threads
    (default ``reading_workers()``) while the network runs; the result does not depend on it.

    With ``skip_unreadable``, the files that fail, in the scan or when their pixels are read
    (truncated data, NaN values, over the pixel limit), are left out, logged, and added to
    ``skipped`` when it is given; the ids are those of the images embedded.

    Raises:
        ReadError: unreadable files, listed by name (unless ``skip_unreadable``), or none readable.
    """
    result = scan(root, slices, progress=bool(progress))
    result.require_images(skip_unreadable)
    failed = list(result.errors)
    for error in failed:
        log.warning("skipping unreadable %s", error)
    done: list[int] = []
    images = read_skipping(result.refs, skip=skip_unreadable, done=done, failed=failed,
                           workers=reading_workers(workers), transform=model.preprocess.resize)
    embeddings = model.embed(images, batch_size=batch_size, progress=progress, total=len(result.refs), flips=flips)
    if skipped is not None:
        skipped += failed
    if not done:
        raise ReadError(result.root, f"no readable image found ({len(failed)} unreadable)")
    return [result.refs[k].id for k in done], embeddings


def save_embeddings(path: str | Path, ids: list[str], embeddings: np.ndarray, model: DeepSSIMModel) -> None:
    """``ids`` (str) + ``embeddings`` (float32) + the model checksum and its scoring rule,
    written atomically. The rule is ``scoring`` (``scoring.py``) and, for readers of the
    flags, ``flip_search`` (a pair's score is taken over the flips of its synthetic image),
    ``joint_flips`` (each cosine is the mean over the four flips of both images, made from the
    embeddings of each image's flips, ``flips.joint``) and ``cross_fit`` (the relative flip
    cross-fitted, ``flips.cross_fitted``)."""
    buffer = io.BytesIO()
    np.savez(buffer, ids=np.array(ids, dtype=str), embeddings=embeddings.astype(np.float32),
             model_sha256=np.array(model.checksum), scoring=np.array(model.scoring),
             flip_search=np.array(model.flip_search), joint_flips=np.array(model.joint_flips),
             cross_fit=np.array(model.cross_fit))
    atomic_write_bytes(Path(path), buffer.getvalue())


def read_pairs_csv(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a pairs CSV with at least the columns ``real`` and ``synthetic``
    (UTF-8, with or without a byte-order mark)."""
    return read_table(path, ("real", "synthetic"), what="pairs file", rows_name="pairs")


def score_pairs_csv(
    model: DeepSSIMModel, pairs_csv: str | Path, root: str | Path, *, batch_size: int = 64,
    progress: bool | None = None, allow_outside_root: bool = False,
) -> tuple[list[str], list[dict[str, str]]]:
    """Rows of ``pairs_csv`` with a ``score`` column added; each image is embedded once (for
    a model whose rule flips the synthetic side, once per column it appears in, with its four
    flips as the score needs them). Image paths must stay inside ``root`` (after ``..`` and
    symbolic links) unless ``allow_outside_root``.

    Raises:
        ReadError: naming every missing or unreadable image (nothing is scored as 0), or the
            line of a path that leads outside ``root``.
        ValueError: a missing column or a row without a path, naming the file and line.
    """
    header, rows = read_pairs_csv(pairs_csv)
    root = Path(root)
    for line, row in enumerate(rows, start=2):
        for column in ("real", "synthetic"):
            if not row.get(column):
                raise ValueError(f"{pairs_csv}, line {line}: column {column} is empty")
    check_listed_paths(pairs_csv, root, {c: [row[c] for row in rows] for c in ("real", "synthetic")},
                       allow_outside=allow_outside_root)
    names = sorted({row[col] for row in rows for col in ("real", "synthetic")})
    missing = [n for n in names if not (root / n.split("#", 1)[0]).exists()]
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise ReadError(root, f"{len(missing)} image(s) named in {pairs_csv} not found: {shown}")
    options = {"batch_size": batch_size, "progress": progress}
    if model.synthetic_flips:
        reals = sorted({row["real"] for row in rows})
        synths = sorted({row["synthetic"] for row in rows})
        er = model.embed_real((read_image(root / n) for n in reals), total=len(reals), **options)
        es = model.embed_synthetic((read_image(root / n) for n in synths), total=len(synths), **options)
    else:
        reals = synths = names
        er = es = model.embed((read_image(root / n) for n in names), total=len(names), **options)
    ir = {name: k for k, name in enumerate(reals)}
    is_ = {name: k for k, name in enumerate(synths)}
    scores = model.pair_scores(er[[ir[row["real"]] for row in rows]], es[[is_[row["synthetic"]] for row in rows]])
    for row, score in zip(rows, scores):
        row["score"] = f"{float(score):.6f}"
    return [*header, "score"] if "score" not in header else header, rows
