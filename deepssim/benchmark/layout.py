"""The files of a memorization benchmark folder, and small readers for them.

A benchmark folder (docs/benchmark.md) holds ``train/``, ``holdout/`` (non-members that made no
synthetic image, listed in ``holdout.csv``), ``synthetic_clean/``, ``synthetic/``,
``pairs.csv`` (``real,synthetic,label`` + extra columns), ``audit.csv``
(``synthetic,nearest_train,nearest_ssim,is_copy``) and ``benchmark.json``. Paths in the CSV
files are relative to the folder; a ``synthetic/NAME`` file has its clean twin at
``synthetic_clean/NAME``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..classes import CLASSES, DUPLICATE_THRESHOLD, SIMILAR_THRESHOLD, class_of
from ..readers.ids import check_inside_root
from ..readers.tables import read_table

TRAIN_DIR = "train"
CLEAN_DIR = "synthetic_clean"
SYNTHETIC_DIR = "synthetic"
PAIRS_CSV = "pairs.csv"
AUDIT_CSV = "audit.csv"
SYNTHETIC_CSV = "synthetic.csv"
TRAIN_CSV = "train.csv"
HOLDOUT_DIR = "holdout"
HOLDOUT_CSV = "holdout.csv"
INFO_JSON = "benchmark.json"
FORMAT_VERSION = 1

LABELS = CLASSES
"""The three classes, in order of increasing SSIM (``deepssim.classes``)."""
PAIR_KINDS = ("source", "best", "hard", "random")

PAIRS_COLUMNS = ("real", "synthetic", "label")
AUDIT_COLUMNS = ("synthetic", "nearest_train", "nearest_ssim", "is_copy")

_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


def classify(ssim: float) -> str:
    """The class of a reference SSIM value: > 0.85 duplicate, > 0.60 similar, else different."""
    return class_of(ssim)


def clean_twin(synthetic: str) -> str:
    """``synthetic/NAME`` -> ``synthetic_clean/NAME`` (the unperturbed image of a pair)."""
    head, sep, tail = synthetic.partition("/")
    if not sep or head != SYNTHETIC_DIR:
        raise ValueError(f"{synthetic!r} is not a path under {SYNTHETIC_DIR}/")
    return f"{CLEAN_DIR}/{tail}"


@dataclass(frozen=True)
class Pair:
    """One labelled pair of ``pairs.csv``; ``extra`` holds the columns beyond the known ones."""

    real: str
    synthetic: str
    label: str
    ssim: float | None = None
    kind: str | None = None
    family: str | None = None
    strength: float | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def clean(self) -> str:
        """The clean twin of ``synthetic`` (for the registered condition)."""
        return clean_twin(self.synthetic)


@dataclass(frozen=True)
class AuditTruth:
    """One row of ``audit.csv``: the oracle's nearest training image of a synthetic image.

    ``also_nearest`` lists other training images with exactly the same SSIM (pixel-identical
    training images), any of which is an equally right answer."""

    synthetic: str
    nearest_train: str
    nearest_ssim: float
    is_copy: bool
    also_nearest: tuple[str, ...] = ()

    @property
    def nearest_all(self) -> tuple[str, ...]:
        return (self.nearest_train, *self.also_nearest)


def _csv_path(bench_or_file: str | Path, default_name: str) -> Path:
    path = Path(bench_or_file)
    return path / default_name if path.is_dir() else path


def _read_rows(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    return read_table(path, required)[1]  # UTF-8 with or without a byte-order mark


def _float(path: Path, line: int, column: str, text: str | None) -> float:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{path}, line {line}: column {column}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{path}, line {line}: column {column}: {text!r} is not finite")
    return value


def _optional_float(path: Path, line: int, column: str, text: str | None) -> float | None:
    return None if text is None or text == "" else _float(path, line, column, text)


def _bool(path: Path, line: int, column: str, text: str | None) -> bool:
    word = (text or "").strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"{path}, line {line}: column {column}: {text!r} is not true/false (or 1/0)")


def _text(path: Path, line: int, column: str, text: str | None) -> str:
    if not text:
        raise ValueError(f"{path}, line {line}: column {column} is empty")
    return text


def read_pairs_csv(bench_or_file: str | Path) -> list[Pair]:
    """The pairs of a benchmark folder's ``pairs.csv`` (or of the CSV file given).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a missing column or a bad value, naming the file, line and column.
    """
    path = _csv_path(bench_or_file, PAIRS_CSV)
    known = {*PAIRS_COLUMNS, "ssim", "kind", "family", "strength"}
    pairs = []
    for line, row in enumerate(_read_rows(path, PAIRS_COLUMNS), start=2):
        label = (row.get("label") or "").strip().lower()
        if label not in LABELS:
            raise ValueError(
                f"{path}, line {line}: column label: {row.get('label')!r} is not one of {', '.join(LABELS)}"
            )
        pairs.append(Pair(
            real=_text(path, line, "real", row.get("real")),
            synthetic=_text(path, line, "synthetic", row.get("synthetic")),
            label=label,
            ssim=_optional_float(path, line, "ssim", row.get("ssim")),
            kind=row.get("kind") or None,
            family=row.get("family") or None,
            strength=_optional_float(path, line, "strength", row.get("strength")),
            extra={k: v for k, v in row.items() if k not in known and k is not None},
        ))
    return pairs


def read_audit_csv(bench_or_file: str | Path) -> list[AuditTruth]:
    """The rows of a benchmark folder's ``audit.csv`` (or of the CSV file given).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a missing column or a bad value, or a path leading outside the folder
            holding the file, naming the file, line and column.
    """
    path = _csv_path(bench_or_file, AUDIT_CSV)
    rows = []
    for line, row in enumerate(_read_rows(path, AUDIT_COLUMNS), start=2):
        also = tuple(p for p in (row.get("also_nearest") or "").split(";") if p)
        rows.append(AuditTruth(
            synthetic=_text(path, line, "synthetic", row.get("synthetic")),
            nearest_train=_text(path, line, "nearest_train", row.get("nearest_train")),
            nearest_ssim=_float(path, line, "nearest_ssim", row.get("nearest_ssim")),
            is_copy=_bool(path, line, "is_copy", row.get("is_copy")),
            also_nearest=also,
        ))
    # The judge reads the files these rows name: they must stay inside the benchmark.
    for line, r in enumerate(rows, start=2):
        for column, names in (("synthetic", [r.synthetic]), ("nearest_train", [r.nearest_train]),
                              ("also_nearest", r.also_nearest)):
            for name in names:
                check_inside_root(path.parent, name, f"{path}, line {line}, column {column}")
    return rows


def load_benchmark_info(bench_dir: str | Path) -> dict[str, Any]:
    """The parsed ``benchmark.json`` of a benchmark folder (parameters, seed, counts, sources).

    Raises:
        FileNotFoundError: the folder or its ``benchmark.json`` is missing.
        ValueError: the file is not valid JSON, or not a benchmark description of a known format.
    """
    path = Path(bench_dir)
    path = path / INFO_JSON if path.is_dir() or not path.suffix else path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found (is {path.parent} a benchmark folder?)")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(info, dict) or "format_version" not in info:
        raise ValueError(f"{path}: not a benchmark description (no format_version)")
    if info["format_version"] != FORMAT_VERSION:
        raise ValueError(f"{path}: benchmark format {info['format_version']}, expected {FORMAT_VERSION}")
    return info


__all__ = [
    "AUDIT_CSV",
    "CLEAN_DIR",
    "DUPLICATE_THRESHOLD",
    "INFO_JSON",
    "LABELS",
    "PAIRS_CSV",
    "SIMILAR_THRESHOLD",
    "SYNTHETIC_DIR",
    "TRAIN_DIR",
    "AuditTruth",
    "Pair",
    "classify",
    "clean_twin",
    "load_benchmark_info",
    "read_audit_csv",
    "read_pairs_csv",
]
