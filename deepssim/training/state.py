"""Where a run's weights start: the resume state (``train_state.pt``: weights, optimizer,
schedule and random states, saved after every epoch) and a trained model to fine-tune."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..model.checkpoint import ModelFolderError, load_network
from ..model.torchfile import load_torch_file, mismatch
from ..storage import atomic_write
from .config import TrainConfig

STATE = "train_state.pt"


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write a resume state atomically."""
    atomic_write(path, lambda fh: torch.save(state, fh))


FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "config": (dict, "an object"),
    "data": (str, "a string"),
    "network": (dict, "a state dict"),
    "optimizer": (dict, "a state dict"),
    "generator": (torch.Tensor, "a tensor"),
    "torch_rng": (torch.Tensor, "a tensor"),
    "epoch": (int, "an integer"),
    "step": (int, "an integer"),
    "elapsed": ((int, float), "a number"),
    "best": (dict, "an object"),
    "history": (list, "a list"),
}
"""What a resume state holds (``trainer.train`` writes it after every epoch)."""


def load_state(path: Path, config: TrainConfig) -> dict[str, Any]:
    """The resume state at ``path``, checked to be of a run of ``config`` (its data is checked
    once read: ``check_data``). The file is read without unpickling code
    (``load_torch_file``).

    Raises:
        FileNotFoundError: no state at ``path``.
        ValueError: the file is not a resume state (damaged, truncated, edited; named), or its
            run had other settings (named).
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: nothing to resume (no earlier run in {path.parent})")
    state = load_torch_file(path, "resume state")
    _check_fields(path, state)
    check_resume(path, state["config"], config)
    return state


def check_data(path: Path, state: dict[str, Any], data_print: str) -> None:
    """Refuse to resume the state read from ``path`` on data other than its run's."""
    if state["data"] != data_print:
        raise ValueError(f"{path}: the earlier run used other data; resume with the same command")


def _check_fields(path: Path, state: object) -> None:
    """Refuse a resume state that lacks a field or holds one of another type."""
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a resume state (it holds {type(state).__name__}, not an object)")
    for key, (kind, shown) in FIELDS.items():
        if key not in state:
            raise ValueError(f"{path}: not a resume state (no {key!r}); train again into a new folder")
        value = state[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"{path}: {key}: expected {shown}, got {type(value).__name__}")
    rows = state["history"]
    if not all(isinstance(row, dict) and isinstance(row.get("step"), int)
               and isinstance(row.get("train_mse"), (int, float)) for row in rows):
        raise ValueError(f"{path}: history: expected validation rows with step and train_mse")
    best = state["best"]
    if rows and not (isinstance(best.get("val_perturbed_mse"), (int, float)) and isinstance(best.get("step"), int)):
        raise ValueError(f"{path}: best: expected the best validation row (val_perturbed_mse, step)")


def restore(path: Path, state: dict[str, Any], network: torch.nn.Module, optimizer: torch.optim.Optimizer,
            generator: torch.Generator) -> None:
    """Put the network, optimizer and random states of the resume state ``state`` (read from
    ``path`` by ``load_state``) back in place.

    Raises:
        ValueError: the state does not fit this run's network or optimizer (a damaged or edited
            file), naming ``path``.
    """
    try:
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])  # dropout draws from the global generator
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise ValueError(f"{path}: damaged resume state ({mismatch(exc)}); train again into a new "
                         "folder") from None


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
