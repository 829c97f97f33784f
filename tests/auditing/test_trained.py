"""The audit without a model: it trains one per training set, keeps it in the cache, reuses it."""

from __future__ import annotations

import fcntl
import gc
import json
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import deepssim.auditing.api as api
import deepssim.training.trainer as trainer
from deepssim.auditing import audit
from deepssim.auditing.trained import MODELS, RECORD, TrainingInterrupted, _locked
from deepssim.cli import main
from deepssim.model import ModelConfig, Preprocess
from deepssim.training import PRESETS, TrainConfig

MODEL_SET = {"model.safetensors", "config.json", "metrics.csv", RECORD}
"""What a model folder an audit trained holds, cached or saved with the results."""

# Trains in about a second on a CPU: 2 epochs of 4 steps on 32 px images.
TINY = TrainConfig(
    preset="tiny",
    model=ModelConfig(backbone="small", width=8, embedding_dim=16, hidden_dim=32, dropout=0.0),
    preprocess=Preprocess(size=32, intensity="rank"),
    epochs=2, batch_size=16, n_train_pairs=64, n_val_pairs=24, val_fraction=0.25, seed=7,
)


@pytest.fixture
def sets(tmp_path: Path, blobs: Callable[[int], np.ndarray]) -> tuple[Path, Path]:
    """16 training images, 3 synthetic ones (a copy of a training image and 2 new)."""
    train, synth = tmp_path / "train", tmp_path / "synthetic"
    train.mkdir()
    synth.mkdir()
    for k in range(16):
        Image.fromarray(blobs(k)).save(train / f"t{k:02d}.png")
    shutil.copy(train / "t03.png", synth / "copy.png")
    for k in range(2):
        Image.fromarray(blobs(100 + k)).save(synth / f"new{k}.png")
    return train, synth


def _audit(train: Path, synth: Path, cache: Path | None, lines: list[str], **kwargs: object):
    return audit(train, synth, cache_dir=cache, device="cpu", preset=TINY, say=lines.append, **kwargs)


def _temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder standing for the system's temporary folder, to see what is left in it."""
    temp = tmp_path / "system-temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return temp


