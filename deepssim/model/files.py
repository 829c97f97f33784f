"""File-level scoring: embeddings of a folder to ``.npz``, scores of a pairs CSV."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..readers import ReadError, SliceSpec, read_image, scan
from ..readers.read import reading_workers
from .api import DeepSSIMModel
from ..storage import atomic_write_bytes


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
) -> tuple[list[str], np.ndarray]:
    """Ids and float32 embeddings of every image under ``root``: (N, D), or with ``flips``
    (N, 4, D), those of each image's four flips (what the scores of a ``best-flip`` or
    ``cross-fit`` model are made of). Files are read and resized in ``workers`` threads
    (default ``reading_workers()``) while the network runs; the result does not depend on it.

    Raises:
        ReadError: unreadable files, listed by name (unless ``skip_unreadable``), or none found.
    """
    result = scan(root, slices, progress=bool(progress))
    result.require_images(skip_unreadable)
    ids = [ref.id for ref in result.refs]
    images = (image for _, image in result.load(workers=reading_workers(workers),
                                                transform=model.preprocess.resize))
    return ids, model.embed(images, batch_size=batch_size, progress=progress, total=len(ids), flips=flips)


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
    """Header and rows of a pairs CSV with at least the columns ``real`` and ``synthetic``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pairs file not found")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        missing = {"real", "synthetic"} - set(header)
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}; "
                             f"found {', '.join(header) or 'none'}")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path}: no pairs")
    return header, rows


def score_pairs_csv(
    model: DeepSSIMModel, pairs_csv: str | Path, root: str | Path, *, batch_size: int = 64,
    progress: bool | None = None,
) -> tuple[list[str], list[dict[str, str]]]:
    """Rows of ``pairs_csv`` with a ``score`` column added; each image is embedded once (for
    a model whose rule flips the synthetic side, once per column it appears in, with its four
    flips as the score needs them).

    Raises:
        ReadError: naming every missing or unreadable image (nothing is scored as 0).
    """
    header, rows = read_pairs_csv(pairs_csv)
    root = Path(root)
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
