"""Training end to end on tiny data: outputs, determinism, resume, bad input, the command."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import deepssim.training.data as data_module
import deepssim.training.state as state
import deepssim.training.steps as steps
import deepssim.training.trainer as trainer
import deepssim.training.validation as validation
from deepssim.model import Preprocess, load_model, score_pairs
from deepssim.model.flips import best_flip_scores
from deepssim.model.network import ModelConfig
from deepssim.readers import ReadError
from deepssim.training import TrainConfig, evaluate, get_preset, train


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, blobs: Callable[[int], np.ndarray]) -> Path:
    root = tmp_path_factory.mktemp("train-data")
    for k in range(24):
        Image.fromarray(blobs(k)).save(root / f"img{k:02d}.png")
    return root


TINY = TrainConfig(
    preset="test",
    model=ModelConfig(backbone="small", width=8, embedding_dim=16, hidden_dim=32, dropout=0.1),
    preprocess=Preprocess(size=32, intensity="rank"),
    epochs=2, batch_size=16, n_train_pairs=64, n_val_pairs=24, val_fraction=0.25, seed=7,
)


def test_training_writes_a_usable_model_and_logs(data: Path, tmp_path: Path) -> None:
    result = train([data], tmp_path / "m", TINY, device="cpu", progress=False)
    out = result.model_dir
    assert {"model.safetensors", "config.json", "metrics.csv", "train_state.pt"} <= {
        p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    assert config["preset"] == "test" and config["training"]["n_train_pairs"] == 64
    assert config["training_data"]["n_images"] == 24 and len(config["training_data"]["fingerprint"]) == 64
    assert config["validation"]["val_perturbed_mse"] == result.best["val_perturbed_mse"]
    lines = (out / "metrics.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("epoch,step,elapsed_s,train_mse")
    pytest.importorskip("tensorboard")
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    # The saved model scores the validation pairs exactly as training evaluated them.
    model = load_model(out, device="cpu")
    pairs = result.val_pairs
    scores = score_pairs(model, [(pairs.images[i], pairs.images[j]) for i, j in zip(pairs.a, pairs.b)])
    best_clean = evaluate(model.network, model.preprocess, pairs, None, model.device)
    assert best_clean["mse"] == pytest.approx(float(np.mean((scores - pairs.target) ** 2)), abs=1e-6)
    assert best_clean["mse"] == pytest.approx(result.best["val_clean_mse"], abs=1e-6)


@pytest.mark.parametrize(("scoring", "joint"), [("best-flip", False), ("cross-fit", True)])
def test_flip_search_training_validates_and_saves_with_the_same_rule(
    data: Path, tmp_path: Path, scoring: str, joint: bool
) -> None:
    config = TINY.with_overrides(model__scoring=scoring, epochs=1)
    assert config.perturb.p_flip0 == config.perturb.p_flip1 == 0.0  # a rule that undoes flips
    result = train([data], tmp_path / "m", config, device="cpu", progress=False)
    model = load_model(result.model_dir, device="cpu")
    assert model.flip_search and json.loads((result.model_dir / "config.json").read_text())["model"]["scoring"] == scoring
    assert (model.scoring, model.joint_flips, model.cross_fit) == (scoring, joint, joint)
    pairs = result.val_pairs
    scores = score_pairs(model, [(pairs.images[i], pairs.images[j]) for i, j in zip(pairs.a, pairs.b)])
    clean = evaluate(model.network, model.preprocess, pairs, None, model.device)
    assert clean["mse"] == pytest.approx(float(np.mean((scores - pairs.target) ** 2)), abs=1e-6)
    assert clean["mse"] == pytest.approx(result.best["val_clean_mse"], abs=1e-6)
    # A flipped image scores as a copy of itself under the rule.
    images = np.stack([pairs.images[0], pairs.images[0][:, ::-1], pairs.images[0][::-1, ::-1]])
    got = validation.embed_pairs(model.network, model.preprocess, images, np.array([0, 0]), np.array([1, 2]),
                                 None, None, model.device)
    np.testing.assert_allclose(got.detach().numpy(), 1.0, atol=1e-5)


def test_same_seed_same_model(data: Path, tmp_path: Path) -> None:
    a = train([data], tmp_path / "a", TINY, device="cpu", progress=False)
    b = train([data], tmp_path / "b", TINY, device="cpu", progress=False)
    assert a.best == {**b.best, "elapsed_s": a.best["elapsed_s"]}
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def _train_interrupted_after_epoch_1(
    data: Path, out: Path, config: TrainConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that stops (KeyboardInterrupt) right after its first saved state."""
    save = trainer.save_state

    def save_then_crash(path: Path, state: dict) -> None:
        save(path, state)
        raise KeyboardInterrupt("simulated interruption after epoch 1")

    monkeypatch.setattr(trainer, "save_state", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train([data], out, config, device="cpu", progress=False)
    monkeypatch.setattr(trainer, "save_state", save)


def test_resume_after_an_interruption_matches_an_uninterrupted_run(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = train([data], tmp_path / "full", TINY, device="cpu", progress=False)
    _train_interrupted_after_epoch_1(data, tmp_path / "cut", TINY, monkeypatch)
    resumed = train([data], tmp_path / "cut", TINY, device="cpu", resume=True, progress=False)
    assert resumed.best["step"] == full.best["step"]
    assert resumed.best["val_perturbed_mse"] == pytest.approx(full.best["val_perturbed_mse"], abs=1e-7)
    assert len((tmp_path / "cut" / "metrics.csv").read_text().splitlines()) == 3


def test_bad_input(data: Path, tmp_path: Path, blobs: Callable[[int], np.ndarray]) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReadError, match="no readable image"):
        train([tmp_path / "empty"], tmp_path / "m", TINY, device="cpu", progress=False)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train([data], tmp_path / "new", TINY, device="cpu", resume=True, progress=False)
    train([data], tmp_path / "m2", TINY.with_overrides(epochs=1), device="cpu", progress=False)
    with pytest.raises(ValueError, match="other settings"):
        train([data], tmp_path / "m2", TINY, device="cpu", resume=True, progress=False)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.png").write_bytes(b"not a png")
    Image.fromarray(blobs(0)).save(broken / "good.png")
    with pytest.raises(ReadError, match="bad.png"):
        train([broken], tmp_path / "m3", TINY, device="cpu", progress=False)


def test_presets_and_overrides() -> None:
    paper = get_preset("paper")
    assert paper.model.backbone == "convnext_base" and paper.lr == 1e-3 and paper.batch_size == 32
    assert paper.perturb.p_flip0 == 0.33 and paper.model.pretrained == "imagenet"
    plus = get_preset("plus")
    assert plus.model.pooling == "gem" and plus.layer_decay == 0.3 and plus.registered_targets
    fast = get_preset("fast").with_overrides(epochs=3, model__width=16, preprocess__size=64)
    assert (fast.epochs, fast.model.width, fast.preprocess.size) == (3, 16, 64)
    assert TrainConfig.from_dict(fast.to_dict()) == fast
    # fast scores over flips, so it trains without flips (rotations and gamma stay).
    assert fast.model.scoring == "cross-fit" and fast.perturb.p_flip0 == fast.perturb.p_flip1 == 0.0
    assert fast.perturb.p_rotate == 0.8 and paper.model.scoring == plus.model.scoring == "cosine"
    assert fast.flip_pairs == 0.75 and paper.flip_pairs == 0.0
    # Copy partners ride on the in-batch pairs: no in-batch pairs turn them off.
    assert fast.copy_partners == 12 and paper.copy_partners == 0
    assert fast.with_overrides(in_batch_pairs=0).copy_partners == 0
    assert fast.with_overrides(lr=1e-3).copy_partners == 12
    with pytest.raises(ValueError, match="copy_partners"):
        fast.with_overrides(in_batch_pairs=0, copy_partners=4)
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("huge")
    with pytest.raises(ValueError, match="unknown setting 'optimizer__lr'"):
        fast.with_overrides(optimizer__lr=0.1)


def test_train_command(data: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "deepssim", "-q", "train", str(data), "--out", str(tmp_path / "cli"),
         "--image-size", "32", "--epochs", "1", "--n-train-pairs", "48", "--n-val-pairs", "16",
         "--batch-size", "16", "--device", "cpu", "--no-progress", "--json",
         "--in-batch-pairs", "2", "--in-batch-block", "8", "--dropout", "0.2", "--no-compile"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["stopped_by"] == "epochs" and 0 <= summary["best"]["val_perturbed_mae"] <= 2
    assert (tmp_path / "cli" / "model.safetensors").is_file()
    recorded = json.loads((tmp_path / "cli" / "config.json").read_text())["training"]
    assert (recorded["in_batch_pairs"], recorded["in_batch_block"], recorded["model"]["dropout"]) == (2, 8, 0.2)
    assert recorded["compile"] is False


def test_the_flip_caveat_is_said(data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="deepssim.training"):
        train([data], tmp_path / "y", TINY.with_overrides(epochs=1, perturb__p_flip0=0.0, perturb__p_flip1=0.0),
              device="cpu", progress=False)
    assert "flipped copies will score low" in caplog.text


def test_in_batch_settings_that_cannot_train_are_refused_when_made() -> None:
    with pytest.raises(ValueError, match="in_batch_pairs needs plain SSIM"):
        TINY.with_overrides(in_batch_pairs=2, registered_targets=True)
    with pytest.raises(ValueError, match="in_batch_pairs is a number of pairs per image"):
        TINY.with_overrides(in_batch_pairs=-1)
    with pytest.raises(ValueError, match="in_batch_block must be at least 2 inputs, got 1"):
        TINY.with_overrides(in_batch_pairs=2, in_batch_block=1)
    assert TINY.with_overrides(in_batch_block=1).in_batch_block == 1  # no in-batch pairs: unused


def test_block_in_batch_pairs_train_deterministically_resume_and_cache(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deepssim.training.blocks import BlockTargets

    config = TINY.with_overrides(in_batch_pairs=8, in_batch_block=6)
    found: list[int] = []
    real = BlockTargets.pairs_in_batch

    def spy(self: BlockTargets, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        first, second = real(self, index)
        found.append(len(first))
        return first, second

    monkeypatch.setattr(BlockTargets, "pairs_in_batch", spy)
    one = train([data], tmp_path / "a", config, device="cpu", progress=False)
    assert len(found) == one.history[-1]["step"] and sum(found) > 0  # the extra pairs are used
    two = train([data], tmp_path / "b", config, device="cpu", progress=False)
    assert one.best["val_perturbed_mse"] == two.best["val_perturbed_mse"]
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    (cached,) = (tmp_path / "a" / "cache").glob("blocks-*.npz")
    # In-batch pairs train another model than the sampled pairs alone (other batches, other pairs).
    other = train([data], tmp_path / "r", TINY, device="cpu", progress=False)
    assert other.best["val_perturbed_mse"] != one.best["val_perturbed_mse"]

    _train_interrupted_after_epoch_1(data, tmp_path / "cut", config, monkeypatch)
    (block_file,) = (tmp_path / "cut" / "cache").glob("blocks-*.npz")
    assert block_file.name == cached.name
    block_file.write_bytes(b"damaged")  # a damaged cache entry is rebuilt, not trusted
    resumed = train([data], tmp_path / "cut", config, device="cpu", resume=True, progress=False)
    assert resumed.best["step"] == one.best["step"]
    assert resumed.best["val_perturbed_mse"] == pytest.approx(one.best["val_perturbed_mse"], abs=1e-7)
    assert block_file.read_bytes()[:2] == b"PK"


def test_compiled_training_matches_eager_training(
    data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # torch.compile (Inductor) on the real path: the same run within float tolerance. TINY's
    # 64 pairs make 4 full batches of 16 per epoch, so every step goes through the compiled
    # network; the epoch's evaluation runs eagerly. No dropout: Inductor draws its own masks.
    config = TINY.with_overrides(epochs=1, model__dropout=0.0)
    eager = train([data], tmp_path / "eager", config, device="cpu", progress=False)
    with caplog.at_level("INFO", logger="deepssim.training"):
        compiled = train([data], tmp_path / "compiled", config.with_overrides(compile=True),
                         device="cpu", progress=False)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("torch.compile: ready") for m in messages), messages
    assert compiled.best["step"] == eager.best["step"] == 4
    for key in ("val_clean_mse", "val_perturbed_mse", "val_perturbed_mae"):
        assert compiled.best[key] == pytest.approx(eager.best[key], rel=1e-3, abs=1e-5)


class _FailingBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def]
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        raise RuntimeError("InductorError: backward compilation failed\nmore detail")


def _broken_compile(where: str):  # type: ignore[no-untyped-def]
    """A stand-in for torch.compile that fails when called, when its result is called, or in
    the backward pass of its result (where Inductor compiles the backward graph)."""
    def compile(fn, **options):  # type: ignore[no-untyped-def]
        if where == "compile":
            raise RuntimeError("Dynamo is not supported on this Python\nmore detail")

        def call(*args, **kwargs):  # type: ignore[no-untyped-def]
            if where == "call":
                raise RuntimeError("InductorError: no working C++ compiler found\nmore detail")
            out = fn(*args, **kwargs)
            return _FailingBackward.apply(out) if out.requires_grad else out
        return call
    return compile


@pytest.mark.parametrize("where", ["compile", "call", "backward"])
def test_a_failed_compilation_is_reported_and_training_goes_on_eagerly(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    eager = train([data], tmp_path / "eager", TINY, device="cpu", progress=False)
    monkeypatch.setattr(trainer.torch, "compile", _broken_compile(where))
    with caplog.at_level("WARNING", logger="deepssim.training"):
        fallback = train([data], tmp_path / "fallback", TINY.with_overrides(compile=True), device="cpu",
                         progress=False)
    warnings = [r.getMessage() for r in caplog.records if "torch.compile failed" in r.getMessage()]
    assert len(warnings) == 1 and "RuntimeError" in warnings[0] and "more detail" not in warnings[0]
    # The failed attempt drew no random numbers and changed no weights: the run is the eager one.
    assert fallback.best == {**eager.best, "elapsed_s": fallback.best["elapsed_s"]}
    assert (tmp_path / "eager" / "model.safetensors").read_bytes() == (
        tmp_path / "fallback" / "model.safetensors").read_bytes()


def test_step_network_runs_other_batch_sizes_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def spy_compile(fn, **options):  # type: ignore[no-untyped-def]
        def call(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(fn)
            return fn(*args, **kwargs)
        return call

    monkeypatch.setattr(trainer.torch, "compile", spy_compile)
    network = steps.Embedder(TINY.model).eval()
    step = steps.StepNetwork(network, TINY.preprocess, compile=True, full=4, amp=False,
                               device=torch.device("cpu"))
    calls.clear()  # the warm-up's calls
    batch = torch.rand(6, 32, 32)
    full, short = step(batch[:4]), step(batch[:3])
    assert len(calls) == 2  # normalisation and network, for the full batch only
    assert torch.allclose(full[:3], short, atol=1e-6)


def test_resume_may_switch_compile_but_not_other_settings(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _train_interrupted_after_epoch_1(data, tmp_path / "cut", TINY, monkeypatch)
    monkeypatch.setattr(trainer.torch, "compile", _broken_compile("compile"))  # fast, eager
    resumed = train([data], tmp_path / "cut", TINY.with_overrides(compile=True), device="cpu", resume=True,
                    progress=False)
    full = train([data], tmp_path / "full", TINY, device="cpu", progress=False)
    assert resumed.best["step"] == full.best["step"] == 8
    assert resumed.best["val_perturbed_mse"] == pytest.approx(full.best["val_perturbed_mse"], abs=1e-7)
    _train_interrupted_after_epoch_1(data, tmp_path / "cut2", TINY, monkeypatch)
    with pytest.raises(ValueError, match=r"other settings \(lr\)"):
        train([data], tmp_path / "cut2", TINY.with_overrides(lr=0.01), device="cpu", resume=True, progress=False)
    with pytest.raises(ValueError, match=r"other settings \(model\.dropout, perturb\.p_rotate\)"):
        train([data], tmp_path / "cut2", TINY.with_overrides(model__dropout=0.2, perturb__p_rotate=0.1),
              device="cpu", resume=True, progress=False)
    # A state written before ``compile`` existed resumes as well.
    state_path = tmp_path / "cut2" / state.STATE
    saved = torch.load(state_path, weights_only=True)
    del saved["config"]["compile"]
    torch.save(saved, state_path)
    old = train([data], tmp_path / "cut2", TINY, device="cpu", resume=True, progress=False)
    assert old.best["val_perturbed_mse"] == pytest.approx(full.best["val_perturbed_mse"], abs=1e-7)


def _old_style(config: dict) -> dict:
    """A configuration dict as older files record it: boolean scoring flags, the stem, the
    network size and the in-batch pairs' mining and grouping."""
    old = json.loads(json.dumps(config))
    scoring = old["model"].pop("scoring")
    old["model"].update(flip_symmetric=False, flip_search=scoring != "cosine",
                        joint_flips=scoring == "cross-fit", cross_fit=scoring == "cross-fit", stem="pool")
    old["preprocess"]["network_size"] = None
    old.update(in_batch_mining="block" if old["in_batch_pairs"] else "random", in_batch_grouping="random")
    return old


def test_a_configuration_written_with_older_settings_loads_as_the_same_configuration() -> None:
    for name in ("fast", "paper", "plus"):
        preset = get_preset(name)
        assert TrainConfig.from_dict(_old_style(preset.to_dict())) == preset
    fast = _old_style(get_preset("fast").to_dict())
    for change, message in [({"in_batch_mining": "random"}, "in_batch_mining 'random': in-batch pairs are the "
                                                             "pairs within blocks"),
                            ({"in_batch_grouping": "similar"}, "in_batch_grouping 'similar'"),
                            ({"model": {**fast["model"], "cross_fit": False}},
                             "the scoring settings flip_search, joint_flips are not a supported scoring rule"),
                            ({"model": {**fast["model"], "stem": "unshuffle"}}, "stem 'unshuffle'"),
                            ({"preprocess": {**fast["preprocess"], "network_size": 64}}, "network_size 64")]:
        with pytest.raises(ValueError, match=message):
            TrainConfig.from_dict({**fast, **change})
    # Without in-batch pairs, the mining setting changed nothing.
    paper = _old_style(get_preset("paper").to_dict())
    assert TrainConfig.from_dict({**paper, "in_batch_mining": "hardest"}) == get_preset("paper")


def test_a_resume_state_written_with_older_settings_resumes(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _train_interrupted_after_epoch_1(data, tmp_path / "cut", TINY, monkeypatch)
    state_path = tmp_path / "cut" / state.STATE
    saved = torch.load(state_path, weights_only=True)
    saved["config"] = _old_style(saved["config"])
    torch.save(saved, state_path)
    shutil.copytree(tmp_path / "cut", tmp_path / "cut2")
    resumed = train([data], tmp_path / "cut", TINY, device="cpu", resume=True, progress=False)
    full = train([data], tmp_path / "full", TINY, device="cpu", progress=False)
    assert resumed.best["step"] == full.best["step"] == 8
    assert resumed.best["val_perturbed_mse"] == pytest.approx(full.best["val_perturbed_mse"], abs=1e-7)
    # A rule this version does not have: refused, named, before any training.
    saved["config"]["model"]["joint_flips"] = True
    torch.save(saved, tmp_path / "cut2" / state.STATE)
    with pytest.raises(ValueError, match="written by another version of deepssim .*the scoring settings "
                                         "joint_flips are not a supported scoring rule"):
        train([data], tmp_path / "cut2", TINY, device="cpu", resume=True, progress=False)


def _validated_steps(folder: Path) -> list[int]:
    lines = (folder / "metrics.csv").read_text().splitlines()[1:]
    return [int(line.split(",")[1]) for line in lines]


@pytest.mark.parametrize(("val_every", "steps"), [(0, [12]), (1, [4, 8, 12]), (2, [8, 12])])
def test_val_every_validates_every_n_epochs_and_at_the_end(
    data: Path, tmp_path: Path, val_every: int, steps: list[int]
) -> None:
    config = TINY.with_overrides(epochs=3, val_every=val_every)
    result = train([data], tmp_path / "m", config, device="cpu", progress=False)
    assert _validated_steps(result.model_dir) == steps == [int(row["step"]) for row in result.history]
    # Validation does not change the training: the last validation is the same in every case.
    reference = train([data], tmp_path / "ref", TINY.with_overrides(epochs=3), device="cpu", progress=False)
    assert result.history[-1]["val_perturbed_mse"] == pytest.approx(
        reference.history[-1]["val_perturbed_mse"], abs=1e-7)
    saved = json.loads((result.model_dir / "config.json").read_text())
    assert saved["validation"]["step"] == result.best["step"]


def test_val_every_0_still_resumes_and_stops_at_the_budget(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = TINY.with_overrides(epochs=3, val_every=0)
    # The state is saved at every epoch's end, validated or not: an interruption loses nothing.
    _train_interrupted_after_epoch_1(data, tmp_path / "cut", config, monkeypatch)
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    saved = torch.load(tmp_path / "cut" / state.STATE, weights_only=True)
    assert saved["step"] == 4 and saved["best"] == {} and saved["history"] == []
    # It may resume with another val_every (it changes when the run is measured, not the run).
    resumed = train([data], tmp_path / "cut", config.with_overrides(val_every=1), device="cpu",
                    resume=True, progress=False)
    full = train([data], tmp_path / "full", config, device="cpu", progress=False)
    assert _validated_steps(tmp_path / "cut") == [8, 12] and _validated_steps(tmp_path / "full") == [12]
    assert resumed.best["val_perturbed_mse"] == pytest.approx(full.best["val_perturbed_mse"], abs=1e-7)
    # A time budget that runs out mid-epoch validates once, where it stopped.
    clock = iter(np.arange(0.0, 1e4, 7.0))
    monkeypatch.setattr(trainer, "time", SimpleNamespace(perf_counter=lambda: float(next(clock))))
    cut = train([data], tmp_path / "budget", config.with_overrides(max_minutes=1.0), device="cpu",
                progress=False)
    assert cut.stopped_by == "max_minutes" and len(cut.history) == 1
    assert 0 < cut.best["step"] < 12 and _validated_steps(tmp_path / "budget") == [cut.best["step"]]
    # A budget that runs out at an epoch's end, which was not validated: validated there once,
    # with that epoch's training loss in its row.
    clock = iter(np.arange(0.0, 1e4, 7.0))
    monkeypatch.setattr(trainer, "time", SimpleNamespace(perf_counter=lambda: float(next(clock))))
    edge = train([data], tmp_path / "edge", config.with_overrides(max_minutes=40 / 60), device="cpu",
                 progress=False)
    (row,) = edge.history
    assert edge.stopped_by == "max_minutes" and (row["epoch"], row["step"]) == (1, 4)
    assert np.isfinite(row["train_mse"]) and row["train_mse"] > 0
    with pytest.raises(ValueError, match="val_every"):
        TINY.with_overrides(val_every=-1)


@pytest.mark.parametrize("per_image", [100, 1])
def test_flip_pairs_targets_are_the_ssim_of_what_the_network_sees(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, per_image: int
) -> None:
    from deepssim.refssim import ssim

    # No perturbation: the network sees the inputs flipped, nothing else.
    # per_image 1: the cap keeps a random subset of the block pairs.
    config = TINY.with_overrides(epochs=1, flip_pairs=0.75, in_batch_pairs=per_image, in_batch_block=6, perturb__p_flip0=0.0, perturb__p_flip1=0.0,
                                 perturb__p_rotate=0.0, perturb__p_gamma=0.0)
    seen: list[torch.Tensor] = []
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    targets: list[torch.Tensor] = []
    relative: list[np.ndarray] = []
    real_call, real_loss, real_flip = steps.StepNetwork.__call__, torch.nn.functional.mse_loss, steps.flip_each
    real_capped = steps.capped

    def call(self, batch):  # type: ignore[no-untyped-def]
        seen.append(batch.clone())
        return real_call(self, batch)

    def loss(scores, target):  # type: ignore[no-untyped-def]
        targets.append(target.clone())
        return real_loss(scores, target)

    def flip(x, codes):  # type: ignore[no-untyped-def]
        relative.append(codes)
        return real_flip(x, codes)

    def found(first, second):  # type: ignore[no-untyped-def]
        pairs.append((first, second))
        return first, second

    monkeypatch.setattr(steps.StepNetwork, "__call__", call)
    monkeypatch.setattr(torch.nn.functional, "mse_loss", loss)
    monkeypatch.setattr(steps, "flip_each", flip)
    monkeypatch.setattr(steps, "capped", lambda *a: found(*real_capped(*a)))  # the block pairs kept
    train([data], tmp_path / "m", config, device="cpu", progress=False)
    assert len(seen) == len(pairs) == len(relative) == len(targets) // 2 > 0
    moved = 0
    for step, x in enumerate(seen):
        x = x.double().numpy()
        n = len(x) // 2
        sampled, extra = targets[2 * step], targets[2 * step + 1]
        want = [ssim(x[k], x[n + k]) for k in range(n)]  # both sides flipped alike
        np.testing.assert_allclose(sampled.numpy(), want, atol=1e-5)
        first, second = pairs[step]
        want = [ssim(x[p], x[q]) for p, q in zip(first, second)]
        np.testing.assert_allclose(extra.numpy(), want, atol=1e-5)
        codes = relative[step]
        assert (codes[:n] == codes[n:]).all()
        moved += int(np.count_nonzero(codes[first] ^ codes[second]))
    assert moved > 0  # pairs in other relative orientations were checked


def test_flip_pairs_get_their_own_block_cache_and_bad_settings_are_refused(data: Path, tmp_path: Path) -> None:
    from deepssim.training.blocks import BlockTargets

    config = TINY.with_overrides(epochs=1, in_batch_pairs=8, in_batch_block=6,
                                 perturb__p_flip0=0.0, perturb__p_flip1=0.0)
    train([data], tmp_path / "plain", config, device="cpu", progress=False)
    train([data], tmp_path / "flips", config.with_overrides(flip_pairs=0.5), device="cpu", progress=False)
    (plain,) = (tmp_path / "plain" / "cache").glob("blocks-*.npz")
    (flips,) = (tmp_path / "flips" / "cache").glob("blocks-*.npz")
    assert plain.name != flips.name
    assert BlockTargets.load(plain).flipped is None and BlockTargets.load(flips).flipped is not None
    for bad, message in [({"flip_pairs": 1.5}, "probability"),
                         ({"flip_pairs": 0.5, "perturb__p_flip0": 0.5}, "no flips in the perturbation"),
                         ({"flip_pairs": 0.5, "in_batch_pairs": 0, "registered_targets": True}, "plain SSIM")]:
        with pytest.raises(ValueError, match=message):
            config.with_overrides(**bad)


@pytest.mark.parametrize(("flags", "flips", "flip_pairs"), [
    ([], 0.0, 0.75),
    (["--scoring", "cosine"], 0.5, 0.0),
    (["--scoring", "best-flip"], 0.0, 0.75),
    (["--flip-pairs", "0.25"], 0.0, 0.25),
    (["--preset", "paper", "--scoring", "best-flip"], 0.0, 0.0),
    (["--preset", "paper", "--scoring", "cosine"], 0.33, 0.0),
])
def test_train_command_couples_flip_settings(
    monkeypatch: pytest.MonkeyPatch, flags: list[str], flips: float, flip_pairs: float
) -> None:
    config = _command_config(monkeypatch, flags)
    assert config.perturb.p_flip0 == config.perturb.p_flip1 == flips and config.flip_pairs == flip_pairs


def test_choosing_a_scoring_rule_sets_the_flips_it_trains_with() -> None:
    """A cosine learns to ignore flips from flipped training images; a rule that scores over
    flips undoes them and trains without: choosing the other kind of rule changes the flips of
    the perturbation (and drops the flipped pairs for a cosine) unless they are given too."""
    fast, paper = get_preset("fast"), get_preset("paper")
    cosine = fast.with_overrides(model__scoring="cosine")
    assert (cosine.perturb.p_flip0, cosine.perturb.p_flip1, cosine.flip_pairs) == (0.5, 0.5, 0.0)
    assert cosine.perturb.p_rotate == fast.perturb.p_rotate and cosine.copy_partners == 12
    given = fast.with_overrides(model__scoring="cosine", perturb__p_flip0=0.2, perturb__p_flip1=0.1)
    assert (given.perturb.p_flip0, given.perturb.p_flip1) == (0.2, 0.1)
    best = paper.with_overrides(model__scoring="best-flip")
    assert (best.perturb.p_flip0, best.perturb.p_flip1, best.perturb.p_rotate) == (0.0, 0.0, 0.33)
    assert best.with_overrides(model__scoring="cross-fit").perturb == best.perturb
    assert paper.with_overrides(model__scoring="cosine") == paper  # the preset's own rule: nothing follows
    with pytest.raises(ValueError, match="no flips in the perturbation"):
        fast.with_overrides(model__scoring="cosine", flip_pairs=0.5)


def test_train_command_holds_the_layout_together(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from deepssim.cli import main

    assert _command_config(monkeypatch, []).model.pooling == "local"
    assert _command_config(monkeypatch, ["--copy-partners", "4"]).copy_partners == 4
    assert _command_config(monkeypatch, ["--in-batch-pairs", "0"]).copy_partners == 0
    # The fast preset's dilated 8 x 8 layout holds together: a backbone that cannot dilate,
    # another pooling, or no dilation take the coarse layout (grid 4, 256-d) unless given;
    # a dilation asked for on a backbone that cannot is refused with the reason.
    def layout(flags: list[str]) -> tuple[int, int, bool]:
        model = _command_config(monkeypatch, flags).model
        return model.grid, model.embedding_dim, model.dilate_last

    assert layout([]) == (8, 1024, True)
    assert layout(["--backbone", "resnet50"]) == (8, 1024, True)
    for flags in (["--backbone", "resnet18"], ["--pooling", "avg"], ["--no-dilate-last"]):
        assert layout(flags) == (4, 256, False), flags
    assert layout(["--no-dilate-last", "--grid", "8", "--embedding-dim", "2048"]) == (8, 2048, False)
    assert layout(["--pooling", "avg", "--dilate-last"]) == (8, 1024, True)
    assert main(["train", "images", "--out", "m", "--backbone", "resnet18", "--dilate-last"]) == 2
    assert "cannot dilate" in capsys.readouterr().err
    # Deleted flags are refused, saying what replaces them.
    capsys.readouterr()
    for flag, use in (("--flip-search", "--scoring"), ("--no-cross-fit", "--scoring"), ("--stem", "one stem"),
                      ("--in-batch-mining=random", "within blocks"), ("--flip-symmetric", "--scoring")):
        with pytest.raises(SystemExit):
            main(["train", "images", "--out", "m", flag])
        err = capsys.readouterr().err
        assert f"{flag.split('=')[0]} was removed" in err and use in err, err


@pytest.mark.parametrize(("flags", "val_every"), [
    ([], 0), (["--preset", "paper"], 1), (["--val-every", "3"], 3), (["--preset", "plus", "--val-every", "0"], 0),
])
def test_train_command_val_every(monkeypatch: pytest.MonkeyPatch, flags: list[str], val_every: int) -> None:
    assert _command_config(monkeypatch, flags).val_every == val_every


@pytest.mark.parametrize(("flags", "scoring"), [
    ([], "cross-fit"), (["--scoring", "best-flip"], "best-flip"), (["--scoring", "cosine"], "cosine"),
    (["--preset", "paper"], "cosine"), (["--preset", "plus", "--scoring", "cross-fit"], "cross-fit"),
])
def test_train_command_scoring(monkeypatch: pytest.MonkeyPatch, flags: list[str], scoring: str) -> None:
    assert _command_config(monkeypatch, flags).model.scoring == scoring


def _command_config(monkeypatch: pytest.MonkeyPatch, flags: list[str]) -> TrainConfig:
    """The configuration ``deepssim train images --out m FLAGS`` would train with."""
    import deepssim.training as training
    from deepssim.cli import main

    got: list[TrainConfig] = []

    def fake_train(images, out, config, **kwargs):  # type: ignore[no-untyped-def]
        got.append(config)
        raise SystemExit(0)

    monkeypatch.setattr(training, "train", fake_train)
    with pytest.raises(SystemExit):
        main(["train", "images", "--out", "m", *flags])
    (config,) = got
    return config


def test_train_command_refuses_flip_pairs_with_flips(capsys: pytest.CaptureFixture[str]) -> None:
    from deepssim.cli import main

    assert main(["train", "images", "--out", "m", "--scoring", "cosine", "--flip-pairs", "0.5"]) == 2
    assert "needs plain SSIM targets and no flips in the perturbation" in capsys.readouterr().err


def test_pair_targets_are_computed_on_the_training_device(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    devices: list[str] = []
    real = data_module.build_pairs

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        devices.append(kwargs["device"])
        return real(*args, **kwargs)

    monkeypatch.setattr(data_module, "build_pairs", spy)
    train([data], tmp_path / "m", TINY.with_overrides(epochs=1), device="cpu", progress=False)
    assert devices == ["cpu", "cpu"]  # training and validation pairs (on CUDA: "cuda")


def test_init_starts_from_a_trained_model_and_refuses_another_network(data: Path, tmp_path: Path) -> None:
    first = train([data], tmp_path / "a", TINY.with_overrides(epochs=1), device="cpu", progress=False)
    start = state.initial_state(TINY.with_overrides(init=str(first.model_dir), model__scoring="best-flip"))
    trained = load_model(first.model_dir, device="cpu").network.state_dict()
    assert start.keys() == trained.keys()
    assert all(torch.equal(start[k], trained[k]) for k in start)
    # A fine-tuning run records where it started and starts there: with a learning rate of 0
    # its weights stay those of the first model (BatchNorm statistics move on).
    frozen = TINY.with_overrides(epochs=1, init=first.model_dir, lr=0.0, model__dropout=0.3)  # a Path
    assert frozen.init == str(first.model_dir)
    tuned = train([data], tmp_path / "b", frozen, device="cpu", progress=False)
    recorded = json.loads((tuned.model_dir / "config.json").read_text())["training"]
    assert recorded["init"] == str(first.model_dir)
    after = dict(load_model(tuned.model_dir, device="cpu").network.named_parameters())
    before = dict(load_model(first.model_dir, device="cpu").network.named_parameters())
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in after)
    wider = TINY.with_overrides(epochs=1, init=str(first.model_dir), model__width=12)
    with pytest.raises(ValueError, match="width 8 vs 12"):
        train([data], tmp_path / "c", wider, device="cpu", progress=False)
    with pytest.raises(ValueError, match="not a model folder|config.json"):
        train([data], tmp_path / "d", TINY.with_overrides(init=str(data)), device="cpu", progress=False)


def test_a_configuration_json_cannot_record_is_refused_when_made() -> None:
    with pytest.raises(ValueError, match="cannot be recorded as JSON.*float32"):
        TINY.with_overrides(epochs=1, lr=np.float32(0.001))  # a NumPy scalar, as from a grid search


def test_validation_of_a_cross_fitted_network_is_its_cross_fitted_score(cross_model_dir: Path) -> None:
    from dataclasses import replace

    from scipy import ndimage

    from deepssim.training.pairs import PairSet

    model = load_model(cross_model_dir, device="cpu")
    rng = np.random.default_rng(9)
    images = np.stack([ndimage.gaussian_filter(rng.random((32, 32)), 2.0) for _ in range(8)]).astype(np.float32)
    a, b = np.arange(8), (np.arange(8) + 3) % 8
    got = validation.embed_pairs(model.network, model.preprocess, images, a, b, None, None,
                                 model.device).detach().numpy()
    want = score_pairs(model, [(images[i], images[j]) for i, j in zip(a, b)])
    np.testing.assert_allclose(got, want, atol=1e-5)
    # The best of the four joint means (not cross-fitted) is higher.
    best = best_flip_scores(model.embed_real(list(images[a])), model.embed_synthetic(list(images[b])))
    assert np.all(best >= got - 1e-6) and np.max(best - got) > 1e-3
    pairs = PairSet(images=images, a=a, b=b, target=want.astype(np.float32), family=["random"] * 8)
    assert evaluate(model.network, model.preprocess, pairs, None, model.device)["mae"] == pytest.approx(0.0, abs=1e-5)
    # Each rule validates by its own score.
    model.network.config = replace(model.network.config, scoring="best-flip")
    model.scoring = "best-flip"
    flips = validation.embed_pairs(model.network, model.preprocess, images, a, b, None, None,
                                   model.device).detach().numpy()
    np.testing.assert_allclose(flips, score_pairs(model, [(images[i], images[j]) for i, j in zip(a, b)]), atol=1e-5)


def test_copy_partners_train_with_their_own_cache_and_need_block_pairs(
    data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deepssim.training.blocks import CopyPartners

    config = TINY.with_overrides(in_batch_pairs=8, in_batch_block=6, epochs=1, copy_partners=3,
                                 flip_pairs=0.75, model__scoring="best-flip")
    used: list[int] = []
    real = CopyPartners.pairs_in_batch

    def counted(self: CopyPartners, index: np.ndarray, codes: np.ndarray | None):  # type: ignore[no-untyped-def]
        out = real(self, index, codes)
        used.append(len(out[0]))
        return out

    monkeypatch.setattr(CopyPartners, "pairs_in_batch", counted)
    with caplog.at_level("INFO", logger="deepssim.training"):
        result = train([data], tmp_path / "p", config, device="cpu", progress=False)
    assert np.isfinite(result.best["train_mse"]) and "copy partners:" in caplog.text
    assert len(used) == result.best["step"] and sum(used) > 0  # asked every step, pairs found
    # A second run with the first one's cache reuses the partners.
    shutil.copytree(tmp_path / "p" / "cache", tmp_path / "p2" / "cache")
    monkeypatch.setattr(CopyPartners, "build", lambda *a, **k: pytest.fail("partners rebuilt"))
    train([data], tmp_path / "p2", config, device="cpu", progress=False)
    (cached,) = (tmp_path / "p" / "cache").glob("partners-*.npz")
    partners = CopyPartners.load(cached)
    assert partners.partner.shape[1] == 3 and partners.target.shape[1] == 4  # every relative flip
    assert len(partners.copy) > 0 and (partners.partner < partners.n_inputs).all()
    assert json.loads((tmp_path / "p" / "config.json").read_text())["training"]["copy_partners"] == 3
    for bad in ({"in_batch_pairs": 0, "copy_partners": 3}, {"copy_partners": -1}):
        with pytest.raises(ValueError, match="copy_partners"):
            config.with_overrides(**bad)


def test_a_grid_finer_than_the_last_map_is_said(data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """32 px through the small backbone leaves a 1 x 1 map: a 2 x 2 local layout repeats it."""
    config = TINY.with_overrides(epochs=1, model__pooling="local", model__grid=2)
    with caplog.at_level("WARNING", logger="deepssim.training"):
        train([data], tmp_path / "m", config, device="cpu", progress=False)
    assert "grid 2 is finer than the last stage's 1 x 1 map at 32 px" in caplog.text
    assert "--grid 1 or --dilate-last" in caplog.text
