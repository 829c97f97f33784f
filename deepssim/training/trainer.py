"""Self-supervised DeepSSIM training: pairs with SSIM targets, perturbed sides, MSE on cosine.

The run writes into its output folder: the best model (``model.safetensors`` +
``config.json``), ``metrics.csv`` (one row per validation: every ``val_every`` epochs and when
training stops), TensorBoard events when the ``tensorboard`` package is installed, the cached
pair sets (``cache/``), and ``train_state.pt`` (weights, optimizer, schedule and random
states, saved after every epoch) for ``--resume``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..model.checkpoint import save_model
from ..model.network import DILATABLE, Embedder, check_pretrained
from ..readers import SliceSpec
from ..refssim import resolve_device
from ..transforms.perturb import Perturb
from .config import TrainConfig
from .data import prepare_data
from .pairs import PairSet
from .state import STATE, check_data, initial_state, load_state, restore, save_state
from .steps import StepNetwork, cpu_has_bf16, lr_factor, param_groups, step_loss
from .validation import MetricsLog, validate

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run produced."""

    model_dir: Path
    best: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_by: str = "epochs"
    val_pairs: PairSet | None = None


def train(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    config: TrainConfig,
    *,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    slices: SliceSpec = SliceSpec(),
    skip_unreadable: bool = False,
) -> TrainResult:
    """Train a DeepSSIM embedder on the images under ``inputs`` (volumes sliced by
    ``slices``; unreadable files left out with ``skip_unreadable``, else refused); the best
    model (by validation MSE on perturbed pairs) is written to ``out_dir``."""
    for caveat in config.caveats():
        log.warning("%s", caveat)
    # Checked before the minutes of image reading and pair building.
    initial = initial_state(config) if config.init is not None and not resume else None
    if initial is None:
        check_pretrained(config.model)
    out = Path(out_dir)
    state_path = out / STATE
    state = load_state(state_path, config) if resume else None
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    torch.manual_seed(config.seed)
    data = prepare_data(inputs, config, out / "cache", np.random.default_rng(config.seed), str(dev), progress,
                        slices=slices, skip_unreadable=skip_unreadable)
    train_pairs, blocks = data.train_pairs, data.blocks

    network = _network(config, initial, dev)
    optimizer = torch.optim.AdamW(param_groups(network, config), lr=config.lr,
                                  weight_decay=config.weight_decay)
    for group in optimizer.param_groups:
        group["base_lr"] = group["lr"]
    perturb = Perturb(config.perturb)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    steps_per_epoch = max(1, len(train_pairs) // config.batch_size)
    if blocks is not None:  # block batches keep every pair
        steps_per_epoch = -(-len(train_pairs) // config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    epoch, step, elapsed_before = 0, 0, 0.0
    best: dict[str, float] = {}
    history: list[dict[str, float]] = []
    if state is not None:
        check_data(state_path, state, data.fingerprint)
        restore(state_path, state, network, optimizer, generator)
        epoch, step, elapsed_before = state["epoch"], state["step"], state["elapsed"]
        best, history = state["best"], state["history"]
        log.info("resuming %s at epoch %d, step %d", out, epoch, step)

    logs = MetricsLog(out, resume)
    use_amp = dev.type == "cuda" or config.cpu_bf16
    if dev.type == "cpu" and config.cpu_bf16 and not cpu_has_bf16():
        log.warning("cpu_bf16 is on but this CPU has no native bfloat16: training will be slow")
    # Compiled before the clock starts, like the pairs are built: the time budget and the
    # learning-rate schedule count training steps only.
    budget = None if config.max_minutes is None else 60.0 * config.max_minutes
    steps_left = epoch < config.epochs and (budget is None or elapsed_before < budget)
    step_network = StepNetwork(network, config.preprocess, full=2 * config.batch_size, amp=use_amp,
                               device=dev, compile=config.compile and steps_left
                               and len(train_pairs) >= config.batch_size)
    t0 = time.perf_counter() - elapsed_before
    stopped_by = "epochs"
    bar = _progress_bar(budget, config, total_steps, step, elapsed_before, progress)
    network.train()
    last_loss = history[-1]["train_mse"] if history else float("nan")  # of the last epoch with steps
    while epoch < config.epochs:
        # Out of time at an epoch's end: no permutation drawn, so that the saved state is the
        # one an uninterrupted run would have there.
        out_of_time = budget is not None and time.perf_counter() - t0 >= budget
        if out_of_time:
            stopped_by = "max_minutes"
            batches = []
        else:
            order = torch.randperm(len(train_pairs), generator=generator).numpy()
            if blocks is None:
                batches = [order[k * config.batch_size : (k + 1) * config.batch_size] for k in range(steps_per_epoch)]
            else:
                batches = blocks.batches(train_pairs.a, train_pairs.b, order, config.batch_size, generator)
        running, done = 0.0, 0
        for batch in batches:
            elapsed = time.perf_counter() - t0
            if budget is not None and elapsed >= budget:
                stopped_by = "max_minutes"
                break
            frac = max(step / total_steps, elapsed / budget if budget else 0.0)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * lr_factor(frac, config.warmup_fraction)
            loss = step_loss(step_network, config, train_pairs, batch, blocks, data.partners, perturb,
                             generator, dev)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), config.grad_clip)
            optimizer.step()
            step += 1
            running += loss.item()
            done += 1
            bar.update(1 if budget is None else min(bar.total, int(elapsed)) - bar.n)  # the step start's time: one clock read a step
            bar.set_postfix(step=step, loss=f"{running / done:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.1e}")
        else:
            if not out_of_time:
                epoch += 1
        if done:
            last_loss = running / done
        elif history and history[-1]["step"] == step:
            break  # out of time before the epoch's first step, validated and saved already
        stopping = stopped_by == "max_minutes" or epoch >= config.epochs
        if stopping or (config.val_every > 0 and epoch % config.val_every == 0):
            row = validate(network, config, data.val_pairs, perturb, dev, epoch, step,
                           time.perf_counter() - t0, last_loss, logs)
            history.append(row)
            if not best or row["val_perturbed_mse"] < best["val_perturbed_mse"]:
                best = row
                save_model(out, network, config.preprocess, _model_extra(config, data.fingerprint,
                                                                         len(data.images), best))
        else:
            log.info("epoch %d step %d: train MSE %.4f", epoch, step, last_loss)
        save_state(state_path, {
            "config": config.to_dict(), "data": data.fingerprint, "network": network.state_dict(),
            "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "epoch": epoch, "step": step, "elapsed": time.perf_counter() - t0,
            "best": best, "history": history,
        })
        if stopped_by == "max_minutes":
            break
    bar.close()
    log.info("stopped by %s after %d steps; best validation MSE (perturbed) %.4f at step %d",
             stopped_by, step, best["val_perturbed_mse"], int(best["step"]))
    return TrainResult(model_dir=out, best=best, history=history, stopped_by=stopped_by,
                       val_pairs=data.val_pairs)


