"""Model folders: ``model.safetensors`` + ``config.json``; loading never unpickles code.

``config.json`` holds everything needed to rebuild and trust the model: the network
(``ModelConfig``), the preprocessing contract, the training preset and hyper-parameters, a
fingerprint of the training data, validation metrics, library versions, default decision
thresholds and the SHA-256 of the weights file.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from ..classes import REFERENCE_THRESHOLDS, Thresholds
from ..storage import atomic_write_bytes, sha256_file
from ..versions import library_versions
from .network import Embedder, ModelConfig
from .preprocess import Preprocess
from .torchfile import mismatch

FORMAT = "deepssim-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")


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
    """The parsed ``config.json`` of a model folder, checked for format and weights, and
    every setting it holds checked (``check_config``)."""
    return _read(Path(folder))[0]


def check_config(config: object, path: Path) -> tuple[ModelConfig, Preprocess]:
    """The network and preprocessing settings of the parsed ``config.json`` at ``path``, once
    every field a model is rebuilt and used from is of its type and sensible: the format, the
    ``model`` and ``preprocess`` sections (each field), the thresholds and the weights'
    checksum.

    Raises:
        ModelFolderError: one line naming ``path`` and the field, such as
            ``config.json: model.width: expected an integer, got 'wide'``.
    """
    if not isinstance(config, dict):
        raise ModelFolderError(f"{path}: expected a JSON object {{...}}, got {type(config).__name__}")
    if config.get("format") != FORMAT:
        raise ModelFolderError(f"{path}: not a deepssim model config (format is not {FORMAT!r})")
    version = config.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ModelFolderError(f"{path}: format_version: expected an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFolderError(
            f"{path.parent}: model format {version} is newer than this deepssim reads "
            f"({FORMAT_VERSION}); upgrade deepssim"
        )
    for section in ("model", "preprocess"):
        if section not in config:
            raise ModelFolderError(f"{path}: {section}: missing (every model config has it)")
    checksum = config.get("weights_sha256")
    if checksum is not None and not (isinstance(checksum, str) and _SHA256.fullmatch(checksum)):
        raise ModelFolderError(f"{path}: weights_sha256: expected 64 hexadecimal digits, got {checksum!r}")
    try:
        if "thresholds" in config:
            Thresholds.from_value(config["thresholds"], source="model")
    except ValueError as exc:
        raise ModelFolderError(f"{path}: thresholds: {exc}") from None
    try:
        # Weights come from the file, so no pretrained download may happen on rebuild.
        model = config["model"]
        model_config = ModelConfig.from_dict({**model, "pretrained": None} if isinstance(model, dict) else model)
        preprocess = Preprocess.from_dict(config["preprocess"])
    except ValueError as exc:
        raise ModelFolderError(f"{path}: {exc}") from None
    return model_config, preprocess


def _read(folder: Path) -> tuple[dict[str, Any], ModelConfig, Preprocess]:
    if not folder.is_dir():
        raise ModelFolderError(f"{folder}: not a folder (a deepssim model is a folder with "
                               f"{WEIGHTS} and {CONFIG})")
    for name in (CONFIG, WEIGHTS):
        if not (folder / name).is_file():
            raise ModelFolderError(f"{folder}: no {name}; not a deepssim model folder")
    path = folder / CONFIG
    try:
        config = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFolderError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ModelFolderError(f"{path}: not valid JSON (nested too deeply)") from None
    return (config, *check_config(config, path))


def load_network(folder: str | Path) -> tuple[Embedder, Preprocess, dict[str, Any]]:
    """Rebuild the embedder of a model folder (eval mode, CPU) with its preprocessing."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config, model_config, preprocess = _read(folder)
    weights = folder / WEIGHTS
    expected = config.get("weights_sha256")
    if expected and sha256_file(weights) != expected:
        raise ModelFolderError(f"{weights}: checksum does not match config.json (corrupt or replaced)")
    try:
        _check_shapes(weights, model_config)
        state = load_file(str(weights))
    except SafetensorError as exc:
        raise ModelFolderError(f"{weights}: unreadable safetensors file ({exc})") from None
    network = Embedder(model_config, log_init=False)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # missing, unexpected or differently shaped tensors
        raise ModelFolderError(f"{weights}: weights do not fit the config ({mismatch(exc)})") from None
    network.eval()
    return network, preprocess, config


def _check_shapes(weights: Path, config: ModelConfig) -> None:
    """Refuse weights whose tensors are not those of ``config``'s network, comparing shapes
    only (the network built on torch's meta device, the file's header read): an edited config
    cannot make loading allocate more than its weights file holds."""
    import torch
    from safetensors import safe_open

    try:
        with torch.device("meta"):
            wanted = {k: tuple(v.shape) for k, v in Embedder(config, log_init=False).state_dict().items()}
    except RuntimeError as exc:  # sizes torch cannot even describe
        raise ModelFolderError(f"{weights.parent / CONFIG}: model: no network of these settings can be "
                               f"built ({mismatch(exc)})") from None
    with safe_open(str(weights), framework="pt") as fh:
        found = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    if wanted != found:
        missing = sorted(set(wanted) - set(found))
        unexpected = sorted(set(found) - set(wanted))
        shaped = sorted(k for k in set(wanted) & set(found) if wanted[k] != found[k])
        what = (f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}" if unexpected else
                f"{shaped[0]} is {list(found[shaped[0]])} in the file, {list(wanted[shaped[0]])} in the config")
        raise ModelFolderError(f"{weights}: weights do not fit the config ({what})")
