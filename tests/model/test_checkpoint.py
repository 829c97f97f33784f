"""Model folders: round trip, integrity checks, no unpickling, TorchScript only when trusted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from deepssim.model import ModelFolderError, load_model, load_network
from deepssim.model.checkpoint import CONFIG, WEIGHTS


def test_round_trip_gives_the_same_embeddings(tiny_model_dir: Path) -> None:
    net, pre, config = load_network(tiny_model_dir)
    assert config["preset"] == "test" and config["thresholds"] == [0.6, 0.85]
    assert config["model"]["backbone"] == "small" and config["preprocess"]["size"] == 32
    assert {"torch", "numpy", "deepssim"} <= set(config["versions"])
    rng = np.random.default_rng(1)
    images = [rng.random((32, 32)).astype(np.float32) for _ in range(4)]
    model = load_model(tiny_model_dir, device="cpu")
    with torch.no_grad():
        direct = net(pre.normalize(torch.from_numpy(np.stack(images)))).numpy()
    np.testing.assert_allclose(model.embed(images), direct, atol=1e-6)
    again = load_model(tiny_model_dir, device="cpu")
    np.testing.assert_array_equal(again.embed(images), model.embed(images))
    assert len(model.checksum) == 64


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_integrity_errors_name_the_problem(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelFolderError, match="not a folder"):
        load_model(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFolderError, match="no config.json"):
        load_model(tmp_path / "empty")
    corrupt = _copy(tiny_model_dir, tmp_path / "corrupt")
    data = bytearray((corrupt / WEIGHTS).read_bytes())
    data[-10] ^= 0xFF
    (corrupt / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(ModelFolderError, match="checksum does not match"):
        load_model(corrupt)
    bad_json = _copy(tiny_model_dir, tmp_path / "badjson")
    (bad_json / CONFIG).write_text("{not json")
    with pytest.raises(ModelFolderError, match="not valid JSON"):
        load_model(bad_json)
    newer = _copy(tiny_model_dir, tmp_path / "newer")
    config = json.loads((newer / CONFIG).read_text())
    config["format_version"] = 99
    (newer / CONFIG).write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match="newer than this deepssim"):
        load_model(newer)
    config["format_version"] = 1
    config["model"]["flip_search_v2"] = True  # a setting of a later deepssim
    (newer / CONFIG).write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match="unknown model settings flip_search_v2.*upgrade deepssim"):
        load_model(newer)
    other = _copy(tiny_model_dir, tmp_path / "other")
    config = json.loads((other / CONFIG).read_text())
    config["model"]["width"] = 16
    (other / CONFIG).write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match="do not fit the config"):
        load_model(other)


class _Tiny(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) + 1.0


def test_torchscript_needs_explicit_trust(tmp_path: Path) -> None:
    path = tmp_path / "best_model_jit.pt"
    torch.jit.script(_Tiny()).save(str(path))
    with pytest.raises(ModelFolderError, match="trust-torchscript"):
        load_model(path)
    model = load_model(path, device="cpu", trust_torchscript=True)
    assert model.preprocess.size == 224 and model.preprocess.intensity == "zscore"
    emb = model.embed([np.random.default_rng(0).random((50, 60))])
    assert emb.shape == (1, 3)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
