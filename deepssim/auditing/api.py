"""``deepssim.audit``: every synthetic image against every training image.

read -> (cached) embed -> top-k search -> verify (optional) -> decide -> result. Each step
lives in its own module: ``images.py`` (read and embed through the cache), ``candidates.py``
(search), ``rerank.py`` (verification), ``decide.py`` (classes), ``summary.py`` (the
summary), ``patients.py`` (the training patients and those leaked); the options are
``options.py``.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..classes import Thresholds
from ..model.api import DeepSSIMModel, load_model
from ..readers import load_ref
from ..training import TrainConfig
from .cache import ContentHasher, check_cache_root, default_cache_dir, load_cache_key, verified_store
from .candidates import Candidates, find_candidates
from .correction import VerifyCorrection, obtain_correction
from .decide import audit_thresholds, classify_pairs
from .holdout import HoldoutCalibration, calibrate_holdout, check_fpr, check_holdout_size, holdout_summary
from .images import EmbeddedSet, ImageSet, Sources, cache_summary, collect, embed_queries, embed_sets, open_cache
from .options import DEFAULT_FPR, ReadOptions, SearchOptions, VerifyOptions
from .patients import assign_patients, check_group_by, patient_rows, patients_summary
from .rerank import PairStore, verify_null, verify_suspicious
from .result import AuditResult, Match
from .summary import Outcome, build_summary
from .trained import ModelSource, obtain_model, training_config

log = logging.getLogger(__name__)


def audit(
    train: Sources,
    synthetic: Sources,
    model: str | Path | DeepSSIMModel | None = None,
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
    holdout: Sources | None = None,
    fpr: float | None = None,
    preset: str | TrainConfig | None = None,
    say: Callable[[str], None] | None = None,
    group_by: str | None = None,
) -> AuditResult:
    """Find, for every synthetic image, its ``search.top_k`` closest training images and its
    class.

    Args:
        train, synthetic: Folders or files (several allowed) in any format the readers accept.
        model: A model folder (``deepssim train``), or a loaded model. None: the model of
            ``preset`` trained on ``train``, once: kept in the cache and reused by every later
            audit of the same training images (``trained.py``); without a cache, trained for
            this audit and written by ``AuditResult.save`` into the output folder's ``model/``.
        search: The top-k search (``SearchOptions``).
        thresholds: ``(low, high)`` or ``"low,high"``; else ``calibration`` (a JSON file from
            ``deepssim evaluate --calibrate``); else the model's recorded thresholds.
        verify: Verification of the suspicious images' best candidates by the reference SSIM
            (``VerifyOptions``); an int n means ``VerifyOptions(top=n)``, 0 turns it off.
        reading: Slicing of volumes, unreadable files, batch size and reading threads
            (``ReadOptions``).
        cache_dir: Embedding cache folder, which keeps the models trained by audits too;
            ``"default"`` is ``default_cache_dir()``, None turns the cache off.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:i``, for the model and the search.
        trust_torchscript: Allow loading the authors' TorchScript file (it can run code).
        progress: Progress bars on stderr.
        holdout: Real images of the same source that were not in the training set (folders or
            files, as ``synthetic``), scored as the synthetic images; with verification every
            holdout image is verified. Their best-match
            scores (less those of holdout images that are themselves training copies) are the
            null: the thresholds at ``fpr`` come from it unless thresholds were given
            (``thresholds``, ``calibration``, ``verify.thresholds``), and every synthetic
            image gets a p-value and the summary the excess memorization rate (``holdout.py``).
        fpr: The false-alarm rate of the holdout's duplicate threshold, in (0, 1); default
            ``options.DEFAULT_FPR`` (0.01) with a holdout; refused without one.
        preset: Without ``model``: the preset trained (``fast`` by default), or a
            ``TrainConfig`` (a preset with overrides, such as a shorter ``max_minutes``).
        say: Gets the lines saying that a model is trained, resumed or reused (default: the
            ``deepssim.auditing.trained`` logger, at INFO).
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
        TrainingInterrupted: Ctrl-C while the model was trained (a KeyboardInterrupt whose
            message says what was kept).
        RuntimeError: an approximate index found no training neighbour for some synthetic
            image (named).
        ValueError: bad options (``verify`` as an int is checked here, the option objects
            when built) or thresholds; ``fpr`` without a holdout or outside (0, 1); a holdout
            too small for ``fpr``; a bad ``group_by``.
    """
    if not isinstance(verify, VerifyOptions):
        verify = VerifyOptions(top=verify)
    check_group_by(group_by)  # a bad expression stops the audit before any image is read
    if fpr is not None and holdout is None:
        raise ValueError("--fpr needs --holdout: the false-alarm rate is measured on holdout images")
    fpr = check_fpr(DEFAULT_FPR if fpr is None else fpr)
    # Thresholds given in any form win over the holdout's.
    asked_verified = verify.thresholds if verify.top > 0 else None
    given = thresholds is not None or calibration is not None or asked_verified is not None
    if model is not None and preset is not None:
        raise ValueError("preset chooses the model an audit trains when it is given none; a model was given")
    timings = _Stages()
    t_start = time.perf_counter()
    root = None if cache_dir is None else default_cache_dir() if cache_dir == "default" else Path(cache_dir)
    if model is not None:
        net = model if isinstance(model, DeepSSIMModel) else load_model(
            model, device=device, trust_torchscript=trust_torchscript)
        chosen, verified_thresholds = audit_thresholds(thresholds, calibration, net.config, verify.top > 0,
                                                       asked_verified)
        source = ModelSource("given")
    else:
        config = training_config(preset)
        audit_thresholds(thresholds, calibration, {}, verify.top > 0, asked_verified)  # bad values stop it before training
    if root is not None:  # a bad cache folder or key file stops the audit before any image is read
        check_cache_root(root)
    secret = None if root is None else load_cache_key(root)
    with timings("scan_s"):
        hasher = ContentHasher()
        train_set = collect(train, "training", reading, hasher, progress)
        synth_set = collect(synthetic, "synthetic", reading, hasher, progress)
        hold_set = None if holdout is None else collect(holdout, "holdout", reading, hasher, progress)
    if hold_set is not None:  # known after the scan: stop before any training or embedding
        check_holdout_size(len(hold_set.ids), fpr)
    if model is None:
        with timings("train_s"):
            net, source = obtain_model(
                train_set.sources, train_set.keys, config, slices=reading.slices,
                skip_unreadable=reading.skip_unreadable, cache_root=root, secret=secret, device=device,
                progress=progress, say=say or (lambda line: log.info("%s", line)))
    try:
        if model is None:
            chosen, verified_thresholds = audit_thresholds(thresholds, calibration, net.config, verify.top > 0,
                                                           asked_verified)
        with timings("cache_s"):
            cache = open_cache(root, net, train_set, synth_set, hold_set)
        if verified_thresholds is not None:
            verify = replace(verify, thresholds=verified_thresholds)
        with timings("embed_s"):
            real, fake = embed_sets(net, train_set, synth_set, cache, reading, progress)
            held = None if hold_set is None else embed_queries(net, hold_set, cache, reading, progress)
            if cache is not None:
                cache.release()  # the embeddings are in hand: the later stages need the memory
        correction, correction_cached = None, False
        if verify.top and verify.correct:
            with timings("correction_s"):
                correction, correction_cached = obtain_correction(
                    lambda i: load_ref(real.images.refs[i]), len(real.images.ids), real.images.keys, verify.grid,
                    root, secret, progress)
        # Verified SSIMs are kept as they are computed: an interrupted audit verifies only the rest.
        kept = None if not verify.top or root is None or secret is None else verified_store(
            root, asdict(verify.grid), secret)
        calibrated, held_found, held_verify, gate = None, None, None, chosen.different_max
        if held is not None:
            with timings("holdout_s"):  # scored first: its thresholds decide the synthetic images
                calibrated, held_found, held_verify = _calibrate(
                    net, held, real, search, verify, fpr, not given, device, progress, correction,
                    None if kept is None else PairStore(kept, held.images.keys, real.images.keys))
            if not given:
                if verify.top:
                    verify = replace(verify, thresholds=calibrated.thresholds)
                else:
                    chosen = calibrated.thresholds
            if calibrated.deepssim_gate is not None:
                # An image not verified is judged on DeepSSIM: verify every image whose DeepSSIM
                # p-value could reach fpr, so that "duplicate exactly when p <= fpr" holds.
                gate = min(gate, calibrated.deepssim_gate)
        found, verify_summary = _candidates(net, fake, real, search, verify, chosen, device, progress, timings, gate,
                                            correction,
                                            None if kept is None else PairStore(kept, fake.images.keys, real.images.keys))
        if verify_summary is not None:
            verify_summary["correction"] = None if correction is None else correction.summary() | {
                "from_cache": correction_cached}
        pair_labels = classify_pairs(found.scores, found.verified, chosen, verify.decision_thresholds)
        pair_labels[found.exact, 0] = "duplicate"  # byte copies, whatever the thresholds
        outcome = Outcome(found.scores[:, 0].copy(), found.indices[:, 0].copy(), pair_labels[:, 0], found.exact)
        timings.seconds["total_s"] = time.perf_counter() - t_start
        summary = build_summary(model=net, thresholds=chosen, train=real.images, synthetic=fake.images,
                                outcome=outcome, search=found.summary(search.top_k),
                                cache=cache_summary(cache, real, fake, *([held] if held else [])),
                                verify=verify_summary, timings=timings.seconds, model_source=source.to_dict(),
                                peak_memory_mb=timings.peak_mb)
        p_values = None
        if calibrated is not None and held is not None and held_found is not None:
            p_values = calibrated.p_values(found.deciding_scores(), ~np.isfinite(found.verified[:, 0]))
            held_labels = classify_pairs(held_found.scores[:, :1], held_found.verified[:, :1], chosen,
                                         verify.decision_thresholds)[:, 0]
            summary["thresholds"]["holdout"], summary["holdout"] = holdout_summary(
                calibrated, held.images, used=not given, synthetic_labels=outcome.labels, holdout_labels=held_labels)
            if held_verify is not None:
                summary["holdout"]["verify"] = held_verify | {"gate": gate}
            summary["skipped_unreadable"] = [*summary["skipped_unreadable"], *held.images.skipped]
        patients = assign_patients(real.images.ids, real.images.refs, group_by)
        rows = patient_rows(patients, outcome.best_train, outcome.labels, outcome.best_scores, fake.images.ids)
        summary["patients"] = patients_summary(patients, rows, len(fake.images.ids))
        result = AuditResult(_matches(fake.images, real.images, found, pair_labels, patients.names, p_values), summary,
                             fake.images.ids, real.images.ids, outcome.best_scores, outcome.best_train, outcome.labels,
                             chosen, fake.images.refs, real.images.refs,
                             found.deciding_scores() if verify.top else None,
                             verify.decision_thresholds if verify.top else None, p_values, calibrated,
                             model_folder=None if source.kept else source.folder, patients=rows)
    except BaseException:
        source.discard()  # a model trained for this audit only: its folder goes with the audit
        raise
    if result.model_folder is not None:  # a temporary folder: gone with the result
        weakref.finalize(result, shutil.rmtree, result.model_folder, True)
    return result


def _search(net: DeepSSIMModel, queries: EmbeddedSet, real: EmbeddedSet, search: SearchOptions,
            verify: VerifyOptions, device: str, progress: bool) -> Candidates:
    # Verification looks at up to ``verify.depth`` candidates even when fewer are reported.
    return find_candidates(net, queries, real, max(search.top_k, verify.depth), search, device=device,
                           progress=progress)


def _candidates(net: DeepSSIMModel, queries: EmbeddedSet, real: EmbeddedSet, search: SearchOptions,
                verify: VerifyOptions, chosen: Thresholds, device: str, progress: bool,
                timings: _Stages, gate: float, correction: VerifyCorrection | None,
                store: PairStore | None) -> tuple[Candidates, dict | None]:
    """The ``search.top_k`` candidates of every synthetic image, those scoring above ``gate``
    verified as ``verify`` says, and the verification's summary entry (None when off)."""
    with timings("search_s"):
        found = _search(net, queries, real, search, verify, device, progress)
    queries.vectors = queries.vectors[:0]  # searched: verification needs the memory, not them
    verify_summary = None
    if verify.top:
        with timings("verify_s"):
            found, verify_summary = verify_suspicious(found, gate, verify, queries.images.refs,
                                                      real.images.refs, progress=progress, correction=correction,
                                                      store=store)
        if gate != chosen.different_max:
            verify_summary["gate"] = gate
    return found.first(search.top_k), verify_summary


