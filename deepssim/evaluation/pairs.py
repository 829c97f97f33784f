"""Labelled pair files: the benchmark's ``pairs.csv`` and the reference code's format.

Two formats are read, told apart by their header:

- benchmark (docs/benchmark.md): ``real,synthetic,label`` (+ extra columns), paths relative to the
  benchmark folder, ``label`` one of ``different``, ``similar``, ``duplicate``. The
  ``registered`` condition scores ``synthetic_clean/NAME``, the ``perturbed`` one
  ``synthetic/NAME``.
- reference (the DeepSSIM authors' code): ``real_key,synth_key,label`` (+ ``ssim``), labels
  ``0`` = different, ``1`` = duplicate, ``2`` = similar, keys ``UID___NAME`` naming
  ``UID/NAME.png`` under the root. These files have no perturbed twin: for the ``perturbed``
  condition the harness perturbs each synthetic image itself (seeded, see ``images.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from ..classes import CLASSES
from ..benchmark import read_pairs_csv
from ..readers.ids import check_listed_paths
from ..readers.tables import read_header, read_table

Condition = Literal["registered", "perturbed"]
CONDITIONS: tuple[Condition, ...] = ("registered", "perturbed")
PairFormat = Literal["benchmark", "reference"]
REFERENCE_LABELS = {"0": "different", "1": "duplicate", "2": "similar"}
"""Label codes of the reference code's pair files."""
REFERENCE_COLUMNS = ("real_key", "synth_key", "label")
KEY_SEPARATOR = "___"


@dataclass(frozen=True, eq=False)
class PairFile:
    """The labelled pairs of one file, with image paths resolved for one condition.

    Attributes:
        path: The pair file.
        root: The folder the image paths are relative to.
        format: ``benchmark`` or ``reference``.
        condition: ``registered`` or ``perturbed``.
        real: Path of each pair's real image, relative to ``root``.
        synthetic: Path of each pair's synthetic image as stored for this condition.
        labels: Index of each pair's true class in ``CLASSES`` (0 different, 1 similar,
            2 duplicate), int64 (P,).
        perturb_synthetic: The synthetic images must be perturbed by the caller (a format
            without perturbed files, under the ``perturbed`` condition).
    """

    path: Path
    root: Path
    format: PairFormat
    condition: Condition
    real: tuple[str, ...]
    synthetic: tuple[str, ...]
    labels: np.ndarray
    perturb_synthetic: bool = False

    def __len__(self) -> int:
        return len(self.real)

    def head(self, n: int | None) -> PairFile:
        """The first ``n`` pairs (all of them when ``n`` is None)."""
        if n is None:
            return self
        if n < 1:
            raise ValueError(f"the number of pairs to keep must be >= 1, got {n}")
        return replace(self, real=self.real[:n], synthetic=self.synthetic[:n], labels=self.labels[:n])

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(CLASSES))
        return {name: int(c) for name, c in zip(CLASSES, counts)}


def reference_key_path(key: str) -> str:
    """``UID___NAME`` -> ``UID/NAME.png`` (the reference code's image keys).

    Raises:
        ValueError: the key does not hold exactly one ``___``.
    """
    parts = key.split(KEY_SEPARATOR)
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"{key!r} is not a reference image key UID{KEY_SEPARATOR}NAME")
    return f"{parts[0]}/{parts[1]}.png"


def detect_format(path: str | Path) -> PairFormat:
    """``benchmark`` or ``reference``, from the header of a pair file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the header matches neither format.
    """
    path = Path(path)
    header = read_header(path, what="pairs file")
    if all(c in header for c in ("real", "synthetic", "label")):
        return "benchmark"
    if all(c in header for c in REFERENCE_COLUMNS):
        return "reference"
    raise ValueError(
        f"{path}: not a pair file; expected the columns real,synthetic,label (benchmark) or "
        f"real_key,synth_key,label (reference code); found {', '.join(header) or 'none'}"
    )


def _read_reference(path: Path) -> tuple[list[str], list[str], list[str]]:
    real, synthetic, labels = [], [], []
    _, rows = read_table(path, REFERENCE_COLUMNS, what="pairs file")
    for line, row in enumerate(rows, start=2):
        code = (row.get("label") or "").strip()
        if code not in REFERENCE_LABELS:
            raise ValueError(f"{path}, line {line}: column label: {row.get('label')!r} is not "
                             "0 (different), 1 (duplicate) or 2 (similar)")
        try:
            real.append(reference_key_path((row.get("real_key") or "").strip()))
            synthetic.append(reference_key_path((row.get("synth_key") or "").strip()))
        except ValueError as exc:
            raise ValueError(f"{path}, line {line}: {exc}") from None
        labels.append(REFERENCE_LABELS[code])
    return real, synthetic, labels


def read_pair_file(
    path: str | Path, root: str | Path | None = None, condition: Condition = "registered", *,
    allow_outside_root: bool = False,
) -> PairFile:
    """The pairs of a benchmark ``pairs.csv`` or a reference-code pair file.

    Args:
        path: The pair file (or a benchmark folder holding ``pairs.csv``).
        root: The folder image paths are relative to (default: the pair file's folder).
        condition: ``registered`` (clean synthetic images) or ``perturbed``.
        allow_outside_root: Accept image paths that lead outside ``root`` (``..``, absolute
            paths, symbolic links out of it); refused by default, as their images would be
            read and reported.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an unknown format, condition, label or key, naming the file and line.
        ReadError: an image path leading outside ``root``, naming the file, line and path.
    """
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}: use registered or perturbed")
    path = Path(path)
    if path.is_dir():
        path = path / "pairs.csv"
    root = path.parent if root is None else Path(root)
    fmt = detect_format(path)
    if fmt == "benchmark":
        pairs = read_pairs_csv(path)
        real = [p.real for p in pairs]
        try:
            synthetic = [p.clean if condition == "registered" else p.synthetic for p in pairs]
        except ValueError as exc:
            raise ValueError(f"{path}: {exc} (the registered condition needs synthetic/NAME "
                             "paths with their clean twin in synthetic_clean/)") from None
        names = [p.label for p in pairs]
        perturb = False
    else:
        real, synthetic, names = _read_reference(path)
        perturb = condition == "perturbed"
    columns = ("real", "synthetic") if fmt == "benchmark" else REFERENCE_COLUMNS[:2]
    check_listed_paths(path, root, dict(zip(columns, (real, synthetic))), allow_outside=allow_outside_root)
    labels = np.array([CLASSES.index(n) for n in names], dtype=np.int64)
    return PairFile(path, root, fmt, condition, tuple(real), tuple(synthetic), labels, perturb)


