"""The epoch loop shared by the autoencoder and the diffusion trainers.

It owns what both need: the resumable state (after every epoch), the progress bar with the
running loss and ETA, the wall-clock budget, ``history.csv`` and the per-epoch random streams
(a resumed run draws exactly what an uninterrupted one would have drawn).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..storage import write_csv
from .store import load_state, save_state

log = logging.getLogger(__name__)


@dataclass
class LoopResult:
    epochs: int
    steps: int
    seconds: float
    stopped_by: str
    history: list[dict[str, float]] = field(default_factory=list)


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    if not history:
        return
    write_csv(path, list(dict.fromkeys(k for row in history for k in row)), history)  # type: ignore[arg-type]


def run_epochs(
    out: Path,
    *,
    epochs: int,
    steps_per_epoch: int,
    seed: int,
    modules: dict[str, Any],
    expect: dict[str, Any],
    step: Callable[[int, int, torch.Generator], dict[str, float]],
    end_epoch: Callable[[int, dict[str, float]], dict[str, float] | None],
    resume: bool = False,
    max_minutes: float | None = None,
    max_steps: int | None = None,
    desc: str = "train",
    progress: bool = True,
) -> LoopResult:
    """Run ``step(epoch, batch, generator)`` for every batch of every epoch.

    ``modules``: networks and optimizers whose ``state_dict`` is saved after each epoch (and
    restored with ``resume``). ``end_epoch(epoch, mean_losses)`` writes weights and grids and may
    return more columns for ``history.csv``. ``expect`` (settings and data fingerprint) must
    match for a resume. Stops after ``epochs``, or at the end of the step where ``max_steps``
    or the ``max_minutes`` budget is reached.
    """
    start_epoch, done_steps, elapsed = 0, 0, 0.0
    history: list[dict[str, float]] = []
    if resume:
        state = load_state(out, expect)
        for name, module in modules.items():
            module.load_state_dict(state["modules"][name])
        start_epoch, done_steps, elapsed = state["epoch"], state["step"], state["elapsed"]
        history = state["history"]
        log.info("resuming %s at epoch %d (step %d)", out, start_epoch, done_steps)
    budget = math.inf if max_minutes is None else 60.0 * max_minutes
    step_cap = math.inf if max_steps is None else max_steps
    t0 = time.perf_counter() - elapsed
    stopped_by = "epochs"
    total = epochs * steps_per_epoch
    if max_steps is not None:
        total = min(total, max_steps)
    bar = tqdm(total=total, initial=min(done_steps, total), desc=desc, unit="step",
               disable=not progress, file=sys.stderr, dynamic_ncols=True)
    try:
        epoch = start_epoch
        while epoch < epochs and stopped_by == "epochs":
            torch.manual_seed(int(seed) * 1_000_003 + epoch)  # draws inside the networks
            generator = torch.Generator().manual_seed(int(seed) * 1_000_033 + epoch)
            sums: dict[str, float] = {}
            n = 0
            for batch in range(steps_per_epoch):
                losses = step(epoch, batch, generator)
                for key, value in losses.items():
                    sums[key] = sums.get(key, 0.0) + float(value)
                n += 1
                done_steps += 1
                bar.update(1)
                bar.set_postfix({k: f"{v / n:.4f}" for k, v in list(sums.items())[:3]}, refresh=False)
                if done_steps >= step_cap:
                    stopped_by = "steps"
                elif time.perf_counter() - t0 >= budget:
                    stopped_by = "time"
                if stopped_by != "epochs":
                    break
            means = {k: v / max(n, 1) for k, v in sums.items()}
            epoch += 1
            extra = end_epoch(epoch, means) or {}
            history.append({"epoch": epoch, "step": done_steps,
                            "seconds": round(time.perf_counter() - t0, 2), **means, **extra})
            write_history(out / "history.csv", history)
            save_state(out, {
                "expect": expect, "epoch": epoch, "step": done_steps,
                "elapsed": time.perf_counter() - t0, "history": history,
                "modules": {name: module.state_dict() for name, module in modules.items()},
            })
    finally:
        bar.close()
    if stopped_by != "epochs":
        log.info("%s: stopped by the %s budget after epoch %d (step %d)", desc, stopped_by, epoch, done_steps)
    return LoopResult(epochs=epoch, steps=done_steps, seconds=time.perf_counter() - t0,
                      stopped_by=stopped_by, history=history)