def _calibrate(net: DeepSSIMModel, held: EmbeddedSet, real: EmbeddedSet, search: SearchOptions,
               verify: VerifyOptions, fpr: float, fitted: bool, device: str,
               progress: bool, correction: VerifyCorrection | None,
               store: PairStore | None) -> tuple[HoldoutCalibration, Candidates, dict | None]:
    """The holdout's thresholds at ``fpr``, its candidates and, with verification, its
    verification's summary entry. With verification every holdout image is verified, the
    extension following the thresholds that decide (``fitted``: the holdout's own)."""
    found = _search(net, held, real, search, verify, device, progress)
    ids = held.images.ids

    def fit(scores: np.ndarray, on: Candidates = found, **scale: Any) -> HoldoutCalibration:
        return calibrate_holdout(scores, on.exact, ids, [real.images.ids[int(t)] for t in on.indices[:, 0]],
                                 fpr, **scale)

    summary = None
    if verify.top:
        deepssim_best = found.scores[:, 0].copy()
        found, summary = verify_null(found, verify, held.images.refs, real.images.refs, progress=progress,
                                     correction=correction, store=store,
                                     fit=(lambda s: fit(s).thresholds.duplicate_min) if fitted else None)
        calibrated = fit(found.deciding_scores(), found, scale="verified_ssim", deepssim_scores=deepssim_best)
    else:
        calibrated = fit(found.deciding_scores())
    return calibrated, found.first(search.top_k), summary


