"""What an audit found, and its files: ``matches.csv``, ``summary.json``, ``report.html``, the
histogram PNG, and with a holdout ``thresholds.json``."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..storage import OutputError, atomic_write_bytes, check_output_folder, replacing_folder, within, write_csv
from ..readers import ImageRef, load_ref
from ..classes import Thresholds
from .patients import PATIENT_COLUMNS, PatientRow

if TYPE_CHECKING:
    from .holdout import HoldoutCalibration

MATCH_COLUMNS = ["synthetic", "rank", "train", "score", "class", "exact_copy", "verified_ssim", "p_value",
                 "train_patient"]
OUTPUT_FILES = {"matches": "matches.csv", "histogram": "histogram.png", "report": "report.html",
                "summary": "summary.json", "patients": "patients.csv"}
"""The files an audit writes into its folder, by kind (the keys of ``AuditResult.save``'s result)."""
HOLDOUT_FILES = {"thresholds": "thresholds.json"}
"""The files an audit with a holdout writes too."""
MODEL_FOLDER = "model"
"""The folder of the model an audit trained without a cache, written with its files."""
REPORT_PAIRS = 48
"""Pairs shown in the report's gallery by default: the most suspicious ones."""


@dataclass(frozen=True)
class Match:
    """One of the top-k training images of a synthetic image (rank 1 is the best; an
    approximate index may have found fewer than k).

    ``score`` is the DeepSSIM score; ``verified_ssim`` the verified reference SSIM when the
    pair was verified (it then decides ``label`` and the rank), else None; ``p_value`` the
    best match's empirical p-value against an audit's holdout (rank 1 only), else None;
    ``train_patient`` the training image's patient (``patients.assign_patients``), when known.
    """

    synthetic: str
    rank: int
    train: str
    score: float
    label: str
    exact_copy: bool = False
    verified_ssim: float | None = None
    p_value: float | None = None
    train_patient: str | None = None

    def to_row(self) -> dict[str, str]:
        return {"synthetic": self.synthetic, "rank": str(self.rank), "train": self.train,
                "score": f"{self.score:.6f}", "class": self.label,
                "exact_copy": "true" if self.exact_copy else "false",
                "verified_ssim": "" if self.verified_ssim is None else f"{self.verified_ssim:.6f}",
                "p_value": "" if self.p_value is None else f"{self.p_value:.6g}",
                "train_patient": self.train_patient or ""}


@dataclass
class AuditResult:
    """Every synthetic image's top-k training matches, its class, and the summary.

    Attributes:
        matches: Top-k matches of every synthetic image, by synthetic image then rank (fewer
            where an approximate index found fewer neighbours).
        summary: The headline figures (also ``summary.json``).
        synthetic_ids / train_ids: The images audited, in scan order.
        best_scores: Best-match score per synthetic image.
        best_train: Index into ``train_ids`` of each synthetic image's best match.
        labels: Class per synthetic image, from its best match.
        thresholds: The decision thresholds of the DeepSSIM scores.
        decision_scores: With verification: per synthetic image, the score that decided its
            class (the verified SSIM of its best match when verified, else its DeepSSIM score).
        decision_thresholds: The thresholds applied to verified SSIMs.
        p_values: With a holdout: per synthetic image, the empirical p-value of its deciding
            score against the holdout's null.
        holdout: With a holdout: its null and the thresholds fitted on it
            (``holdout.HoldoutCalibration``).
        model_folder: A model this audit trained without a cache to keep it in: ``save``
            writes its model files (``trained.MODEL_FILES``, never the training's pair sets)
            into the output folder's ``model/``.
        patients: One row per training patient, the most copied first (``patients.csv``).
    """

    matches: list[Match]
    summary: dict[str, Any]
    synthetic_ids: list[str]
    train_ids: list[str]
    best_scores: np.ndarray
    best_train: np.ndarray
    labels: np.ndarray
    thresholds: Thresholds
    synthetic_refs: list[ImageRef] = field(default_factory=list, repr=False)
    train_refs: list[ImageRef] = field(default_factory=list, repr=False)
    decision_scores: np.ndarray | None = None
    decision_thresholds: Thresholds | None = None
    p_values: np.ndarray | None = None
    holdout: HoldoutCalibration | None = field(default=None, repr=False)
    model_folder: Path | None = None
    patients: list[PatientRow] = field(default_factory=list)

    def _histogram_args(self) -> tuple[np.ndarray, dict[str, Any]]:
        """The scores to plot, and the classes, threshold lines, axis label and holdout null
        to plot them with."""
        null = {} if self.holdout is None else {"null_scores": self.holdout.null}
        if self.decision_scores is None:
            return self.best_scores, {"labels": self.labels, "thresholds": self.thresholds.pair, **null}
        thresholds = (self.decision_thresholds or self.thresholds).pair
        return self.decision_scores, {"labels": self.labels, "thresholds": thresholds, **null,
                                      "xlabel": "best match: verified SSIM (DeepSSIM score if not verified)"}

    @property
    def duplicates(self) -> list[Match]:
        """Rank-1 matches classed ``duplicate``, most similar first."""
        best = [m for m in self.matches if m.rank == 1 and m.label == "duplicate"]
        return sorted(best, key=lambda m: (-m.score, m.synthetic))

    def to_rows(self) -> list[dict[str, Any]]:
        """The matches as plain dicts (e.g. for ``pandas.DataFrame``)."""
        return [asdict(m) for m in self.matches]

    def to_pandas(self) -> Any:
        """The matches as a ``pandas.DataFrame`` (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(self.to_rows()).rename(columns={"label": "class"})

    def to_csv(self, path: str | Path) -> Path:
        """Write ``matches.csv`` (``synthetic,rank,train,score,class,exact_copy,verified_ssim,
        p_value``, ``train_patient``) atomically."""
        write_csv(path, MATCH_COLUMNS, [m.to_row() for m in self.matches])
        return Path(path)

    def to_patients_csv(self, path: str | Path) -> Path:
        """Write ``patients.csv`` (``patients.PATIENT_COLUMNS``: every training patient, the most
        copied first) atomically."""
        write_csv(path, PATIENT_COLUMNS, [p.to_row() for p in self.patients])
        return Path(path)

    def to_json(self, path: str | Path) -> Path:
        """Write the summary as JSON atomically."""
        atomic_write_bytes(Path(path), (json.dumps(self.summary, indent=2) + "\n").encode())
        return Path(path)

    def thresholds_file(self, path: str | Path) -> Path:
        """Write the thresholds fitted on the holdout (``thresholds.json``, the format of
        ``deepssim audit --calibration``) atomically.

        Raises:
            ValueError: the audit had no holdout.
        """
        entry = (self.summary.get("thresholds") or {}).get("holdout")
        if self.holdout is None or entry is None:
            raise ValueError("this audit had no holdout: no thresholds were fitted")
        document = {k: v for k, v in entry.items() if k not in ("used", "applies_to", "note")}
        atomic_write_bytes(Path(path), (json.dumps(document, indent=2) + "\n").encode())
        return Path(path)

    def histogram(self, path: str | Path) -> Path:
        """Write the histogram of best-match scores with the thresholds as PNG."""
        from .plots import write_histogram_png

        scores, args = self._histogram_args()
        return write_histogram_png(scores, args.pop("thresholds"), path, **args,
                                   title=f"Best-match scores of {len(scores)} synthetic images")

    def gallery(self, max_pairs: int = REPORT_PAIRS) -> list[Any]:
        """The ``max_pairs`` most suspicious pairs (highest deciding score) with their images."""
        from .gallery import GalleryPair

        deciding = self.best_scores if self.decision_scores is None else self.decision_scores
        order = np.lexsort((np.arange(len(deciding)), -deciding))[:max_pairs]
        first = {m.synthetic: m for m in self.matches if m.rank == 1}
        return [
            GalleryPair(
                synthetic=self.synthetic_ids[s], train=self.train_ids[int(self.best_train[s])],
                score=float(self.best_scores[s]), label=str(self.labels[s]),
                synthetic_image=load_ref(self.synthetic_refs[s]),
                train_image=load_ref(self.train_refs[int(self.best_train[s])]),
                verified_ssim=first[self.synthetic_ids[s]].verified_ssim,
            )
            for s in order
        ]

    def to_html(self, path: str | Path, *, max_pairs: int = REPORT_PAIRS, progress: bool = False) -> Path:
        """Write the self-contained HTML report (headline, histogram, gallery of suspicious pairs)."""
        from .report import write_report

        if not self.synthetic_refs:
            raise ValueError("this result has no image references (loaded from files?): no gallery")
        scores, args = self._histogram_args()
        return write_report(path, self.summary, scores, self.gallery(max_pairs), progress=progress, **args)

    def save(self, out_dir: str | Path, *, max_pairs: int = REPORT_PAIRS, progress: bool = False) -> dict[str, Path]:
        """Write ``matches.csv``, ``histogram.png``, ``report.html``, ``summary.json``, with a
        holdout ``thresholds.json``, when the result knows its training patients
        ``patients.csv``, and ``model/`` (the model it trained, when there was no cache to keep
        it in) into ``out_dir``, which afterwards holds these files of this audit, or, if the
        save fails, whatever it held before (the files are written beside it, then swapped in).

        Raises:
            OutputError: ``out_dir`` fails ``check_audit_folder`` (checked before anything
                is written); nothing is written then.
        """
        sources = [*self.summary.get("train_sources", []), *self.summary.get("synthetic_sources", []),
                   *(self.summary.get("holdout") or {}).get("sources", [])]
        out = check_audit_folder(out_dir, sources)
        t0 = time.perf_counter()
        with replacing_folder(out) as tmp:
            names = {"matches": self.to_csv(tmp / OUTPUT_FILES["matches"]).name,
                     "histogram": self.histogram(tmp / OUTPUT_FILES["histogram"]).name}
            if self.holdout is not None:
                names["thresholds"] = self.thresholds_file(tmp / HOLDOUT_FILES["thresholds"]).name
            if self.patients:
                names["patients"] = self.to_patients_csv(tmp / OUTPUT_FILES["patients"]).name
            names["report"] = self.to_html(tmp / OUTPUT_FILES["report"], max_pairs=max_pairs, progress=progress).name
            if self.model_folder is not None:
                from .trained import copy_model_files

                copy_model_files(self.model_folder, tmp / MODEL_FOLDER)
                self.summary["model"]["path"] = str(out / MODEL_FOLDER)
            timings = self.summary.setdefault("timings", {})
            timings["report_s"] = round(time.perf_counter() - t0, 3)
            timings["total_s"] = round(timings.get("total_s", 0.0) + timings["report_s"], 3)
            self.summary["files"] = names | {"summary": OUTPUT_FILES["summary"]}
            names["summary"] = self.to_json(tmp / OUTPUT_FILES["summary"]).name
            check_audit_folder(out_dir, sources)  # a file put there meanwhile is not swapped away
        return {kind: out / name for kind, name in names.items()}


def check_audit_folder(out_dir: str | Path, sources: Sequence[str | Path] = (),
                       cache: str | Path | None = None) -> Path:
    """Check, before an audit, that ``out_dir`` can take its files: not a file, neither
    inside nor holding any of ``sources`` (the training and synthetic folders or files;
    symlinks resolved), not holding the ``cache`` folder (it would be replaced with the
    folder), and, if it exists, holding an earlier audit's files (``OUTPUT_FILES``,
    ``HOLDOUT_FILES`` and the ``MODEL_FOLDER``) and nothing else.

    Raises:
        OutputError: naming the folder and what is wrong (``storage.check_output_folder``).
    """
    out = check_output_folder(out_dir, inputs=sources, only=[*OUTPUT_FILES.values(), *HOLDOUT_FILES.values()],
                              folders=[MODEL_FOLDER])
    if cache is not None and within(cache, out):
        raise OutputError(out_dir, f"the embedding cache {cache} lies inside it and would be replaced with "
                                   "the audit's files; choose a cache folder outside it")
    return out
