"""PyTorch files read without running code: one line naming the file for anything else."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from deepssim.model import Embedder, ModelConfig
from deepssim.model.network import check_pretrained
from deepssim.model.torchfile import UnsafeFileError, load_torch_file



class _Code:
    """A pickle that runs code when loaded unsafely."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("true",))


def test_tensors_and_plain_values_load(tmp_path: Path) -> None:
    state = {"network": {"w": torch.arange(4.0)}, "epoch": 3, "history": [{"step": 8, "train_mse": 0.5}]}
    torch.save(state, tmp_path / "state.pt")
    loaded = load_torch_file(tmp_path / "state.pt", "resume state")
    assert loaded["epoch"] == 3 and loaded["history"] == state["history"]
    assert torch.equal(loaded["network"]["w"], torch.arange(4.0))


def test_anything_else_is_refused_in_one_line_naming_the_file(tmp_path: Path) -> None:
    whole = tmp_path / "whole.pt"
    torch.save({"w": torch.ones(100)}, whole)
    cases = {
        "truncated.pt": whole.read_bytes()[:300],
        "empty.pt": b"",
        "random.pt": os.urandom(256),
        "zip-start.pt": b"PK\x03\x04" + os.urandom(64),
        "pickle.pt": pickle.dumps(_Code()),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    torch.save({"w": _Code()}, tmp_path / "code.pt")
    for name in [*cases, "code.pt"]:
        with pytest.raises(UnsafeFileError) as refused:
            load_torch_file(tmp_path / name, "resume state")
        message = str(refused.value)
        assert message.startswith(f"{tmp_path / name}: ") and "\n" not in message
        assert "weights_only" not in message and "resume state" in message
    with pytest.raises(UnsafeFileError, match=r"code.pt: refused: this resume state asks to load the Python "
                                              r"object posix.system, which can run code"):
        load_torch_file(tmp_path / "code.pt", "resume state")
    with pytest.raises(FileNotFoundError, match="missing.pt: resume state not found"):
        load_torch_file(tmp_path / "missing.pt", "resume state")
    (tmp_path / "folder.pt").mkdir()
    with pytest.raises(UnsafeFileError, match="folder.pt: not a file"):
        load_torch_file(tmp_path / "folder.pt", "resume state")


def test_a_pretrained_file_is_checked_before_any_work(tmp_path: Path) -> None:
    import torchvision

    good = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), good)
    config = ModelConfig(backbone="resnet18", pretrained=str(good))
    check_pretrained(config)
    assert Embedder(config).stem[0].weight.shape == (64, 3, 7, 7)
    torch.save({"conv1.weight": torch.ones(2)}, tmp_path / "other.pth")
    torch.save([torch.ones(2)], tmp_path / "list.pth")
    torch.save({"w": _Code()}, tmp_path / "code.pth")
    for name, message in [("other.pth", r"these weights do not fit the resnet18 backbone \(Missing key"),
                          ("list.pth", r"not a weights file: expected a state dict \(names -> tensors\)"),
                          ("code.pth", "refused: this pretrained weights file asks to load the Python object")]:
        with pytest.raises(UnsafeFileError, match=f"{name}: {message}"):
            check_pretrained(ModelConfig(backbone="resnet18", pretrained=str(tmp_path / name)))
    check_pretrained(ModelConfig(backbone="small"))  # nothing to check
    with pytest.raises(ValueError, match="the 'small' backbone has no pretrained weights"):
        ModelConfig(backbone="small", pretrained=str(good))
