"""Model folders: ``model.safetensors`` + ``config.json``; loading never unpickles code.

``config.json`` holds everything needed to rebuild and trust the model: the network
(``ModelConfig``), the preprocessing contract, the training preset and hyper-parameters, a
fingerprint of the training data, validation metrics, library versions, default decision
thresholds and the SHA-256 of the weights file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


from ..classes import REFERENCE_THRESHOLDS
from ..storage import atomic_write_bytes, sha256_file
from ..versions import library_versions
from .network import Embedder, ModelConfig
from .preprocess import Preprocess

FORMAT = "deepssim-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class ModelFolderError(ValueError):
    """A path that is not a usable deepssim model folder (the message says why)."""


def save_model(
    folder: str | Path,
    network: Embedder,
    preprocess: Preprocess,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``network`` and its config to ``folder`` (atomically, file by file)."""
    from safetensors.torch import save

    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    blob = save(state)
    atomic_write_bytes(folder / WEIGHTS, blob)
    config: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": network.config.to_dict(),
        "preprocess": preprocess.to_dict(),
        "thresholds": list(REFERENCE_THRESHOLDS.pair),
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        "versions": library_versions(),
    }
    config.update(extra or {})
    atomic_write_bytes(folder / CONFIG, json.dumps(config, indent=2).encode())
    return folder


def read_config(folder: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a model folder, checked for format and weights."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"{folder}: not a folder (a deepssim model is a folder with "
                               f"{WEIGHTS} and {CONFIG})")
    for name in (CONFIG, WEIGHTS):
        if not (folder / name).is_file():
            raise ModelFolderError(f"{folder}: no {name}; not a deepssim model folder")
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFolderError(f"{folder / CONFIG}: not valid JSON ({exc})") from None
    if config.get("format") != FORMAT:
        raise ModelFolderError(f"{folder / CONFIG}: not a deepssim model config")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise ModelFolderError(
            f"{folder}: model format {config['format_version']} is newer than this deepssim "
            f"reads ({FORMAT_VERSION}); upgrade deepssim"
        )
    return config


def load_network(folder: str | Path) -> tuple[Embedder, Preprocess, dict[str, Any]]:
    """Rebuild the embedder of a model folder (eval mode, CPU) with its preprocessing."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config = read_config(folder)
    weights = folder / WEIGHTS
    expected = config.get("weights_sha256")
    if expected and sha256_file(weights) != expected:
        raise ModelFolderError(f"{weights}: checksum does not match config.json (corrupt or replaced)")
    # Weights come from the file, so no pretrained download may happen on rebuild.
    try:
        model_config = ModelConfig.from_dict({**config["model"], "pretrained": None})
        preprocess = Preprocess.from_dict(config["preprocess"])
    except ValueError as exc:
        raise ModelFolderError(f"{folder / CONFIG}: {exc}") from None
    network = Embedder(model_config, log_init=False)
    try:
        state = load_file(str(weights))
    except SafetensorError as exc:
        raise ModelFolderError(f"{weights}: unreadable safetensors file ({exc})") from None
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # missing, unexpected or differently shaped tensors
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise ModelFolderError(f"{weights}: weights do not fit the config ({first})") from None
    network.eval()
    return network, preprocess, config
