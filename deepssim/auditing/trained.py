"""The model an audit trains when it is given none: trained once per training set, then kept.

Layout under the cache folder (``cache.default_cache_dir()``)::

    models/<name>/            a finished model: model.safetensors, config.json, metrics.csv, trained.json
    models/<name>.training/   its training, running or interrupted: train_state.pt, cache/ (pair sets)
    models/<name>.lock        the lock held by the audit that trains or checks the model

``<name>`` is an HMAC, under the user's cache key, of the *training key* (``training_key``):
the content key of every training image (file bytes + member + slice, ``ContentHasher``),
sorted, the slicing options, the training configuration (preset and every setting) and the
deepssim version. The same images, wherever they lie and whatever their names, find their
model; a changed, added or removed image, another preset or budget, or another version trains
a new one. Each user's key gives its own folders in a shared cache.

``trained.json`` records the training key, the number of images, the preset, when the model
was trained, and the checksums of ``config.json`` and ``model.safetensors``, with an HMAC of
all of it under the user's key: a model edited, or put there by someone without the key, is
not trusted (deleted and trained again), as the embedding cache's shards are not.

Written whole: the model is trained in ``<name>.training/``, its files copied into a
temporary folder beside, which is then renamed ``<name>``; a folder of that name is always a
finished model. ``<name>.training/`` holds the pair sets (``cache/``: the preprocessed training
images and their perturbed copies) and is deleted once the model is installed, or when the
training fails; only a Ctrl-C keeps it, for the next run to resume from (its message says
where). Without a cache the training runs in a temporary folder deleted as soon as it ends, and
only the files a cached model folder holds (``MODEL_FILES``) are kept, in another temporary
folder, for ``AuditResult.save``. Concurrent audits of one training set take the lock file (``flock``, released
by the system when a process ends, so a killed audit leaves no stale lock): the second waits
for the first's training, then reuses its model. Where ``fcntl`` is missing (Windows) there
is no lock: each audit trains in its own folder and the first to finish installs its model.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..model.api import DeepSSIMModel, load_model
from ..model.checkpoint import CONFIG, WEIGHTS, ModelFolderError
from ..readers import SliceSpec
from ..storage import atomic_write_bytes, record_mac, sha256_file
from ..training import TrainConfig, get_preset, train
from ..training.state import STATE
from ..training.validation import METRICS
from ..versions import __version__

try:
    import fcntl
except ImportError:  # Windows: no lock (see the module docstring)
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

MODELS = "models"
"""The cache's folder of trained models."""
RECORD = "trained.json"
"""What a cached model was trained on, signed (the module docstring)."""
RECORD_FORMAT = 1
DEFAULT_PRESET = "fast"
MODEL_FILES = (WEIGHTS, CONFIG, METRICS, RECORD)
"""What a model folder an audit trained holds: never the training's pair sets (its training
images), resume state or TensorBoard logs."""
SAVED_FOLDER = "model"
"""Where ``AuditResult.save`` writes a model trained without a cache, in the output folder."""
ORIGINS = ("given", "trained", "cached")
"""The summary's ``model.origin``: the caller's model, trained by this audit, or reused."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C while an audit trained its model; the message says what was kept."""


@dataclass(frozen=True)
class ModelSource:
    """Where an audit's model came from (the summary's ``model`` entry holds these fields).

    Attributes:
        origin: One of ``ORIGINS``.
        training_set: The training key of a model trained by an audit (``training_key``).
        trained_at: When it was trained (UTC, ISO 8601).
        folder: Its folder; for a model trained without a cache, a temporary one that
            ``AuditResult.save`` copies into the output folder.
        kept: Whether the folder is the cache's (False: trained for this audit only).
    """

    origin: str
    training_set: str | None = None
    trained_at: str | None = None
    folder: Path | None = None
    kept: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"origin": self.origin, "training_set": self.training_set, "trained_at": self.trained_at}

    def discard(self) -> None:
        """Delete the folder of a model trained for this audit only (nothing when ``kept``)."""
        if self.folder is not None and not self.kept:
            _remove(self.folder)


def training_config(preset: str | TrainConfig | None) -> TrainConfig:
    """The configuration an audit trains with: a preset's name, a ``TrainConfig`` (a preset
    with overrides: ``get_preset("fast").with_overrides(max_minutes=5)``), or None for
    ``DEFAULT_PRESET``. ValueError for an unknown name or another type."""
    if preset is None:
        return get_preset(DEFAULT_PRESET)
    if isinstance(preset, TrainConfig):
        return preset
    if isinstance(preset, str):
        return get_preset(preset)
    raise ValueError(f"preset must be a preset's name or a TrainConfig, got {type(preset).__name__}")