def _snapshot(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_trains_once_then_reuses_the_model(sets: tuple[Path, Path], tmp_path: Path) -> None:
    train, synth = sets
    cache, lines = tmp_path / "cache", []
    first = _audit(train, synth, cache, lines)
    folders = [p for p in (cache / MODELS).iterdir() if p.is_dir()]
    assert len(folders) == 1
    folder = folders[0]
    assert lines == [f"no model given: training the tiny preset on 16 training images (2 epochs); it is kept in "
                     f"{folder} for later audits of this training set"]
    model = first.summary["model"]
    assert model["origin"] == "trained" and model["path"] == str(folder) and model["preset"] == "tiny"
    assert MODEL_SET == {p.name for p in folder.iterdir()}
    record = json.loads((folder / RECORD).read_text())
    assert record["training_key"] == model["training_set"] and record["n_images"] == 16
    assert record["trained_at"] == model["trained_at"] and len(record["mac"]) == 64
    assert not list((cache / MODELS).glob("*.training*"))  # the run's work folder is gone
    assert first.matches[0].train == "t03.png" and first.matches[0].exact_copy
    before = _snapshot(folder)

    lines.clear()
    second = _audit(train, synth, cache, lines)
    when = record["trained_at"].replace("T", " ").replace("Z", " UTC")
    assert lines == [f"using the model trained on this training set on {when} ({folder})"]
    assert second.summary["model"]["origin"] == "cached"
    assert second.summary["model"]["sha256"] == model["sha256"]
    assert second.summary["cache"]["misses"] == 0  # the first audit embedded everything with this model
    assert _snapshot(folder) == before  # not trained again, not rewritten

    # The same images elsewhere, under other names: the same model.
    moved = tmp_path / "elsewhere"
    shutil.copytree(train, moved)
    (moved / "t00.png").rename(moved / "renamed.png")
    assert _audit(moved, synth, cache, []).summary["model"]["origin"] == "cached"


def test_a_changed_training_set_trains_a_new_model(sets: tuple[Path, Path], tmp_path: Path,
                                                   blobs: Callable[[int], np.ndarray]) -> None:
    train, synth = sets
    cache = tmp_path / "cache"
    first = _audit(train, synth, cache, [])
    Image.fromarray(blobs(50)).save(train / "t05.png")  # one image replaced
    lines: list[str] = []
    second = _audit(train, synth, cache, lines)
    assert second.summary["model"]["origin"] == "trained" and lines[0].startswith("no model given: training")
    assert second.summary["model"]["training_set"] != first.summary["model"]["training_set"]
    assert len([p for p in (cache / MODELS).iterdir() if p.is_dir()]) == 2
    # Another configuration of the same set is another model too.
    third = audit(train, synth, cache_dir=cache, device="cpu", preset=TINY.with_overrides(seed=8), say=[].append)
    assert third.summary["model"]["origin"] == "trained"


def test_an_edited_cached_model_is_not_trusted(sets: tuple[Path, Path], tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    train, synth = sets
    cache = tmp_path / "cache"
    folder = Path(_audit(train, synth, cache, []).summary["model"]["path"])
    config = json.loads((folder / "config.json").read_text())
    config["thresholds"] = [0.1, 0.2]  # say, to hide copies
    (folder / "config.json").write_text(json.dumps(config))
    again = _audit(train, synth, cache, [])
    assert again.summary["model"]["origin"] == "trained"
    assert "not trusted" in caplog.text
    assert json.loads((folder / "config.json").read_text()).get("thresholds") != [0.1, 0.2]


def test_without_a_cache_the_model_is_saved_with_the_results(sets: tuple[Path, Path], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    train, synth = sets
    temp = _temp_dir(tmp_path, monkeypatch)
    lines: list[str] = []
    result = _audit(train, synth, None, lines)
    assert lines == ["no model given and no cache: training the tiny preset on 16 training images (2 epochs) "
                     "for this audit only, in a temporary folder deleted after the training; the model is "
                     "written with the results, into model/ of the output folder, when they are saved"]
    assert result.summary["model"]["origin"] == "trained" and result.summary["cache"] is None
    # The training's folder (its pair sets hold the training images) is gone; the model's files wait.
    [kept] = temp.iterdir()
    assert kept.name.startswith("deepssim-model-") and {p.name for p in kept.iterdir()} == MODEL_SET
    out = tmp_path / "audit"
    result.save(out)
    # What a cached model's folder holds (test_trains_once_then_reuses_the_model), and nothing else.
    assert {p.name for p in (out / "model").iterdir()} == MODEL_SET
    record = json.loads((out / "model" / RECORD).read_text())
    assert record["training_key"] == result.summary["model"]["training_set"] and record["n_images"] == 16
    assert "mac" not in record  # no cache, no cache key to sign with
    assert json.loads((out / "summary.json").read_text())["model"]["path"] == str(out / "model")
    del result
    gc.collect()
    assert not list(temp.iterdir())  # the model's temporary folder went with the result
    given = audit(train, synth, out / "model", device="cpu", cache_dir=None)
    assert given.summary["model"]["origin"] == "given"
    assert given.summary["model"]["sha256"] == record["files"]["model.safetensors"]
    given.save(out)  # an earlier audit's folder, model/ included, is replaced whole
    assert not (out / "model").exists()


@pytest.mark.parametrize("failure", [RuntimeError("the search failed"), KeyboardInterrupt()])
def test_an_audit_failing_after_its_training_leaves_no_temporary_folder(
        sets: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException) -> None:
    temp = _temp_dir(tmp_path, monkeypatch)

    def fail(*args: object, **kwargs: object) -> None:
        raise failure

    monkeypatch.setattr(api, "find_candidates", fail)
    lines: list[str] = []
    with pytest.raises(type(failure)):
        _audit(*sets, None, lines)
    assert lines[0].startswith("no model given and no cache: training the tiny preset")
    assert not list(temp.iterdir())


@pytest.mark.parametrize("cached", [True, False])
def test_a_failed_training_leaves_no_training_folder(sets: tuple[Path, Path], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch, cached: bool) -> None:
    temp = _temp_dir(tmp_path, monkeypatch)

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(trainer, "validate", fail)  # after the pair sets are built
    cache = tmp_path / "cache" if cached else None
    with pytest.raises(RuntimeError, match="out of memory"):
        _audit(*sets, cache, [])
    assert not list(temp.iterdir())
    if cached:  # the lock file only: no work folder, no half-installed model
        assert [p.suffix for p in (cache / MODELS).iterdir()] == [".lock"]


def test_an_interrupted_training_resumes(sets: tuple[Path, Path], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    train, synth = sets
    cache = tmp_path / "cache"
    save = trainer.save_state

    def save_then_stop(path: Path, state: dict) -> None:
        save(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_state", save_then_stop)
    with pytest.raises(TrainingInterrupted, match="training state after its last finished epoch is kept in") as info:
        _audit(train, synth, cache, [])
    assert isinstance(info.value, KeyboardInterrupt)
    work = next((cache / MODELS).glob("*.training"))
    assert (work / "train_state.pt").is_file() and not [p for p in (cache / MODELS).iterdir()
                                                          if p.is_dir() and p != work]
    monkeypatch.setattr(trainer, "save_state", save)
    lines: list[str] = []
    result = _audit(train, synth, cache, lines)
    assert lines[1] == f"resuming the training interrupted earlier, from its state in {work}"
    assert result.summary["model"]["origin"] == "trained" and not work.exists()
    assert len((Path(result.summary["model"]["path"]) / "metrics.csv").read_text().splitlines()) == 1 + 2


def test_the_lock_waits_for_another_audit(tmp_path: Path) -> None:
    path, lines, done = tmp_path / "m.lock", [], threading.Event()

    def other() -> None:
        with _locked(path, lines.append):
            done.set()

    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        thread = threading.Thread(target=other)
        thread.start()
        thread.join(1.0)
        assert not done.is_set() and lines == [
            f"another audit is training or checking the model of this training set (lock {path}); waiting for "
            "it to finish"]
        fcntl.flock(fh, fcntl.LOCK_UN)
    thread.join(10.0)
    assert done.is_set()


def test_a_preset_with_a_model_is_refused(sets: tuple[Path, Path], tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="preset chooses the model an audit trains"):
        audit(*sets, tiny_model_dir, preset="fast", cache_dir=None)


def test_the_command_trains_once_and_says_so(sets: tuple[Path, Path], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(PRESETS, "fast", TrainConfig.from_dict({**TINY.to_dict(), "preset": "fast"}))
    train, synth = sets
    argv = ["-q", "audit", "--train", str(train), "--synthetic", str(synth), "--out", str(tmp_path / "audit"),
            "--cache", str(tmp_path / "cache"), "--device", "cpu", "--no-progress", "--json"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    folder = json.loads(out)["model"]["path"]
    assert err.splitlines() == [f"no model given: training the fast preset on 16 training images (2 epochs); "
                                f"it is kept in {folder} for later audits of this training set"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert summary["model"]["origin"] == "cached"
    assert err.splitlines()[0].startswith("using the model trained on this training set on ")
    assert main([*argv, "--model", folder, "--preset", "plus"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "deepssim audit: error: --preset and --train-minutes choose the model an audit trains when it is given "
        "none; with --model it uses that model"]
    # --no-cache: the model goes into the output folder.
    no_cache = [a for a in argv if a not in ("--cache", str(tmp_path / "cache"))] + ["--no-cache"]
    assert main(no_cache) == 0
    assert json.loads(capsys.readouterr().out)["model"]["path"] == str(tmp_path / "audit" / "model")
    assert (tmp_path / "audit" / "model" / "model.safetensors").is_file()


def test_ctrl_c_during_the_training_says_it_resumes(sets: tuple[Path, Path], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(PRESETS, "fast", TrainConfig.from_dict({**TINY.to_dict(), "preset": "fast"}))

    def stop(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "validate", stop)  # in the first epoch: no state saved yet
    train, synth = sets
    argv = ["-q", "audit", "--train", str(train), "--synthetic", str(synth), "--out", str(tmp_path / "audit"),
            "--cache", str(tmp_path / "cache"), "--device", "cpu", "--no-progress"]
    assert main(argv) == 130
    work = next((tmp_path / "cache" / MODELS).glob("*.training"))
    assert capsys.readouterr().err.splitlines()[-1] == (
        "deepssim audit: interrupted; no epoch of the model's training had finished (its state is saved at each "
        f"epoch's end); the pair sets already built are kept in {work / 'cache'}: run the same command again to "
        "reuse them, the training then starts from its first step")
    assert list((work / "cache").glob("pairs-*.npz"))
