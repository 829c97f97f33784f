"""``deepssim.audit``: every synthetic image against every training image.

read -> (cached) embed -> top-k search -> verify (optional) -> decide -> result. Each step
lives in its own module: ``images.py`` (read and embed through the cache), ``candidates.py``
(search), ``rerank.py`` (verification), ``decide.py`` (classes), ``summary.py`` (the
summary), ``patients.py`` (the training patients and those leaked); the options are
``options.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..classes import Thresholds
from ..model.api import DeepSSIMModel, load_model
from .cache import ContentHasher
from .candidates import Candidates, find_candidates
from .decide import classify_pairs, resolve_thresholds
from .images import ImageSet, Sources, cache_summary, collect, embed_sets, open_cache
from .options import ReadOptions, SearchOptions, VerifyOptions
from .patients import assign_patients, check_group_by, patient_rows, patients_summary
from .rerank import verify_suspicious
from .result import AuditResult, Match
from .summary import Outcome, build_summary


def audit(
    train: Sources,
    synthetic: Sources,
    model: str | Path | DeepSSIMModel,
    *,
    search: SearchOptions = SearchOptions(),
    thresholds: Thresholds | tuple[float, float] | str | None = None,
    calibration: str | Path | None = None,
    verify: VerifyOptions | int = VerifyOptions(),
    reading: ReadOptions = ReadOptions(),
    cache_dir: str | Path | None = "default",
    device: str = "auto",
    trust_torchscript: bool = False,
    progress: bool = False,
    group_by: str | None = None,
) -> AuditResult:
    """Find, for every synthetic image, its ``search.top_k`` closest training images and its
    class.

    Args:
        train, synthetic: Folders or files (several allowed) in any format the readers accept.
        model: A model folder (``deepssim train``), or a loaded model.
        search: The top-k search (``SearchOptions``).
        thresholds: ``(low, high)`` or ``"low,high"``; else ``calibration`` (a JSON file from
            ``deepssim evaluate --calibrate``); else the model's recorded thresholds.
        verify: Verification of the suspicious images' best candidates by the reference SSIM
            (``VerifyOptions``); an int n means ``VerifyOptions(top=n)``. Off by default.
        reading: Slicing of volumes, unreadable files, batch size and reading threads
            (``ReadOptions``).
        cache_dir: Embedding cache folder; ``"default"`` is ``default_cache_dir()``, None
            turns the cache off.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:i``, for the model and the search.
        trust_torchscript: Allow loading the authors' TorchScript file (it can run code).
        progress: Progress bars on stderr.
        group_by: Who the training images' patients are (``patients.py``): a regular
            expression searched in each training id whose first group names the patient,
            ``"none"`` for one patient per image, or None for the DICOM PatientID, else the
            BIDS subject, else one patient per scan. The summary's ``patients`` section and
            ``patients.csv`` count the patients leaked.

    Raises:
        ReadError: a source without any readable image (every file and its reason listed), or
            unreadable files (unless ``reading.skip_unreadable``).
        CacheKeyError: the cache key file cannot be used (``cache.load_cache_key``).
        ModelFolderError: ``model`` is not a model folder.
        RuntimeError: an approximate index found no training neighbour for some synthetic
            image (named).
        ValueError: bad options (``verify`` as an int and ``group_by`` are checked here, the
            option objects when built) or thresholds.
    """
    if not isinstance(verify, VerifyOptions):
        verify = VerifyOptions(top=verify)
    check_group_by(group_by)  # a bad expression stops the audit before any image is read
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    net = model if isinstance(model, DeepSSIMModel) else load_model(
        model, device=device, trust_torchscript=trust_torchscript)
    chosen = resolve_thresholds(thresholds, calibration, net.config)

    with _timed(timings, "cache_s"):  # a bad key file stops the audit before any image is read
        cache = open_cache(cache_dir, net)
    with _timed(timings, "scan_s"):
        hasher = ContentHasher()
        train_set = collect(train, "training", reading, hasher, progress)
        synth_set = collect(synthetic, "synthetic", reading, hasher, progress)
    with _timed(timings, "embed_s"):
        real, fake = embed_sets(net, train_set, synth_set, cache, reading, progress)
    with _timed(timings, "search_s"):
        # Verification looks at up to ``verify.depth`` candidates even when fewer are reported.
        found = find_candidates(net, fake, real, max(search.top_k, verify.depth), search,
                                device=device, progress=progress)
    verify_summary = None
    if verify.top:
        with _timed(timings, "verify_s"):
            found, verify_summary = verify_suspicious(found, chosen.different_max, verify, fake.images.refs,
                                                      real.images.refs, progress=progress)
    found = found.first(search.top_k)
    pair_labels = classify_pairs(found.scores, found.verified, chosen, verify.decision_thresholds)
    outcome = Outcome(found.scores[:, 0].copy(), found.indices[:, 0].copy(), pair_labels[:, 0], found.exact)
    timings["total_s"] = time.perf_counter() - t_start
    summary = build_summary(model=net, thresholds=chosen, train=real.images, synthetic=fake.images,
                            outcome=outcome, search=found.summary(search.top_k),
                            cache=cache_summary(cache, real, fake), verify=verify_summary, timings=timings)
    patients = assign_patients(real.images.ids, real.images.refs, group_by)
    rows = patient_rows(patients, outcome.best_train, outcome.labels, outcome.best_scores, fake.images.ids)
    summary["patients"] = patients_summary(patients, rows, len(fake.images.ids))
    return AuditResult(_matches(fake.images, real.images, found, pair_labels, patients.names), summary,
                       fake.images.ids, real.images.ids, outcome.best_scores, outcome.best_train, outcome.labels,
                       chosen, fake.images.refs, real.images.refs,
                       found.deciding_scores() if verify.top else None,
                       verify.decision_thresholds if verify.top else None, rows)


@contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Seconds spent in the block, into ``timings[key]``."""
    t0 = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - t0


def _matches(synthetic: ImageSet, train: ImageSet, found: Candidates, pair_labels: np.ndarray,
             train_patients: list[str]) -> list[Match]:
    """Every candidate found as a ``Match``, by synthetic image then rank (empty slots left out)."""
    checked = np.isfinite(found.verified)
    return [
        Match(synthetic.ids[s], r + 1, train.ids[int(found.indices[s, r])], float(found.scores[s, r]),
              str(pair_labels[s, r]), bool(found.exact[s]) and r == 0,
              float(found.verified[s, r]) if checked[s, r] else None, train_patients[int(found.indices[s, r])])
        for s in range(len(synthetic.ids)) for r in range(found.scores.shape[1]) if found.indices[s, r] >= 0
    ]