def _progress_bar(budget: float | None, config: TrainConfig, total_steps: int, step: int, elapsed: float,
                  progress: bool) -> tqdm:
    """The run's bar on stderr: steps out of the epochs' steps, or, with a time budget (whose
    step count is unknown), seconds out of the budget, so that its ETA is the time left."""
    if budget is None:
        return tqdm(total=total_steps, initial=step, unit="step", desc="train", disable=not progress,
                    file=sys.stderr, dynamic_ncols=True)
    seconds = max(1, int(budget))
    return tqdm(total=seconds, initial=min(seconds, int(elapsed)), unit="s",
                desc=f"train (budget {config.max_minutes:g} min)", disable=not progress, file=sys.stderr,
                dynamic_ncols=True, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} s "
                                               "[ETA {remaining}{postfix}]")


def _network(config: TrainConfig, initial: dict[str, torch.Tensor] | None, dev: torch.device) -> Embedder:
    """The network to train on ``dev``: ``config.model``'s, with the weights ``initial`` when
    fine-tuning (then no pretrained weights are loaded underneath)."""
    network = Embedder(config.model if initial is None else replace(config.model, pretrained=None),
                       log_init=initial is None)
    if initial is not None:
        network.load_state_dict(initial)
        log.info("network initialised from %s", config.init)
    if config.model.pooling == "local":
        side = network.map_side(config.preprocess.size)
        if config.model.grid > side:
            log.warning("grid %d is finer than the last stage's %d x %d map at %d px: its cells "
                        "repeat, which costs time and embedding size for the same scores (use "
                        "--grid %d%s)", config.model.grid, side, side, config.preprocess.size,
                        side, "" if config.model.dilate_last or config.model.backbone not in DILATABLE
                        else " or --dilate-last")
    # channels_last: faster convolutions on the CPU (oneDNN) and on recent GPUs.
    return network.to(dev, memory_format=torch.channels_last)


def _model_extra(config: TrainConfig, data_print: str, n_images: int, best: dict[str, float]) -> dict[str, Any]:
    return {
        "preset": config.preset,
        "training": config.to_dict(),
        "training_data": {"fingerprint": data_print, "n_images": n_images},
        "validation": best,
    }
