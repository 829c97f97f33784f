"""LDM files: images in and out, weights + config folders, resumable training state, grids.

A trained network is a folder with ``<name>.safetensors`` and ``config.json`` (loading never
unpickles code); ``train_state.pt`` (tensors and plain values only, loaded with
``weights_only=True``) lets ``--resume`` continue a run exactly where it stopped.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..model.checkpoint import ModelFolderError
from ..model.preprocess import Preprocess
from ..model.torchfile import load_torch_file
from ..readers import load_stack
from ..storage import atomic_write_bytes
from ..versions import library_versions

CONFIG = "config.json"
STATE = "train_state.pt"


def to_unit(image: np.ndarray) -> np.ndarray:
    """Per-image robust min-max to [0, 1] (0.5th and 99.5th percentiles), float32."""
    lo, hi = np.percentile(image, [0.5, 99.5])
    if hi <= lo:
        return np.zeros(image.shape, np.float32)
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def prepare(image: np.ndarray, size: int) -> np.ndarray:
    """What the LDM sees: scaled to [0, 1], stretched to ``size x size`` (bilinear), rescaled."""
    return to_unit(Preprocess(size=size).resize(to_unit(image)))


def load_folder(inputs: Sequence[str | Path], size: int, progress: bool = False) -> tuple[np.ndarray, list[str]]:
    """Every image under ``inputs`` as (N, size, size) float32 in [0, 1], and their ids.

    Raises:
        ReadError: naming every unreadable file, or when no image is found.
    """
    return load_stack(inputs, lambda image: prepare(image, size), progress)


def png_bytes(image: np.ndarray) -> bytes:
    """A [0, 1] image as 8-bit grayscale PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: Path, image: np.ndarray) -> None:
    atomic_write_bytes(path, png_bytes(image))


def write_grid(path: Path, images: np.ndarray, columns: int = 8) -> Path:
    """Tile (N, H, W) images in [0, 1] into one PNG (1-pixel white gutters)."""
    n, h, w = images.shape
    rows = -(-n // columns)
    grid = np.ones((rows * (h + 1) - 1, columns * (w + 1) - 1), np.float32)
    for k, image in enumerate(images):
        r, c = divmod(k, columns)
        grid[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = image
    write_png(path, grid)
    return path


def save_weights(folder: Path, networks: dict[str, nn.Module], config: dict[str, Any]) -> dict[str, str]:
    """Write ``<name>.safetensors`` per network, then ``config.json`` naming them with their
    SHA-256 (each file atomically; the config last, so it never names a missing file)."""
    from safetensors.torch import save

    weights: dict[str, dict[str, str]] = {}
    for name, network in networks.items():
        state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
        blob = save(state)
        atomic_write_bytes(folder / f"{name}.safetensors", blob)
        weights[name] = {"file": f"{name}.safetensors", "sha256": hashlib.sha256(blob).hexdigest()}
    full = {**config, "weights": weights, "versions": library_versions()}
    atomic_write_bytes(folder / CONFIG, (json.dumps(full, indent=2) + "\n").encode())
    return {name: w["sha256"] for name, w in weights.items()}


def read_config(folder: str | Path, kind: str) -> dict[str, Any]:
    """The ``config.json`` of an LDM folder of ``kind`` (``vae`` or ``ldm``); clear errors."""
    folder = Path(folder)
    path = folder / CONFIG
    if not folder.is_dir():
        raise ModelFolderError(f"{folder}: not a folder")
    if not path.is_file():
        raise ModelFolderError(f"{folder}: no {CONFIG} (not a deepssim {kind} folder)")
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"{path}: unreadable ({exc})") from None
    if config.get("kind") != kind:
        raise ModelFolderError(f"{folder}: holds a {config.get('kind', 'unknown')!r} model, not a {kind!r} one")
    return config


def load_weights(folder: str | Path, name: str, network: nn.Module, config: dict[str, Any]) -> nn.Module:
    """Load the weights ``name`` listed in ``config`` into ``network`` (checksum checked)."""
    from safetensors.torch import load

    entry = config["weights"][name]
    path = Path(folder) / entry["file"]
    if not path.is_file():
        raise ModelFolderError(f"{path}: weights file missing")
    blob = path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
        raise ModelFolderError(f"{path}: checksum mismatch (file changed or truncated)")
    network.load_state_dict(load(blob))
    return network.eval()


def save_state(folder: Path, state: dict[str, Any]) -> None:
    tmp = folder / f".{STATE}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, folder / STATE)


def load_state(folder: Path, expect: dict[str, Any]) -> dict[str, Any]:
    """The saved training state; it must have been made with the same ``expect`` settings."""
    path = folder / STATE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: nothing to resume (no earlier run in {folder})")
    state = load_torch_file(path, "resume state")
    if not isinstance(state, dict) or state.get("expect") != expect:
        raise ValueError(f"{path}: the earlier run used other settings or data; resume with the same command")
    return state
