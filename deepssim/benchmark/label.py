"""The rows of a benchmark's CSV files and the counts of its ``benchmark.json``.

Every label is the reference SSIM class of a (training, clean synthetic) pair as written and
read back: the oracle matrix holds those SSIMs, and each synthetic image's row of it gives its
nearest training image (``audit.csv``) and its labelled pairs (``pairs.csv``): its source, its
best match, the next ones of its ranking (hard negatives) and random training images.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..classes import DUPLICATE_THRESHOLD
from ..transforms.perturb import PerturbParams
from .copies import Synthetic
from .layout import LABELS, PAIR_KINDS, classify

Row = dict[str, str]


def fmt(value: float) -> str:
    """A float for the CSV files; an unknown value (NaN: a sample's generator strength) is empty."""
    return "" if math.isnan(value) else repr(float(value))


def synthetic_row(
    synthetic: str, item: Synthetic, origin_id: str, source: str, origin_ssim: float, params: PerturbParams
) -> Row:
    """A row of ``synthetic.csv``: how the image was made and how it was perturbed."""
    return {
        "synthetic": synthetic,
        "member": "1" if item.member else "0",
        "source": source,
        "origin_id": origin_id,
        "family": item.family,
        "strength": fmt(item.strength),
        "origin_ssim": fmt(origin_ssim),
        "origin_label": "" if math.isnan(origin_ssim) else classify(origin_ssim),
        "flip0": str(int(params.flip0[0])),
        "flip1": str(int(params.flip1[0])),
        "degrees": fmt(params.degrees[0]),
        "gamma": fmt(params.gamma[0]),
    }


def ranking(row: np.ndarray) -> np.ndarray:
    """Training images from the highest SSIM down (ties in file order): the nearest first."""
    return np.argsort(-row, kind="stable")


def audit_row(synthetic: str, row: np.ndarray, order: np.ndarray, train_names: Sequence[str]) -> Row:
    """A row of ``audit.csv``: the nearest training image by the oracle, and its ties."""
    nearest = int(order[0])
    best = float(row[nearest])
    ties = [train_names[j] for j in np.flatnonzero(row >= best) if j != nearest]
    return {
        "synthetic": synthetic,
        "nearest_train": train_names[nearest],
        "nearest_ssim": fmt(best),
        "is_copy": "true" if best > DUPLICATE_THRESHOLD else "false",
        "also_nearest": ";".join(ties),
    }


def choose_pairs(
    order: np.ndarray, source: int | None, n_hard: int, n_random: int, rng: np.random.Generator
) -> dict[int, str]:
    """The training images paired with one synthetic image, each with its kind: its source
    (members), its best match, the next ``n_hard`` of its ``ranking`` and ``n_random`` others."""
    chosen: dict[int, str] = {}
    if source is not None:
        chosen[source] = "source"
    chosen.setdefault(int(order[0]), "best")
    hard = [int(j) for j in order if int(j) not in chosen][:n_hard]
    chosen.update({j: "hard" for j in hard})
    free = np.setdiff1d(np.arange(len(order)), list(chosen))
    for j in rng.choice(free, size=min(n_random, len(free)), replace=False):
        chosen[int(j)] = "random"
    return chosen


def pair_rows(
    synthetic: str, item: Synthetic, row: np.ndarray, chosen: dict[int, str], train_names: Sequence[str]
) -> list[Row]:
    """The rows of ``pairs.csv`` of one synthetic image, labelled by the oracle's SSIM."""
    return [{
        "real": train_names[j],
        "synthetic": synthetic,
        "label": classify(float(row[j])),
        "ssim": fmt(row[j]),
        "kind": kind,
        "member": "1" if item.member else "0",
        "family": item.family,
        "strength": fmt(item.strength),
    } for j, kind in chosen.items()]


def count_rows(
    n_images: int, group: np.ndarray, train: np.ndarray,
    syn_rows: list[Row], audit_rows: list[Row], pairs: list[Row],
) -> dict[str, Any]:
    """The ``counts`` of ``benchmark.json``, from the rows as written."""
    members = [r for r in syn_rows if r["member"] == "1"]
    copies = [r for r in audit_rows if r["is_copy"] == "true"]
    member_of = {r["synthetic"]: r["member"] == "1" for r in syn_rows}

    def by(rows: list[Row], key: str, order: Sequence[str] = ()) -> dict[str, int]:
        c = Counter(r[key] for r in rows)
        return {k: c.get(k, 0) for k in order} if order else dict(sorted(c.items()))

    return {
        "train": len(train),
        "train_groups": len(np.unique(group[train])),
        "nonmember_pool_images": n_images - len(train),
        "synthetic": len(syn_rows),
        "memorized": len(members),
        "nonmember": len(syn_rows) - len(members),
        "memorized_distinct_sources": len({r["source"] for r in members}),
        "memorized_by_class": by(members, "origin_label", LABELS),
        "memorized_by_family": by(members, "family"),
        "nonmember_by_nearest_class": by(
            [{"c": classify(float(a["nearest_ssim"]))} for a in audit_rows if not member_of[a["synthetic"]]],
            "c", LABELS),
        "pairs": len(pairs),
        "pairs_by_label": by(pairs, "label", LABELS),
        "pairs_by_kind": by(pairs, "kind", PAIR_KINDS),
        "audit_copies": len(copies),
        "audit_copies_memorized": sum(member_of[r["synthetic"]] for r in copies),
    }
