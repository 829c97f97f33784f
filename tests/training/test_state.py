"""Resume states and recorded configurations read back: damaged or edited ones are refused in
one line naming the file and the field, before any image is read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from deepssim.model.network import Embedder, ModelConfig
from deepssim.model.preprocess import Preprocess
from deepssim.training import TrainConfig, get_preset, train
from deepssim.training.state import STATE, load_state, restore, save_state

TINY = TrainConfig(preset="test", model=ModelConfig(backbone="small", width=8, embedding_dim=16, hidden_dim=32),
                   preprocess=Preprocess(size=32), epochs=2, batch_size=16, n_train_pairs=64, n_val_pairs=24)


class _Code:
    """A pickle that runs a command when loaded unsafely."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("true",))


def _state() -> dict:
    network = Embedder(TINY.model)
    return {"config": TINY.to_dict(), "data": "f" * 64, "network": network.state_dict(),
            "optimizer": torch.optim.AdamW(network.parameters()).state_dict(),
            "generator": torch.Generator().manual_seed(1).get_state(), "torch_rng": torch.get_rng_state(),
            "epoch": 1, "step": 4, "elapsed": 2.5, "best": {}, "history": []}


def test_a_saved_state_loads_and_restores(tmp_path: Path) -> None:
    path = tmp_path / STATE
    saved = _state()
    save_state(path, saved)
    state = load_state(path, TINY)
    network = Embedder(TINY.model)
    generator = torch.Generator()
    restore(path, state, network, torch.optim.AdamW(network.parameters()), generator)
    assert torch.equal(generator.get_state(), saved["generator"]) and state["step"] == 4


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: [s], "not a resume state (it holds list, not an object)"),
    (lambda s: s.pop("epoch") and s, "not a resume state (no 'epoch')"),
    (lambda s: {**s, "epoch": "1"}, "epoch: expected an integer, got str"),
    (lambda s: {**s, "epoch": True}, "epoch: expected an integer, got bool"),
    (lambda s: {**s, "network": [1]}, "network: expected a state dict, got list"),
    (lambda s: {**s, "history": [{"step": 4}]}, "history: expected validation rows with step and train_mse"),
    (lambda s: {**s, "history": [{"step": 4, "train_mse": 0.1}], "best": {"step": 4}},
     "best: expected the best validation row"),
    (lambda s: {**s, "config": {**s["config"], "epochs": "two"}},
     "written by another version of deepssim (training.epochs: expected an integer, got 'two')"),
    (lambda s: {**s, "config": {**s["config"], "model": {**s["config"]["model"], "width": 8.5}}},
     "training.model.width: expected an integer, got 8.5"),
])
def test_an_edited_state_is_refused_naming_the_file_and_the_field(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / STATE
    save_state(path, edit(_state()))
    with pytest.raises(ValueError) as refused:
        load_state(path, TINY)
    assert str(refused.value).startswith(f"{path}: ") and message in str(refused.value)


def test_a_state_that_does_not_fit_the_network_is_refused(tmp_path: Path) -> None:
    path = tmp_path / STATE
    state = _state()
    state["network"]["head.4.weight"] = torch.zeros(3, 3)
    network = Embedder(TINY.model)
    with pytest.raises(ValueError, match=rf"{STATE}: damaged resume state \(size mismatch for head.4.weight"):
        restore(path, state, network, torch.optim.AdamW(network.parameters()), torch.Generator())
    state = _state()
    state["generator"] = torch.zeros(3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="damaged resume state"):
        restore(path, state, network, torch.optim.AdamW(network.parameters()), torch.Generator())


def test_a_hostile_state_is_refused_before_any_image_is_read(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    torch.save({"config": TINY.to_dict(), "network": {"w": _Code()}}, out / STATE)
    # The images do not exist: the state is refused first.
    with pytest.raises(ValueError, match=rf"{STATE}: refused: this resume state asks to load the Python object"):
        train([tmp_path / "no-images"], out, TINY, device="cpu", resume=True, progress=False)


def test_recorded_configurations_name_the_field_of_a_wrong_type() -> None:
    fast = get_preset("fast").to_dict()
    assert TrainConfig.from_dict(fast) == get_preset("fast")
    for change, message in [
        ({"lr": "fast"}, "training.lr: expected a finite number, got 'fast'"),
        ({"max_minutes": float("nan")}, "training.max_minutes: expected a finite number or null, got nan"),
        ({"families": "noise"}, "training.families: expected a list, got 'noise'"),
        ({"families": ["noise", 3]}, "training.families: expected a list of values, each a string, got ['noise', 3]"),
        ({"perturb": {**fast["perturb"], "gamma_range": [0.5]}}, "training.perturb.gamma_range: expected a list of 2 values"),
        ({"perturb": {**fast["perturb"], "p_flip0": 2.0}}, "training.perturb: PerturbConfig.p_flip0 must be in [0, 1], got 2.0"),
        ({"preprocess": None}, "training.preprocess: expected an object {...}, got None"),
        ({"epochs_total": 3}, "training: unknown settings epochs_total"),
    ]:
        with pytest.raises(ValueError) as refused:
            TrainConfig.from_dict({**fast, **change})
        assert str(refused.value).startswith(message), (str(refused.value), message)
