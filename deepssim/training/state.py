"""Where a run's weights start: the resume state (``train_state.pt``: weights, optimizer,
schedule and random states, saved after every epoch) and a trained model to fine-tune."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..model.checkpoint import ModelFolderError, load_network
from ..storage import atomic_write
from .config import TrainConfig

STATE = "train_state.pt"


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write a resume state atomically."""
    atomic_write(path, lambda fh: torch.save(state, fh))


def load_state(path: Path, config: TrainConfig, data_print: str) -> dict[str, Any]:
    """The resume state at ``path``, checked to be of a run of ``config`` on the data of
    fingerprint ``data_print``.

    Raises:
        FileNotFoundError: no state at ``path``.
        ValueError: the state's run had other settings (named) or other data.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: nothing to resume (no earlier run in {path.parent})")
    state = torch.load(path, map_location="cpu", weights_only=True)
    check_resume(path, state["config"], config)
    if state["data"] != data_print:
        raise ValueError(f"{path}: the earlier run used other data; resume with the same command")
    return state


def resume_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings a resumed run must share with the interrupted one: all but ``compile``,
    which changes speed and rounding only, and ``val_every``, which changes when the run is
    measured only (a run may resume with other values of these), with the defaults of
    settings added since filled in."""
    settings = TrainConfig.from_dict(config).to_dict()
    settings.pop("compile")
    settings.pop("val_every")
    return settings


def changed(before: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """Names of the settings that differ, nested ones as ``model.scoring``."""
    out = []
    for key in set(before) | set(now):
        a, b = before.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def check_resume(path: Path, saved: dict[str, Any], config: TrainConfig) -> None:
    """Refuse to resume the run saved at ``path`` with other settings, naming them."""
    try:
        before = resume_settings(saved)
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: written by another version of deepssim ({exc}); train again "
                         "into a new folder") from None
    now = resume_settings(config.to_dict())
    differ = sorted(changed(before, now))
    if differ:
        raise ValueError(f"{path}: the earlier run used other settings ({', '.join(differ)}); "
                         "resume with the same command (a preset's defaults may have changed since: "
                         "set those settings back with their flags)")


def initial_state(config: TrainConfig) -> dict[str, torch.Tensor]:
    """The weights of the model folder ``config.init``, checked to fit ``config.model``."""
    trained, _, _ = load_network(config.init)
    # The scoring rule, where the first weights came from, dropout and frozen stages do not
    # change the weights a network has.
    ignore = {"pretrained", "scoring", "dropout", "frozen_stages"}
    mine = {k: v for k, v in asdict(config.model).items() if k not in ignore}
    theirs = {k: v for k, v in asdict(trained.config).items() if k not in ignore}
    if mine != theirs:
        diff = ", ".join(f"{k} {theirs.get(k)!r} vs {mine[k]!r}" for k in mine if mine[k] != theirs.get(k))
        raise ModelFolderError(f"{config.init}: its network is not the one to be trained ({diff}); "
                               "fine-tune with the same model settings")
    return trained.state_dict()
