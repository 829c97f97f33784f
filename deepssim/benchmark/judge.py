"""An audit judged against a benchmark's oracle (``audit.csv``): how well were copies found?"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..classes import candidate_cuts
from ..readers.tables import open_csv
from .layout import TRAIN_CSV


class Truth(Protocol):
    """One row of ``audit.csv`` (paths relative to the benchmark folder), e.g. ``AuditTruth``."""

    synthetic: str
    is_copy: bool

    @property
    def nearest_all(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class CopyDetection:
    """Flagged copies (class ``duplicate``) against the oracle's copies (``is_copy``).

    ``top1_accuracy``: share of the oracle's copies whose best match is the oracle's nearest
    training image (or one tied with it, or a byte-identical file of it).
    ``top1_group_accuracy``: the same, counting a best match in the oracle's nearest image's
    group (``train.csv``: its subject, or a near-duplicate twin, e.g. a mirrored re-upload)
    as right: such twins are copies of each other, and the clean-frame oracle picks one of
    them by a margin that no detector of flipped copies can see.
    """

    n_synthetic: int
    n_copies: int
    n_flagged: int
    true_positives: int
    precision: float
    recall: float
    f1: float
    top1_correct: int
    top1_accuracy: float
    top1_group_correct: int
    top1_group_accuracy: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def folder_id(path: str) -> str:
    """``synthetic/a/b.png`` -> ``a/b.png``: the id an audit of that folder gives the file."""
    parts = Path(path).parts
    return Path(*parts[1:]).as_posix() if len(parts) > 1 else path


def _same_content(bench_dir: Path, a: str, nearest: Sequence[str]) -> bool:
    def digest(name: str) -> str:
        return hashlib.sha256((bench_dir / name).read_bytes()).hexdigest()

    return a in nearest or any(digest(a) == digest(b) for b in nearest)


def judge_audit(
    flagged: Iterable[tuple[str, str, str]], truth: Sequence[Truth], bench_dir: str | Path
) -> CopyDetection:
    """Judge audit decisions ``(synthetic id, best train id, class)`` against ``truth``.

    Ids are those of an audit of ``bench_dir/train`` and ``bench_dir/synthetic`` (relative
    to those folders).

    Raises:
        ValueError: a synthetic image of the truth is missing from the audit.
    """
    bench = Path(bench_dir)
    group = _train_groups(bench)
    decided = {syn: (train, label) for syn, train, label in flagged}
    tp = n_flagged = top1 = top1_group = n_copies = 0
    for row in truth:
        key = folder_id(row.synthetic)
        if key not in decided:
            raise ValueError(f"{row.synthetic}: in the benchmark's audit.csv but not in the audit")
        train, label = decided[key]
        flag = label == "duplicate"
        n_flagged += flag
        n_copies += row.is_copy
        tp += flag and row.is_copy
        if row.is_copy and _same_content(bench, f"train/{train}", row.nearest_all):
            top1 += 1
            top1_group += 1
        elif row.is_copy and group.get(f"train/{train}", "") in {group.get(n) for n in row.nearest_all} - {None}:
            top1_group += 1
    precision = tp / n_flagged if n_flagged else 0.0
    recall = tp / n_copies if n_copies else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return CopyDetection(len(truth), n_copies, n_flagged, tp, precision, recall, f1, top1,
                         top1 / n_copies if n_copies else 0.0, top1_group,
                         top1_group / n_copies if n_copies else 0.0)


def _train_groups(bench: Path) -> dict[str, str]:
    """Training image -> its group, from the builder's ``train.csv`` (empty if absent)."""
    path = bench / TRAIN_CSV
    if not path.is_file():
        return {}
    with open_csv(path) as f:
        return {row["train"]: row["group"] for row in csv.DictReader(f) if row.get("train") and row.get("group")}


def best_duplicate_threshold(best_scores: Sequence[float], is_copy: Sequence[bool]) -> tuple[float, float]:
    """The duplicate threshold that maximises the F1 of copy flags (``score > t``), and that F1.

    Candidates are the cuts of ``deepssim.classes.candidate_cuts`` (midpoints
    between consecutive distinct scores and one beyond each end), so the threshold separates
    observed values instead of sitting on one.
    """
    s = np.asarray(best_scores, dtype=np.float64)
    y = np.asarray(is_copy, dtype=bool)
    if len(s) != len(y) or not len(s):
        raise ValueError(f"need as many copy labels as scores, got {len(y)} and {len(s)}")
    best_t, best_f1 = float(s.max()), -1.0
    for t in candidate_cuts(s):
        flag = s > t
        tp = int((flag & y).sum())
        f1 = 2 * tp / (int(flag.sum()) + int(y.sum())) if flag.any() or y.any() else 0.0
        if f1 > best_f1:
            best_t, best_f1 = float(t), f1
    return best_t, best_f1


def read_members(bench_dir: str | Path) -> dict[str, bool]:
    """Synthetic id (relative to ``synthetic/``) -> made from a training image, from the
    builder's ``synthetic.csv``."""
    with open_csv(Path(bench_dir) / "synthetic.csv") as fh:
        return {Path(row["synthetic"]).relative_to("synthetic").as_posix(): row["member"] == "1"
                for row in csv.DictReader(fh)}


def judge_with_members(decisions: Sequence[tuple[str, str, str]], truth: Sequence[Truth],
                       bench_dir: str | Path) -> dict[str, Any]:
    """``judge_audit`` of rank-1 decisions ``(synthetic id, best train id, class)``, with the
    synthetic images made from non-members that were flagged (what a false-alarm rate
    bounds), those made from a training image but below the copy line that were flagged
    (near-copies), and the flagged share beside the true copy share."""
    members = read_members(bench_dir)
    copies = {folder_id(t.synthetic) for t in truth if t.is_copy}
    flagged = {s for s, _, label in decisions if label == "duplicate"}
    outsiders = [s for s, member in members.items() if not member]
    return {**judge_audit(decisions, truth, bench_dir).to_dict(),
            "n_non_members": len(outsiders), "non_members_flagged": sum(s in flagged for s in outsiders),
            "near_copies_flagged": sum(members[s] and s not in copies for s in flagged),
            "flagged_rate": len(flagged) / len(decisions) if decisions else 0.0,
            "true_copy_rate": len(copies) / len(truth) if truth else 0.0}
