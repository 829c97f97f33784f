"""The evaluation harness: score a pair file with a metric, decide, and report the figures.

``evaluate(pairs, "ssim-flip", condition="perturbed")`` is the one-call happy path; ``compare``
runs several metrics under both conditions on one set of images (each image read once) for
the comparison table. Thresholds come, in this order, from the caller, from a calibration on
validation pairs (``calibrate=VAL_PAIRS``; same metric, same condition), or from the metric
(0.60 / 0.85 for SSIM-scale metrics; none for the others, whose threshold figures are then
None while the threshold-free ones are still reported).

Timing: ``pairs_per_second`` is the pairs of the file over the seconds of ``Metric.score``
on them, after one warm-up pair (kernel compilation, lazy imports); reading images and
loading weights are not counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..classes import CLASSES, Thresholds
from .calibrate import DEFAULT_TARGET_PRECISION, Calibration, calibrate
from .classification import (
    DEFAULT_BOOTSTRAP,
    ClassFigures,
    bootstrap_macro_f1,
    confusion_matrix,
    macro_f1_of,
    per_class,
    predict,
    weighted_f1_of,
)
from .images import ImageCache
from .metrics import Metric, MetricOptions, MetricUnavailable, create_metric, metric_names
from .pairs import CONDITIONS, Condition, PairFile, read_pair_file
from .separation import roc_auc, silhouette_1d, tpr_at_fpr

log = logging.getLogger(__name__)

FPR_TARGET = 0.05
"""False-positive rate of the reported duplicate TPR (``tpr_at_5fpr``)."""
DUPLICATE = CLASSES.index("duplicate")


@dataclass(frozen=True, eq=False)
class ScoredPairs:
    """A metric's scores of the pairs of one file under one condition."""

    metric: str
    scale: str
    condition: str
    scores: np.ndarray
    labels: np.ndarray
    seconds: float

    @property
    def n_pairs(self) -> int:
        return int(self.scores.size)

    @property
    def pairs_per_second(self) -> float:
        return self.n_pairs / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True, eq=False)