class _Stages:
    """Each stage's seconds (``seconds["embed_s"]``) and the process's peak memory so far at
    its end, in MB (``peak_mb["embed"]``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.peak_mb: dict[str, float] = {}

    @contextmanager
    def __call__(self, key: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.seconds[key] = time.perf_counter() - t0
        self.peak_mb[key.removesuffix("_s")] = peak_memory_mb()


def peak_memory_mb() -> float:
    """The largest resident memory this process has held so far, in MB (0 where unknown)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1 << 20 if sys.platform == "darwin" else 1 << 10), 1)


def _matches(synthetic: ImageSet, train: ImageSet, found: Candidates, pair_labels: np.ndarray,
             train_patients: list[str], p_values: np.ndarray | None = None) -> list[Match]:
    """Every candidate found as a ``Match``, by synthetic image then rank (empty slots left
    out); the best match carries the image's p-value when there is one."""
    checked = np.isfinite(found.verified)
    return [
        Match(synthetic.ids[s], r + 1, train.ids[int(found.indices[s, r])], float(found.scores[s, r]),
              str(pair_labels[s, r]), bool(found.exact[s]) and r == 0,
              float(found.verified[s, r]) if checked[s, r] else None,
              float(p_values[s]) if p_values is not None and r == 0 else None,
              train_patients[int(found.indices[s, r])])
        for s in range(len(synthetic.ids)) for r in range(found.scores.shape[1]) if found.indices[s, r] >= 0
    ]
