"""``deepssim ldm train-vae``: the autoencoder of the latent diffusion model.

Losses as in MONAI's latent diffusion tutorial and the paper: L1 reconstruction + KL
(``kl_weight``) + perceptual (``perceptual_weight``, a ResNet-50 from local weights) + patch
adversarial (``adv_weight``, from ``adv_start_epoch`` on). The learning rate decays (cosine) to a
tenth over the run. The folder holds ``vae.safetensors``,
``config.json`` (settings, data fingerprint, reconstruction SSIM), ``history.csv``, the
reconstruction grids ``grids/vae_epochNNN.png`` (originals above, reconstructions below) and
``train_state.pt`` for ``--resume``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..readers import fingerprint
from ..refssim import resolve_device, ssim_pairs
from . import nets
from .loop import LoopResult, run_epochs
from .presets import LdmConfig
from .store import load_folder, load_weights, read_config, save_weights, write_grid

log = logging.getLogger(__name__)

GRID_IMAGES = 16


@dataclass
class VaeResult:
    folder: Path
    loop: LoopResult
    recon_ssim: dict[str, float]


def kl_divergence(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL of N(mu, sigma^2) from N(0, 1), summed over latent elements, mean over the batch."""
    var = sigma.pow(2)
    return 0.5 * (mu.pow(2) + var - torch.log(var.clamp_min(1e-12)) - 1).flatten(1).sum(1).mean()


@torch.no_grad()
def reconstruct(vae: torch.nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 64) -> np.ndarray:
    """Decode the latent means of ``images`` (N, H, W) in [0, 1]: the deterministic reconstruction."""
    out = []
    for k in range(0, len(images), batch_size):
        x = torch.from_numpy(images[k:k + batch_size])[:, None].to(device)
        z = vae.encode(x)[0]
        out.append(vae.decode(z).clamp(0, 1)[:, 0].float().cpu().numpy())
    return np.concatenate(out)


@nets.needs_monai
def load_vae(folder: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, LdmConfig, dict[str, Any]]:
    """The trained autoencoder of a ``train-vae`` folder, its LDM config and its config.json."""
    meta = read_config(folder, "vae")
    config = LdmConfig.from_dict(meta["config"])
    vae = load_weights(folder, "vae", nets.autoencoder(config), meta)
    return vae.to(device), config, meta


@nets.needs_monai
def train_vae(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    config: LdmConfig,
    *,
    device: str = "auto",
    resume: bool = False,
    max_minutes: float | None = None,
    progress: bool = True,
) -> VaeResult:
    """Train the autoencoder on the images under ``inputs`` (resized to ``config.image_size``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    v = config.vae
    images, ids = load_folder(inputs, config.image_size, progress=progress)
    data = fingerprint(images, ids)
    log.info("VAE: %d images at %d x %d, fingerprint %s", len(images), config.image_size,
             config.image_size, data[:12])
    torch.manual_seed(config.seed)
    vae = nets.autoencoder(config).to(dev)
    opt_g = torch.optim.Adam(vae.parameters(), lr=v.lr)
    modules: dict[str, Any] = {"vae": vae, "opt_g": opt_g}
    disc = None
    if v.adv_weight > 0:
        disc = nets.discriminator(config).to(dev)
        modules.update(disc=disc, opt_d=torch.optim.Adam(disc.parameters(), lr=v.lr))
    adv_loss = nets.adversarial_loss()
    perceptual = nets.perceptual_loss(v).to(dev) if v.perceptual_weight > 0 else None

    x_all = torch.from_numpy(images)[:, None]
    n = len(images)
    steps_per_epoch = -(-n // v.batch_size)
    shown = images[: min(GRID_IMAGES // 2, n)]
    (out / "grids").mkdir(exist_ok=True)
    order: list[int] = []  # this epoch's shuffled image order

    def step(epoch: int, batch: int, gen: torch.Generator) -> dict[str, float]:
        if batch == 0:
            order[:] = torch.randperm(n, generator=gen).tolist()
        idx = order[batch * v.batch_size:(batch + 1) * v.batch_size]
        x = x_all[idx].to(dev)
        progress_ = (epoch * steps_per_epoch + batch) / max(1, v.epochs * steps_per_epoch)
        for group in opt_g.param_groups:  # cosine decay to a tenth: a steadier final model
            group["lr"] = v.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress_))))
        vae.train()
        recon, mu, sigma = vae(x)
        l1 = (recon - x).abs().mean()
        kl = kl_divergence(mu, sigma)
        loss = l1 + v.kl_weight * kl
        losses = {"l1": l1.item(), "kl": kl.item()}
        if perceptual is not None:
            p = perceptual(recon.float(), x.float())
            loss = loss + v.perceptual_weight * p
            losses["perceptual"] = p.item()
        adversarial = disc is not None and epoch >= v.adv_start_epoch
        if adversarial:
            g_adv = adv_loss(disc(recon.contiguous().float())[-1], target_is_real=True, for_discriminator=False)
            loss = loss + v.adv_weight * g_adv
            losses["adv_g"] = g_adv.item()
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        if adversarial:
            fake = adv_loss(disc(recon.detach().contiguous().float())[-1], target_is_real=False, for_discriminator=True)
            real = adv_loss(disc(x.contiguous())[-1], target_is_real=True, for_discriminator=True)
            d_loss = v.adv_weight * 0.5 * (fake + real)
            modules["opt_d"].zero_grad(set_to_none=True)
            d_loss.backward()
            modules["opt_d"].step()
            losses["adv_d"] = d_loss.item()
        return losses

    def end_epoch(epoch: int, means: dict[str, float]) -> dict[str, float]:
        vae.eval()
        extra = {}
        if epoch % config.grid_every == 0 or epoch == v.epochs:
            rec = reconstruct(vae, shown, dev)
            write_grid(out / "grids" / f"vae_epoch{epoch:03d}.png", np.concatenate([shown, rec]),
                       columns=len(shown))
            extra["grid_recon_ssim"] = float(np.mean(ssim_pairs(list(shown), list(rec), device="cpu", progress=False)))
        save_weights(out, {"vae": vae}, {"kind": "vae", "config": config.to_dict(), "data": data,
                                         "n_images": n, "epochs_done": epoch})
        return extra

    expect = {"config": config.to_dict(), "data": data}
    loop = run_epochs(out, epochs=v.epochs, steps_per_epoch=steps_per_epoch, seed=config.seed,
                      modules=modules, expect=expect, step=step, end_epoch=end_epoch, resume=resume,
                      max_minutes=max_minutes, desc="VAE", progress=progress)
    vae.eval()
    rec = reconstruct(vae, images, dev)
    values = ssim_pairs(list(images), list(rec), device="cpu", progress=False)
    recon = {"mean": float(np.mean(values)), "median": float(np.median(values)),
             "p10": float(np.percentile(values, 10)), "min": float(np.min(values))}
    log.info("VAE reconstruction SSIM on its training images: mean %.3f, median %.3f, 10th pct %.3f",
             recon["mean"], recon["median"], recon["p10"])
    save_weights(out, {"vae": vae}, {
        "kind": "vae", "config": config.to_dict(), "data": data, "n_images": n,
        "epochs_done": loop.epochs, "steps": loop.steps, "stopped_by": loop.stopped_by,
        "seconds": round(loop.seconds, 1), "recon_ssim": recon,
    })
    return VaeResult(out, loop, recon)