class Evaluation:
    """The figures of the benchmark protocol (docs/benchmark.md) for one metric under one condition.

    Threshold figures (``macro_f1`` ... ``confusion``) are None when the metric has no
    thresholds (not on the SSIM scale, and none given or calibrated). ``confusion`` rows
    are true classes, columns predicted ones, both in ``CLASSES`` order.
    """

    metric: str
    scale: str
    condition: str
    n_pairs: int
    thresholds: Thresholds | None
    macro_f1: float | None
    macro_f1_ci95: tuple[float, float] | None
    weighted_f1: float | None
    per_class: dict[str, ClassFigures] | None
    confusion: np.ndarray | None
    silhouette: float | None
    auc_duplicate: float | None
    tpr_at_5fpr: float | None
    pairs_per_second: float
    seconds: float
    calibration: Calibration | None = None
    scored: ScoredPairs | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures (the ``deepssim evaluate --json`` document)."""
        return {
            "metric": self.metric,
            "scale": self.scale,
            "condition": self.condition,
            "n_pairs": self.n_pairs,
            "class_counts": {name: int((self.scored.labels == k).sum()) for k, name in enumerate(CLASSES)}
            if self.scored is not None else None,
            "macro_f1": self.macro_f1,
            "macro_f1_ci95": list(self.macro_f1_ci95) if self.macro_f1_ci95 else None,
            "weighted_f1": self.weighted_f1,
            "per_class": {k: v.to_dict() for k, v in self.per_class.items()} if self.per_class else None,
            "confusion": self.confusion.tolist() if self.confusion is not None else None,
            "confusion_labels": list(CLASSES),
            "thresholds": list(self.thresholds.pair) if self.thresholds else None,
            "thresholds_source": self.thresholds.source if self.thresholds else None,
            "silhouette": self.silhouette,
            "auc_duplicate": self.auc_duplicate,
            "tpr_at_5fpr": self.tpr_at_5fpr,
            "pairs_per_second": self.pairs_per_second if np.isfinite(self.pairs_per_second) else None,
            "seconds": self.seconds,
            "calibration": self.calibration.to_dict() if self.calibration else None,
        }


def score_pair_file(
    metric: Metric, pairs: PairFile, cache: ImageCache, *, warmup: bool = True, progress: bool = False
) -> ScoredPairs:
    """Scores of every pair of ``pairs`` (images from ``cache``), timed.

    Raises:
        ReadError: missing or unreadable images.
        ValueError: the metric returned the wrong number of scores or non-finite ones.
    """
    real, synthetic = cache.load_pairs(pairs, progress=progress)
    if warmup and len(real) > 1:
        metric.score(real[:1], synthetic[:1])
    start = time.perf_counter()
    scores = np.asarray(metric.score(real, synthetic), dtype=np.float64)
    seconds = time.perf_counter() - start
    if scores.shape != (len(pairs),):
        raise ValueError(f"metric {metric.name!r} returned {scores.shape} scores for {len(pairs)} pairs")
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        k = int(bad[0])
        raise ValueError(f"metric {metric.name!r} gave a non-finite score to {bad.size} pair(s) of "
                         f"{pairs.path}, e.g. {pairs.real[k]} / {pairs.synthetic[k]}")
    return ScoredPairs(metric.name, metric.scale, pairs.condition, scores, pairs.labels.copy(), seconds)


def evaluate_scores(
    scored: ScoredPairs,
    thresholds: Thresholds | None,
    *,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    calibration: Calibration | None = None,
) -> Evaluation:
    """The figures of scored pairs; threshold figures only when ``thresholds`` is given."""
    y = scored.labels
    positive = y == DUPLICATE
    threshold_figures: dict[str, Any] = dict.fromkeys(
        ("macro_f1", "macro_f1_ci95", "weighted_f1", "per_class", "confusion"))
    if thresholds is not None:
        pred = predict(scored.scores, thresholds)
        conf = confusion_matrix(y, pred)
        threshold_figures = {
            "macro_f1": float(macro_f1_of(conf)),
            "macro_f1_ci95": bootstrap_macro_f1(y, pred, n_resamples=n_bootstrap, seed=seed),
            "weighted_f1": weighted_f1_of(conf),
            "per_class": per_class(conf),
            "confusion": conf,
        }
    return Evaluation(
        metric=scored.metric,
        scale=scored.scale,
        condition=scored.condition,
        n_pairs=scored.n_pairs,
        thresholds=thresholds,
        silhouette=silhouette_1d(scored.scores, y),
        auc_duplicate=roc_auc(scored.scores, positive),
        tpr_at_5fpr=tpr_at_fpr(scored.scores, positive, FPR_TARGET),
        pairs_per_second=scored.pairs_per_second,
        seconds=scored.seconds,
        calibration=calibration,
        scored=scored,
        **threshold_figures,
    )


@dataclass(frozen=True)
class RunSettings:
    """How a run reads its pairs and decides (one table of defaults for the API and the CLI).

    Attributes:
        root: Folder of the test pairs' image paths (default: the pair file's folder).
        calibrate: Validation pair file to calibrate thresholds on (same metric, same condition).
        calibrate_root: Folder of its image paths (default: its own folder).
        thresholds: Thresholds for every metric (excludes ``calibrate``).
        target_precision: Duplicate precision of the calibration's operating point.
        limit: Use only the first N pairs of each file (quick runs).
        n_bootstrap: Resamples of the macro F1 interval.
        seed: Seed of the bootstrap and of the perturbation of pair files without perturbed
            images.
        progress: Progress bars on stderr.
        allow_outside_root: Accept image paths of the pair files that lead outside their root
            folder (``..``, absolute paths, symbolic links out of it); refused by default.
    """

    root: str | Path | None = None
    calibrate: str | Path | None = None
    calibrate_root: str | Path | None = None
    thresholds: Thresholds | None = None
    target_precision: float | None = DEFAULT_TARGET_PRECISION
    limit: int | None = None
    n_bootstrap: int = DEFAULT_BOOTSTRAP
    seed: int = 0
    progress: bool = False
    allow_outside_root: bool = False

    def __post_init__(self) -> None:
        if self.thresholds is not None and self.calibrate is not None:
            raise ValueError("give thresholds or a calibration pairs file, not both")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if self.n_bootstrap < 1:
            raise ValueError(f"n_bootstrap must be >= 1, got {self.n_bootstrap}")


class EvaluationRun:
    """Pair files and images of one run, each read once, shared by every metric evaluated."""

    def __init__(self, pairs: str | Path, settings: RunSettings = RunSettings()) -> None:
        self.pairs_path = Path(pairs)
        self.settings = settings
        self._pair_files: dict[tuple[str, str], PairFile] = {}
        self._caches: dict[Path, ImageCache] = {}
        self.pair_file("registered")  # fail early on a bad pair file
        if settings.calibrate is not None:
            self.pair_file("registered", validation=True)

    def pair_file(self, condition: Condition, *, validation: bool = False) -> PairFile:
        """The test (or validation) pairs under ``condition``, read once."""
        key = ("val" if validation else "test", condition)
        if key not in self._pair_files:
            s = self.settings
            path, root = (s.calibrate, s.calibrate_root) if validation else (self.pairs_path, s.root)
            if path is None:
                raise ValueError("no calibration pairs file was given")
            self._pair_files[key] = read_pair_file(path, root, condition,
                                                   allow_outside_root=s.allow_outside_root).head(s.limit)
        return self._pair_files[key]

    def cache(self, pairs: PairFile) -> ImageCache:
        """The image cache of the pair file's root folder."""
        root = pairs.root.resolve()
        if root not in self._caches:
            self._caches[root] = ImageCache(root, seed=self.settings.seed)
        return self._caches[root]

    def score(self, metric: Metric, condition: Condition, *, validation: bool = False) -> ScoredPairs:
        pairs = self.pair_file(condition, validation=validation)
        log.info("scoring %d %s pairs of %s with %s", len(pairs), condition, pairs.path, metric.name)
        return score_pair_file(metric, pairs, self.cache(pairs), progress=self.settings.progress)

    def evaluate(self, metric: Metric, condition: Condition) -> Evaluation:
        """The figures of ``metric`` on the test pairs under ``condition``."""
        s = self.settings
        calibration = None
        thresholds = s.thresholds or metric.default_thresholds
        if s.calibrate is not None:
            val = self.score(metric, condition, validation=True)
            calibration = calibrate(val.scores, val.labels, target_precision=s.target_precision,
                                    metric=metric.name, condition=condition,
                                    pairs_file=self.pair_file(condition, validation=True).path)
            thresholds = calibration.thresholds
        scored = self.score(metric, condition)
        return evaluate_scores(scored, thresholds, n_bootstrap=s.n_bootstrap, seed=s.seed,
                               calibration=calibration)


