"""Writing a benchmark folder: 16-bit PNG files, file names, the CSV files, and the install.

Images are written as 16-bit grayscale PNGs and read back before any label is computed, so
that every label is the SSIM of the files a user reads. The folder is built in a hidden folder
beside ``out`` and renamed into place at the end: an interrupted build leaves no half-written
benchmark, and a rebuild replaces an old benchmark in one step.
"""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..classes import DUPLICATE_THRESHOLD, SIMILAR_THRESHOLD
from ..readers import read_image
from ..refssim import ssim_matrix
from ..storage import atomic_write_bytes, write_csv
from ..transforms.perturb import BENCHMARK_PERTURB, apply_to_image, draw_params
from ..versions import __version__
from .copies import Synthetic
from .label import audit_row, choose_pairs, count_rows, pair_rows, ranking, synthetic_row
from .layout import (
    AUDIT_CSV,
    CLEAN_DIR,
    FORMAT_VERSION,
    HOLDOUT_CSV,
    HOLDOUT_DIR,
    INFO_JSON,
    PAIRS_CSV,
    SYNTHETIC_CSV,
    SYNTHETIC_DIR,
    TRAIN_CSV,
    TRAIN_DIR,
)

PERTURBATION = BENCHMARK_PERTURB
"""The perturbation of ``synthetic/`` (``transforms.perturb.BENCHMARK_PERTURB``)."""


