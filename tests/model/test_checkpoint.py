"""Model folders: round trip, integrity checks, no unpickling, TorchScript only when trusted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from deepssim.model import Embedder, ModelFolderError, load_model, load_network
from deepssim.model import checkpoint
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


def _edited(source: Path, folder: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    """A copy of the model folder ``source`` whose config.json is ``edit(config)`` (or the
    config edited in place when it returns None), or the given bytes."""
    shutil.copytree(source, folder)
    if isinstance(edit, bytes):
        (folder / CONFIG).write_bytes(edit)
        return folder
    config = json.loads((folder / CONFIG).read_text())
    edited = edit(config)
    (folder / CONFIG).write_text(json.dumps(config if edited is None else edited))
    return folder


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c["model"].update(width="wide"), "model.width: expected an integer, got 'wide'"),
    (lambda c: c["model"].update(dropout="0.1"), "model.dropout: expected a finite number, got '0.1'"),
    (lambda c: c["model"].update(dilate_last=1), "model.dilate_last: expected true or false, got 1"),
    (lambda c: c["model"].update(pooling=3), "model.pooling: expected a string, got 3"),
    (lambda c: c["model"].update(depth=3), "model: unknown model settings depth"),
    (lambda c: c["model"].update(hidden_dim=0), "model: hidden_dim must be at least 1, got 0"),
    (lambda c: c["preprocess"].update(size="64"), "preprocess.size: expected an integer, got '64'"),
    (lambda c: c["preprocess"].update(size=8), "preprocess: Preprocess.size must be >= 16, got 8"),
    (lambda c: c["preprocess"].update(gamma=2), "preprocess: unknown settings gamma"),
    (lambda c: {k: v for k, v in c.items() if k != "preprocess"}, "preprocess: missing"),
    (lambda c: {k: v for k, v in c.items() if k != "model"}, "model: missing"),
    (lambda c: [c], "expected a JSON object {...}, got list"),
    (lambda c: c.update(model=[1, 2]), "model: expected an object {...}, got [1, 2]"),
    (lambda c: c.update(format_version="1"), "format_version: expected an integer, got '1'"),
    (lambda c: c.update(weights_sha256=7), "weights_sha256: expected 64 hexadecimal digits, got 7"),
    (lambda c: c.update(thresholds=[0.9, 0.1]), "thresholds: thresholds must be finite with low <= high, got 0.9, 0.1"),
    (lambda c: c.update(thresholds=[float("nan"), 0.8]), "thresholds: thresholds must be finite with low <= high, got nan, 0.8"),
    (lambda c: c.update(thresholds=[0.1, 0.5, 0.9]), "thresholds: expected [LOW, HIGH], two numbers, got [0.1, 0.5, 0.9]"),
    (lambda c: c.update(thresholds="0.6,0.85"), "thresholds: expected [LOW, HIGH], two numbers, got '0.6,0.85'"),
    (lambda c: c.update(thresholds=["0.6", "0.85"]), "thresholds: expected [LOW, HIGH], two numbers, got ['0.6', '0.85']"),
    (lambda c: c["model"].update(width=10**12), "model: no network of these settings can be built"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON (nested too deeply)"),
    (b"\xff\xfe{}", "not valid JSON"),
])
def test_an_edited_config_is_refused_naming_the_file_and_the_field(tiny_model_dir: Path, tmp_path: Path,
                                                                   edit, message: str) -> None:  # type: ignore[no-untyped-def]
    folder = _edited(tiny_model_dir, tmp_path / "model", edit)
    with pytest.raises(ModelFolderError) as refused:
        load_model(folder, device="cpu")
    assert str(refused.value).startswith(f"{folder / CONFIG}: ") and message in str(refused.value)
    assert "\n" not in str(refused.value)


def test_weights_are_matched_to_the_config_before_the_network_is_built(tiny_model_dir: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # A config edited to a network a hundred times larger is refused from the file's header,
    # before any of it is allocated.
    folder = _edited(tiny_model_dir, tmp_path / "large", lambda c: c["model"].update(width=800))
    built = []  # the devices networks are built on
    monkeypatch.setattr(checkpoint, "Embedder",
                        lambda *a, **k: built.append(torch.empty(0).device.type) or Embedder(*a, **k))
    with pytest.raises(ModelFolderError, match=r"model.safetensors: weights do not fit the config "
                                               r"\(head.0.bias is \[64\] in the file, \[6400\] in the config\)"):
        load_model(folder, device="cpu")
    assert built == ["meta"]  # its shapes only, no memory
    # A config.json with a byte-order mark is still JSON.
    bom = _edited(tiny_model_dir, tmp_path / "bom", b"\xef\xbb\xbf" + (tiny_model_dir / CONFIG).read_bytes())
    assert load_model(bom, device="cpu").checksum == load_model(tiny_model_dir, device="cpu").checksum