def evaluate(
    pairs: str | Path,
    metric: str | Metric,
    *,
    condition: Condition = "registered",
    options: MetricOptions = MetricOptions(),
    settings: RunSettings = RunSettings(),
) -> Evaluation:
    """The figures of one metric on a pair file under one condition.

    Args:
        pairs: A benchmark ``pairs.csv`` (or its folder) or a reference-code pair file.
        metric: A registered metric name or a ``Metric`` instance.
        condition: ``registered`` or ``perturbed``.
        options: What the metric needs (model, weights, device...), for a name.
        settings: Image root, thresholds or calibration pairs, limit, bootstrap, seed.

    Raises:
        MetricUnavailable: the metric's weights or package are missing (the message says which).
        ReadError: missing or unreadable images, by name.
        ValueError: bad pair files, options or thresholds.
    """
    run = EvaluationRun(pairs, settings)
    chosen = create_metric(metric, options) if isinstance(metric, str) else metric
    return run.evaluate(chosen, condition)


@dataclass(frozen=True, eq=False)
class Comparison:
    """Several metrics under one or both conditions; ``skipped`` maps a metric that could not
    run to the reason (missing weights, package, unsuitable images)."""

    evaluations: list[Evaluation]
    skipped: dict[str, str]
    conditions: tuple[str, ...]
    pairs_file: str
    n_pairs: int
    names: tuple[str, ...] = ()

    def get(self, metric: str, condition: str) -> Evaluation | None:
        return next((e for e in self.evaluations if e.metric == metric and e.condition == condition), None)

    def metrics(self) -> list[str]:
        """Metric names in the order asked for, evaluated or skipped."""
        return list(dict.fromkeys([*self.names, *(e.metric for e in self.evaluations), *self.skipped]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "pairs_file": self.pairs_file,
            "n_pairs": self.n_pairs,
            "conditions": list(self.conditions),
            "evaluations": [e.to_dict() for e in self.evaluations],
            "skipped": dict(self.skipped),
        }


def compare(
    pairs: str | Path,
    metrics: Sequence[str] | None = None,
    *,
    conditions: Sequence[Condition] = CONDITIONS,
    options: MetricOptions = MetricOptions(),
    weights: Mapping[str, str | Path] | None = None,
    settings: RunSettings = RunSettings(),
) -> Comparison:
    """Every metric of ``metrics`` (default: all registered) on ``pairs`` under each condition.

    ``weights`` gives each metric its own weights (``{"sscd": "sscd.pt", "dar": "dar/"}``;
    ``options.weights`` is not used, as no one file suits several metrics). Metrics that
    cannot run (``MetricUnavailable``) are listed in ``Comparison.skipped`` with the reason;
    other errors propagate.
    """
    names = list(metric_names() if metrics is None else metrics)
    for name in names:
        if name not in metric_names():
            raise ValueError(f"unknown metric {name!r}: use one of {', '.join(metric_names())}")
    for condition in conditions:
        if condition not in CONDITIONS:
            raise ValueError(f"unknown condition {condition!r}: use registered or perturbed")
    run = EvaluationRun(pairs, settings)
    evaluations: list[Evaluation] = []
    skipped: dict[str, str] = {}
    for name in names:
        try:
            metric = create_metric(name, replace(options, weights=(weights or {}).get(name)))
            results = [run.evaluate(metric, condition) for condition in conditions]
        except MetricUnavailable as exc:
            log.info("skipping metric %s: %s", name, exc)
            skipped[name] = str(exc)
            continue
        evaluations.extend(results)
    test = run.pair_file(conditions[0] if conditions else "registered")
    return Comparison(evaluations, skipped, tuple(conditions), str(test.path), len(test), tuple(names))