def to_uint16(image: np.ndarray) -> np.ndarray:
    """Min-max scale one image to the full 16-bit range (a constant image becomes zeros).

    The reference SSIM z-scores each image first, so this affine map changes no SSIM value
    beyond the rounding to 65,536 levels; labels are computed on the written files anyway.
    """
    x = np.asarray(image, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    if not hi > lo:
        return np.zeros(x.shape, dtype=np.uint16)
    return np.round((x - lo) * (65535.0 / (hi - lo))).astype(np.uint16)


def png_bytes(image: np.ndarray) -> bytes:
    """``image`` scaled to 16 bits (``to_uint16``) as 16-bit grayscale PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(to_uint16(image)).save(buffer, format="PNG")  # uint16 -> 16-bit grayscale PNG
    return buffer.getvalue()


def _write_and_read(folder: Path, rel: str, image: np.ndarray) -> np.ndarray:
    """Write ``image`` as a 16-bit PNG at ``folder/rel`` and return the file as read back."""
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(image))
    return read_image(path)


_UNSAFE = re.compile(r"[^A-Za-z0-9._/-]+")
_IMAGE_SUFFIX = re.compile(r"(\.nii\.gz|\.[A-Za-z0-9]{1,5})$")


def train_names(ids: Sequence[str], folder: str = TRAIN_DIR) -> list[str]:
    """A unique ``train/....png`` path (in ``folder``) for each image id: the id's folders and
    stem, with its fragment (slice, npz member) appended and characters outside
    [A-Za-z0-9._-] replaced."""
    names: list[str] = []
    taken: set[str] = set()
    for image_id in ids:
        path, _, fragment = image_id.partition("#")
        stem = _IMAGE_SUFFIX.sub("", path)
        if fragment:
            stem += "_" + fragment
        stem = _UNSAFE.sub("_", stem).strip("/") or "image"
        stem = "/".join(part if part not in ("", ".", "..") else "_" for part in stem.split("/"))
        name, k = f"{folder}/{stem}.png", 1
        while name in taken:
            k += 1
            name = f"{folder}/{stem}-{k}.png"
        taken.add(name)
        names.append(name)
    return names


def synthetic_names(name_order: np.ndarray) -> list[str]:
    """``sNNNNN.png`` for each synthetic image: numbers in a random order (``name_order``), so
    that a name tells nothing of how the image was made."""
    width = max(5, len(str(len(name_order) - 1)))
    return [f"s{int(k):0{width}d}.png" for k in name_order]


def write_files(
    tmp: Path, ids: list[str], group: np.ndarray, stored: list[np.ndarray], train: np.ndarray,
    items: list[Synthetic], name_order: np.ndarray, perturb_seeds: np.ndarray, n_hard: int,
    n_random: int, rng: np.random.Generator, progress: bool,
) -> dict[str, Any]:
    """Write the images and CSV files of a benchmark into ``tmp``; return its counts.

    ``stored``: every real image as stored; ``train``: the indices of the training images;
    ``items``: the synthetic images, made; item k gets name ``name_order[k]`` and its
    perturbation from ``perturb_seeds[k]``; ``rng`` draws the random pairs.
    """
    syn_names = synthetic_names(name_order)
    train_files = train_names([ids[i] for i in train])
    train_pos = {int(i): k for k, i in enumerate(train)}

    train_back = [
        _write_and_read(tmp, name, stored[i])
        for name, i in tqdm(list(zip(train_files, train)), desc="writing train", unit="image",
                            disable=not progress, file=sys.stderr)
    ]
    clean_back = [
        _write_and_read(tmp / CLEAN_DIR, name, it.image)  # type: ignore[arg-type]
        for name, it in zip(syn_names, items)
    ]
    # The oracle: reference SSIM with the real (training) image first, as labels define it.
    S = ssim_matrix(train_back, clean_back, device="cpu", progress=progress).T  # (synthetic, train)

    (tmp / SYNTHETIC_DIR).mkdir(exist_ok=True)
    syn_rows, audit_rows, pairs = [], [], []
    # In name order: the CSV rows are sorted by name, and the random pairs drawn in that order.
    for k in tqdm(np.argsort(syn_names), desc="perturbed + pairs", unit="image", disable=not progress,
                  file=sys.stderr):
        it, name, row = items[k], syn_names[k], S[k]
        params = draw_params(PERTURBATION, 1, np.random.default_rng(int(perturb_seeds[k])))
        (tmp / SYNTHETIC_DIR / name).write_bytes(png_bytes(apply_to_image(clean_back[k], params)))
        synthetic = f"{SYNTHETIC_DIR}/{name}"
        source = train_pos[it.origin] if it.member else None
        origin_ssim = float(row[source]) if source is not None else it.origin_ssim
        syn_rows.append(synthetic_row(synthetic, it, ids[it.origin],
                                      train_files[source] if source is not None else "", origin_ssim, params))
        order = ranking(row)
        audit_rows.append(audit_row(synthetic, row, order, train_files))
        pairs += pair_rows(synthetic, it, row, choose_pairs(order, source, n_hard, n_random, rng), train_files)

    write_csv(tmp / PAIRS_CSV, list(pairs[0]), pairs)
    write_csv(tmp / AUDIT_CSV, list(audit_rows[0]), audit_rows)
    write_csv(tmp / SYNTHETIC_CSV, list(syn_rows[0]), syn_rows)
    write_csv(tmp / TRAIN_CSV, ["train", "origin_id", "group"], [
        {"train": n, "origin_id": ids[i], "group": str(int(group[i]))} for n, i in zip(train_files, train)
    ])
    return count_rows(len(ids), group, train, syn_rows, audit_rows, pairs)


def write_holdout(tmp: Path, ids: list[str], group: np.ndarray, stored: list[np.ndarray],
                  holdout: np.ndarray) -> int:
    """Write the holdout images (indices ``holdout``) into ``holdout/`` as 16-bit PNGs and
    list them in ``holdout.csv`` (``holdout,origin_id,group``); return their number."""
    names = train_names([ids[i] for i in holdout], HOLDOUT_DIR)
    for name, i in zip(names, holdout):
        _write_and_read(tmp, name, stored[i])
    write_csv(tmp / HOLDOUT_CSV, ["holdout", "origin_id", "group"], [
        {"holdout": n, "origin_id": ids[i], "group": str(int(group[i]))} for n, i in zip(names, holdout)
    ])
    return len(names)


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an ``out`` that holds anything but an old benchmark (and that one without
    ``overwrite``), before any work."""
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"{out} exists and is not empty: choose another folder or pass --overwrite")
    if not (out / INFO_JSON).is_file():
        raise FileExistsError(
            f"{out} is not empty and holds no {INFO_JSON}: refusing to overwrite a folder that "
            "is not a benchmark (remove it yourself)"
        )


def describe(
    created_by: str, parameters: dict[str, Any], sources: dict[str, Any], counts: dict[str, Any],
    **more: Any,
) -> dict[str, Any]:
    """The content of ``benchmark.json``: format, versions, perturbation and thresholds, then
    the build's parameters, its sources, ``more`` sections and the counts."""
    return {
        "format_version": FORMAT_VERSION,
        "deepssim_version": __version__,
        "created_by": created_by,
        "perturbation": asdict(PERTURBATION),
        "thresholds": {"similar": SIMILAR_THRESHOLD, "duplicate": DUPLICATE_THRESHOLD},
        "ssim": "reference SSIM: per-image z-score, scikit-image defaults, data_range of the real image",
        "parameters": parameters,
        "sources": sources,
        **more,
        "counts": counts,
    }


def finish(tmp: Path, info: dict[str, Any]) -> None:
    """Write ``benchmark.json`` into the build folder: the last file of a complete build
    (``storage.replacing_folder`` then moves it into place, replacing an old benchmark)."""
    atomic_write_bytes(tmp / INFO_JSON, (json.dumps(info, indent=2) + "\n").encode())