def training_key(keys: Sequence[str], slices: SliceSpec, config: TrainConfig) -> str:
    """SHA-256 naming what a model is trained from: the images' content keys (sorted: their
    order and names do not change the set), the slicing, the configuration and the version."""
    text = json.dumps({"format": RECORD_FORMAT, "images": sorted(keys), "slices": asdict(slices),
                       "training": config.to_dict(), "deepssim": __version__}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _budget(config: TrainConfig) -> str:
    return f"{config.max_minutes:g} min budget" if config.max_minutes is not None else f"{config.epochs} epochs"


def _files(folder: Path) -> dict[str, str]:
    """Checksums of the files a model is loaded from."""
    return {name: sha256_file(folder / name) for name in (CONFIG, WEIGHTS)}


def _trusted(folder: Path, key: str, secret: bytes) -> dict[str, Any] | None:
    """The record of the finished model in ``folder`` if it is of ``key``, signed with
    ``secret`` and its files unchanged; else None (with the reason logged)."""
    try:
        record = json.loads((folder / RECORD).read_bytes())
        ok = (isinstance(record, dict) and record.get("training_key") == key
              and hmac.compare_digest(str(record.get("mac", "")), record_mac(secret, record))
              and record.get("files") == _files(folder))
    except (OSError, ValueError) as exc:
        log.debug("%s: unreadable model record (%s)", folder, exc)
        return None
    return record if ok else None


@contextmanager
def _locked(path: Path, say: Callable[[str], None]) -> Iterator[bool]:
    """Hold the lock file ``path`` (waiting, and saying so, while another audit holds it);
    yields whether a lock was taken (False where the system has none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        if fcntl is None:
            yield False
            return
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"another audit is training or checking the model of this training set (lock {path}); "
                "waiting for it to finish")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _remove(folder: Path) -> None:
    """Delete a model's or a training's folder; one that stays is warned about (it may hold
    the pair sets: the training images)."""
    shutil.rmtree(folder, ignore_errors=True)
    if folder.exists():
        log.warning("%s: cannot delete this training folder; delete it yourself (it may hold the "
                    "training images, in its pair sets)", folder)


def copy_model_files(folder: Path, dest: Path) -> None:
    """Copy into ``dest`` (created if missing) the ``MODEL_FILES`` that ``folder`` holds, and
    nothing else: not a training's pair sets, resume state or logs."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if (folder / name).is_file():
            shutil.copy2(folder / name, dest / name)


def _copy_model(work: Path, dest: Path, record: dict[str, Any], secret: bytes | None) -> None:
    """Copy the model files of the training in ``work`` into ``dest`` and write its record
    there (signed with ``secret``; without one, as there is no cache key, unsigned)."""
    copy_model_files(work, dest)
    record = {**record, "files": _files(dest)}
    if secret is not None:
        record["mac"] = record_mac(secret, record)
    atomic_write_bytes(dest / RECORD, (json.dumps(record, indent=2) + "\n").encode())


def _interrupted(work: Path) -> str:
    """What a Ctrl-C during the training in ``work`` kept, and how to go on."""
    if (work / STATE).is_file():
        return (f"the model's training state after its last finished epoch is kept in {work}: run the same "
                "command again to resume the training from it (the steps since that epoch are trained again)")
    return (f"no epoch of the model's training had finished (its state is saved at each epoch's end); the pair "
            f"sets already built are kept in {work / 'cache'}: run the same command again to reuse them, the "
            "training then starts from its first step")


def _train(sources: Sequence[str], work: Path, config: TrainConfig, slices: SliceSpec, skip_unreadable: bool,
           device: str, progress: bool, say: Callable[[str], None]) -> str:
    """Train into ``work``, resuming the state found there; returns why training stopped."""
    resume = (work / STATE).is_file()
    options = {"device": device, "progress": progress, "slices": slices, "skip_unreadable": skip_unreadable}
    if resume:
        say(f"resuming the training interrupted earlier, from its state in {work}")
    try:
        return train(list(sources), work, config, resume=resume, **options).stopped_by
    except ValueError as exc:
        if not resume or str(work / STATE) not in str(exc):
            raise
        # A state of other settings or data (files renamed), or damaged: start over cleanly.
        say(f"cannot resume ({exc}); training from the start")
        (work / STATE).unlink(missing_ok=True)
        return train(list(sources), work, config, resume=False, **options).stopped_by


def _install(work: Path, final: Path, record: dict[str, Any], secret: bytes) -> None:
    """Copy the finished model's files from ``work`` into a folder beside ``final``, sign it,
    and rename it ``final`` (a model finished meanwhile by another audit is kept instead);
    ``work`` is deleted, installed or not."""
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        try:
            _copy_model(work, staging, record, secret)
            try:
                os.rename(staging, final)
            except OSError:
                if not final.is_dir():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        _remove(work)  # the pair sets hold the training images: not kept past the training


def _record(key: str, n_images: int, sources: Sequence[str], slices: SliceSpec, config: TrainConfig,
            stopped_by: str, stamp: str) -> dict[str, Any]:
    """A trained model's ``trained.json`` before its checksums and signature."""
    return {"format": RECORD_FORMAT, "training_key": key, "n_images": n_images, "sources": list(sources),
            "slices": asdict(slices), "preset": config.preset, "deepssim_version": __version__,
            "trained_at": stamp, "stopped_by": stopped_by}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def obtain_model(
    sources: Sequence[str], keys: Sequence[str], config: TrainConfig, *, slices: SliceSpec,
    skip_unreadable: bool, cache_root: Path | None, secret: bytes | None, device: str, progress: bool,
    say: Callable[[str], None],
) -> tuple[DeepSSIMModel, ModelSource]:
    """The model of ``config`` trained on the training images (``sources``, whose images have
    the content keys ``keys``): the cached one when ``cache_root`` holds it, else trained now
    (resuming an interrupted training) and kept there. Without a cache (``cache_root`` None)
    it is trained in a temporary folder deleted when the training ends, and its ``MODEL_FILES``
    kept in another (``ModelSource.folder``, not ``kept``) for ``AuditResult.save`` to copy;
    the caller deletes that one (``ModelSource.discard``). ``say`` gets one line when training
    starts, resumes or waits, and when a cached model is used.

    Raises:
        TrainingInterrupted: Ctrl-C during training (its message says what was kept).
        ReadError, ValueError: from the training (unreadable images, too few of them); its
            folder is deleted then.
    """
    key = training_key(keys, slices, config)
    what = f"the {config.preset} preset on {len(keys)} training images ({_budget(config)})"
    if cache_root is None:
        say(f"no model given and no cache: training {what} for this audit only, in a temporary folder "
            f"deleted after the training; the model is written with the results, into {SAVED_FOLDER}/ of the "
            "output folder, when they are saved")
        return _train_uncached(sources, keys, key, config, slices, skip_unreadable, device, progress, say)
    assert secret is not None
    models = cache_root / MODELS
    name = hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()[:32]
    final = models / name
    with _locked(models / f"{name}.lock", say) as locked:
        if final.is_dir():
            record = _trusted(final, key, secret)
            if record is not None:
                try:
                    model = load_model(final, device=device)
                except ModelFolderError as exc:  # signed, yet unloadable here: trained again
                    log.warning("%s: cached model cannot be loaded (%s); training it again", final, exc)
                else:
                    when = record["trained_at"].replace("T", " ").replace("Z", " UTC")
                    say(f"using the model trained on this training set on {when} ({final})")
                    return model, ModelSource("cached", key, record["trained_at"], final, kept=True)
            else:
                log.warning("%s: cached model not trusted (not signed with your cache key, or edited since); "
                            "deleting it and training again", final)
            shutil.rmtree(final)
        # Unlocked (no fcntl), each audit trains in a folder of its own, which no later run resumes.
        work = models / (f"{name}.training" if locked else f"{name}.training-{os.getpid()}")
        say(f"no model given: training {what}; it is kept in {final} for later audits of this training set")
        try:
            stopped_by = _train(sources, work, config, slices, skip_unreadable, device, progress, say)
        except KeyboardInterrupt:
            if locked:
                raise TrainingInterrupted(_interrupted(work)) from None
            _remove(work)
            raise TrainingInterrupted("the model being trained was not kept (no lock to resume it under): run "
                                      "the same command again to train it from the start") from None
        except BaseException:
            _remove(work)  # its data or settings failed: a rerun would not resume it
            raise
        stamp = _now()
        _install(work, final, _record(key, len(keys), sources, slices, config, stopped_by, stamp), secret)
        record = _trusted(final, key, secret) or {"trained_at": stamp}
        return (load_model(final, device=device),
                ModelSource("trained", key, record["trained_at"], final, kept=True))


def _train_uncached(sources: Sequence[str], keys: Sequence[str], key: str, config: TrainConfig, slices: SliceSpec,
                    skip_unreadable: bool, device: str, progress: bool,
                    say: Callable[[str], None]) -> tuple[DeepSSIMModel, ModelSource]:
    """``obtain_model`` without a cache: train in a temporary folder, keep the model's files in
    another, delete the first whatever happens (it holds the training images)."""
    work = Path(tempfile.mkdtemp(prefix="deepssim-training-"))
    try:
        try:
            stopped_by = _train(sources, work, config, slices, skip_unreadable, device, progress, say)
        except KeyboardInterrupt:
            raise TrainingInterrupted("the model being trained was not kept (no cache): run the same "
                                      "command again to train it from the start") from None
        folder = Path(tempfile.mkdtemp(prefix="deepssim-model-"))
        source = ModelSource("trained", key, _now(), folder, kept=False)
        try:
            _copy_model(work, folder, _record(key, len(keys), sources, slices, config, stopped_by,
                                              str(source.trained_at)), None)
            return load_model(folder, device=device), source
        except BaseException:
            source.discard()
            raise
    finally:
        _remove(work)
