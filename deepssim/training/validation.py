"""Validation: the scores of pairs by the network's own scoring rule, their errors against the
targets, and the metrics logs (``metrics.csv``, TensorBoard)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..model.flips import by_flip, flipped
from ..model.network import Embedder
from ..model.preprocess import Preprocess
from ..model.scoring import as_real, as_synthetic, pair_scores, rule
from ..transforms.perturb import Perturb
from .config import TrainConfig
from .pairs import PairSet
from .steps import network_input, perturbed_batch

log = logging.getLogger(__name__)

METRICS = "metrics.csv"
EVAL_SEED = 1234
"""Seed of the validation perturbations: every evaluation sees the same perturbed pairs."""


def embed_pairs(
    network: Embedder, preprocess: Preprocess, images: np.ndarray, a: np.ndarray, b: np.ndarray,
    perturb: Perturb | None, generator: torch.Generator | None, device: torch.device,
) -> torch.Tensor:
    """Scores of pairs (images[a], images[b]), each side perturbed independently, by the
    network's scoring rule (``model/scoring.py``): the second image of each pair is the
    synthetic side."""
    n = len(a)
    scoring = rule(network.config.scoring)
    x = network_input(preprocess, perturbed_batch(images, np.concatenate([a, b]), perturb, generator, device))
    if scoring.real_flips:  # both sides with their flips, in one pass
        emb = by_flip(network(flipped(x)), 2 * n)
        real, synthetic = emb[:n], emb[n:]
    elif scoring.synthetic_flips:
        emb = network(torch.cat([x[:n], flipped(x[n:])]))
        real, synthetic = emb[:n], by_flip(emb[n:], n)
    else:
        emb = network(x)
        real, synthetic = emb[:n], emb[n:]
    return pair_scores(scoring, as_real(scoring, real), as_synthetic(scoring, synthetic))


@torch.no_grad()
def evaluate(
    network: Embedder, preprocess: Preprocess, pairs: PairSet, perturb: Perturb | None,
    device: torch.device, batch_size: int = 128,
) -> dict[str, float]:
    """MSE, MAE and Pearson r of the scores against the targets (eval mode)."""
    was_training = network.training
    network.eval()
    generator = torch.Generator(device="cpu").manual_seed(EVAL_SEED)
    scores = []
    for start in range(0, len(pairs), batch_size):
        sl = slice(start, start + batch_size)
        scores.append(embed_pairs(network, preprocess, pairs.images, pairs.a[sl], pairs.b[sl],
                                  perturb, generator, device).float().cpu())
    network.train(was_training)
    s = torch.cat(scores).numpy().astype(np.float64)
    t = pairs.target.astype(np.float64)
    r = float(np.corrcoef(s, t)[0, 1]) if s.std() > 0 and t.std() > 0 else float("nan")
    return {"mse": float(np.mean((s - t) ** 2)), "mae": float(np.mean(np.abs(s - t))), "r": r}


class MetricsLog:
    """metrics.csv, and TensorBoard when its package is installed."""

    def __init__(self, folder: Path, resume: bool) -> None:
        self.path = folder / METRICS
        self.fresh = not (resume and self.path.is_file())
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb: Any = SummaryWriter(str(folder / "tensorboard"))
        except ImportError:
            self.tb = None
            log.info("TensorBoard logs are off (pip install \"deepssim[tensorboard]\" to get them); "
                     "metrics go to %s", self.path)

    def write(self, row: dict[str, float]) -> None:
        new = self.fresh or not self.path.is_file()
        with open(self.path, "w" if self.fresh else "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        self.fresh = False
        if self.tb is not None:
            for key, value in row.items():
                if key not in ("epoch", "step"):
                    self.tb.add_scalar(key, value, int(row["step"]))
            self.tb.flush()


def validate(
    network: Embedder, config: TrainConfig, val_pairs: PairSet, perturb: Perturb,
    dev: torch.device, epoch: int, step: int, elapsed: float, train_loss: float, logs: MetricsLog,
) -> dict[str, float]:
    """One validation (clean and perturbed pairs), logged: its row of ``metrics.csv``."""
    clean = evaluate(network, config.preprocess, val_pairs, None, dev)
    perturbed = evaluate(network, config.preprocess, val_pairs, perturb, dev)
    row = {"epoch": epoch, "step": step, "elapsed_s": round(elapsed, 1), "train_mse": train_loss}
    row.update({f"val_clean_{k}": v for k, v in clean.items()})
    row.update({f"val_perturbed_{k}": v for k, v in perturbed.items()})
    logs.write(row)
    log.info("epoch %d step %d: train MSE %.4f, validation MAE clean %.4f / perturbed %.4f, "
             "r perturbed %.3f", epoch, step, train_loss, clean["mae"], perturbed["mae"], perturbed["r"])
    return row
