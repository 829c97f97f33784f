"""The Dar et al. baseline: a ResNet embedder trained contrastively on the training images.

Dar et al. ("Unconditional latent diffusion models memorize patient imaging data", Nature
Biomedical Engineering 2025) detect copies with a network trained so that two augmented
views of one training image embed close together and views of different images apart. We
retrain it on the benchmark's ``train/`` only: a ResNet-18 (``deepssim.model.Embedder``, the
same network code and checkpoint format as DeepSSIM, so ``load_model`` reads it) with the
SimCLR loss (NT-Xent, temperature 0.1) over two views of each image, each view drawn from the
paper's perturbations (flips, rotation up to +-10 degrees, gamma 0.5..1.5) plus Gaussian
noise. The run is bounded by ``max_minutes`` so that it fits a CPU budget.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..model.checkpoint import save_model
from ..model.network import ModelConfig
from ..model.preprocess import Preprocess
from ..refssim import resolve_device
from ..transforms.perturb import Perturb, PerturbConfig
from ..readers import fingerprint, load_stack
from ..training.steps import embed_images

log = logging.getLogger(__name__)

BASELINE = "dar"
"""``config.json`` marker of a Dar baseline model folder (``"baseline": "dar"``)."""


@dataclass(frozen=True)
class DarConfig:
    """Settings of a Dar baseline run (recorded in the model's ``config.json``)."""

    model: ModelConfig = field(default_factory=lambda: ModelConfig(
        backbone="resnet18", pooling="avg", embedding_dim=128, hidden_dim=512, dropout=0.0))
    size: int = 128
    perturb: PerturbConfig = field(default_factory=lambda: PerturbConfig(
        p_flip0=0.5, p_flip1=0.5, p_rotate=0.5, max_degrees=10.0, p_gamma=0.5))
    noise_std: float = 0.05
    """Gaussian noise added to each z-scored view, in standard deviations of the image."""
    temperature: float = 0.1
    batch_size: int = 32
    epochs: int = 50
    max_minutes: float | None = 10.0
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 2:
            raise ValueError(f"contrastive training needs batch_size >= 2, got {self.batch_size}")
        if self.temperature <= 0 or self.epochs < 1 or self.noise_std < 0:
            raise ValueError("temperature must be > 0, epochs >= 1 and noise_std >= 0")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be > 0, got {self.max_minutes}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss for L2-normalised embeddings of two views (B, D): each view must pick its
    twin among the other 2B - 1 embeddings of the batch."""
    z = torch.cat([z1, z2])
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    n = z1.shape[0]
    twin = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, twin)


def train_dar(
    images: Sequence[str | Path],
    out: str | Path,
    config: DarConfig = DarConfig(),
    *,
    device: str = "auto",
    progress: bool = True,
) -> Path:
    """Train the Dar baseline on the images under ``images`` and save it to ``out``.

    Returns:
        The model folder (``model.safetensors`` + ``config.json``), usable as ``--weights``
        of the ``dar`` metric.

    Raises:
        ReadError: unreadable images (by name) or none found.
        ValueError: fewer than ``batch_size`` images.
    """
    from ..model.network import Embedder

    dev = resolve_device(device)
    preprocess = Preprocess(size=config.size, intensity="zscore", channels=3)
    pixels, ids = load_stack(list(images), preprocess.resize, progress=progress)
    if len(pixels) < config.batch_size:
        raise ValueError(f"{len(pixels)} images found; the Dar baseline needs at least batch_size "
                         f"({config.batch_size})")
    torch.manual_seed(config.seed)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    network = Embedder(config.model).to(dev).train()
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    augment = _NoisyPerturb(Perturb(config.perturb), config.noise_std)
    start = time.monotonic()
    deadline = None if config.max_minutes is None else start + 60 * config.max_minutes
    steps, epochs_done, loss_value, stopped_by = 0, 0, float("nan"), "epochs"
    per_epoch = len(pixels) // config.batch_size
    bar = tqdm(total=config.epochs * per_epoch, desc="train dar", unit="step", file=sys.stderr,
               disable=not progress)
    for _ in range(config.epochs):
        order = torch.randperm(len(pixels), generator=generator).numpy()
        for b in range(per_epoch):
            index = order[b * config.batch_size : (b + 1) * config.batch_size]
            views = [embed_images(network, preprocess, pixels, index, augment, generator, dev)  # type: ignore[arg-type]
                     for _ in range(2)]
            loss = nt_xent(*views, config.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), config.grad_clip)
            optimizer.step()
            steps, loss_value = steps + 1, float(loss.detach())
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}")
            if deadline is not None and time.monotonic() > deadline:
                stopped_by = "max_minutes"
                break
        if stopped_by == "max_minutes":
            break
        epochs_done += 1
    bar.close()
    seconds = time.monotonic() - start
    log.info("dar baseline: %d steps (%d full epochs) in %.0f s, final loss %.4f", steps,
             epochs_done, seconds, loss_value)
    extra = {
        "preset": BASELINE,
        "baseline": BASELINE,
        "dar": config.to_dict(),
        "training_data": {"n_images": len(ids), "fingerprint": fingerprint(pixels, ids)},
        "training": {"steps": steps, "epochs_done": epochs_done, "seconds": seconds,
                     "final_loss": loss_value, "stopped_by": stopped_by},
    }
    return save_model(out, network.cpu().eval(), preprocess, extra)


class _NoisyPerturb:
    """The paper's perturbations, then Gaussian noise scaled to each image's spread (so the
    noise level is the same whatever the intensity range of the files)."""

    def __init__(self, perturb: Perturb, noise_std: float) -> None:
        self.perturb, self.noise_std = perturb, noise_std

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = self.perturb(x, generator)
        if not self.noise_std:
            return x
        spread = x.flatten(1).std(dim=1).clamp(min=1e-12).view(-1, 1, 1)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
        return x + self.noise_std * spread * noise
