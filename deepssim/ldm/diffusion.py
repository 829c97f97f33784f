"""``deepssim ldm train`` and ``deepssim ldm sample``: the diffusion model on the VAE's latents.

Training: the VAE is frozen; every image is encoded once (latent mean and spread) and each step
draws a fresh latent sample, scales it by the latent scale factor (1 / std of the training
latents, from the data), adds DDPM noise at a random timestep and regresses the noise (MSE).
The records are the images repeated by their duplication counts (``duplication.csv``).

An LDM folder is self-contained: ``unet.safetensors`` + ``vae.safetensors`` + ``config.json``
(settings, scale factor, duplication, data fingerprint, both checksums), ``history.csv``,
``grids/ldm_epochNNN.png`` (the same 16 noise seeds every time) and ``train_state.pt``.

Sampling runs MONAI's ``LatentDiffusionInferer`` with DDIM (``ddim_steps``, eta 0). Sample
``i`` starts from noise seeded by ``(seed, i)``: the same images whatever the batch size.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..readers import fingerprint
from ..refssim import resolve_device
from ..storage import atomic_write_bytes, write_csv
from . import nets
from .duplication import copy_counts, records
from .loop import LoopResult, run_epochs
from .presets import LdmConfig
from .store import load_folder, load_weights, read_config, save_weights, write_grid, write_png
from .vae import load_vae

log = logging.getLogger(__name__)

GRID_SAMPLES = 16
DIFFUSION_SETTINGS = ("seed", "grid_every", "prediction_type", "num_train_timesteps", "schedule", "beta_start",
                      "beta_end", "ddim_steps")
"""Top-level settings ``train_ldm`` takes from ``unet_overrides``; the rest of the config is the VAE's."""
MANIFEST = "manifest.csv"


@dataclass
class LdmResult:
    folder: Path
    loop: LoopResult
    scale_factor: float
    counts: np.ndarray
    ids: list[str]


@dataclass
class Ldm:
    """A trained latent diffusion model, ready to sample."""

    vae: torch.nn.Module
    unet: torch.nn.Module
    config: LdmConfig
    scale_factor: float
    meta: dict[str, Any]
    device: torch.device

    def noise(self, indices: Sequence[int], seed: int) -> torch.Tensor:
        c, s = self.config.vae.latent_channels, self.config.latent_size()
        return torch.stack([
            torch.randn((c, s, s), generator=torch.Generator().manual_seed(int(seed) * 1_000_003 + int(i)))
            for i in indices
        ]).to(self.device)

    @torch.no_grad()
    def sample(self, indices: Sequence[int], seed: int = 0) -> np.ndarray:
        """Images (len(indices), H, W) in [0, 1] for the sample indices under ``seed``."""
        scheduler = nets.ddim(self.config)
        images = nets.inferer(scheduler, self.scale_factor).sample(input_noise=self.noise(indices, seed), autoencoder_model=self.vae,
                                diffusion_model=self.unet, scheduler=scheduler, verbose=False)
        return images.clamp(0, 1)[:, 0].float().cpu().numpy()


@nets.needs_monai
def load_ldm(folder: str | Path, device: str = "cpu") -> Ldm:
    """The latent diffusion model of a ``deepssim ldm train`` folder."""
    meta = read_config(folder, "ldm")
    config = LdmConfig.from_dict(meta["config"])
    dev = resolve_device(device)
    vae = load_weights(folder, "vae", nets.autoencoder(config), meta).to(dev)
    unet = load_weights(folder, "unet", nets.unet(config), meta).to(dev)
    return Ldm(vae, unet, config, float(meta["scale_factor"]), meta, dev)


@torch.no_grad()
def encode(vae: torch.nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent means and standard deviations of ``images`` (N, H, W)."""
    mus, sigmas = [], []
    for k in range(0, len(images), batch_size):
        mu, sigma = vae.encode(torch.from_numpy(images[k:k + batch_size])[:, None].to(device))
        mus.append(mu)
        sigmas.append(sigma)
    return torch.cat(mus), torch.cat(sigmas)


@nets.needs_monai
def train_ldm(
    inputs: Sequence[str | Path],
    vae_dir: str | Path,
    out_dir: str | Path,
    *,
    duplication: str = "none",
    unet_overrides: dict[str, Any] | None = None,
    device: str = "auto",
    resume: bool = False,
    max_minutes: float | None = None,
    max_steps: int | None = None,
    progress: bool = True,
) -> LdmResult:
    """Train the diffusion UNet on the latents of the images under ``inputs``.

    The settings come from the VAE folder's config (same image size and latent channels);
    ``unet_overrides`` changes UNet fields (``epochs``, ``lr``...) and ``DIFFUSION_SETTINGS``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    vae, config, vae_meta = load_vae(vae_dir, dev)
    overrides = dict(unet_overrides or {})
    top = {k: overrides.pop(k) for k in DIFFUSION_SETTINGS if k in overrides}
    config = replace(config, unet=replace(config.unet, **overrides), **top)
    u = config.unet

    images, ids = load_folder(inputs, config.image_size, progress=progress)
    data = fingerprint(images, ids)
    counts = copy_counts(len(images), duplication, config.seed)
    recs = records(counts)
    write_csv(out / "duplication.csv", ["image", "copies"],
              [{"image": i, "copies": str(int(c))} for i, c in zip(ids, counts)])
    log.info("LDM: %d images, duplication %s: %d records (copies %d..%d), fingerprint %s",
             len(images), duplication, len(recs), counts.min(), counts.max(), data[:12])

    mu, sigma = encode(vae, images, dev)
    first = torch.randn(mu.shape, generator=torch.Generator().manual_seed(config.seed)).to(dev)
    scale_factor = float(1.0 / (mu + sigma * first).std())
    log.info("latent scale factor %.4f (1 / std of the training latents)", scale_factor)

    torch.manual_seed(config.seed)
    unet = nets.unet(config).to(dev)
    optimizer = torch.optim.Adam(unet.parameters(), lr=u.lr)
    scheduler = nets.ddpm(config)
    steps_per_epoch = -(-len(recs) // u.batch_size)
    order: list[int] = []
    (out / "grids").mkdir(exist_ok=True)
    use_amp = dev.type == "cuda"

    def step(epoch: int, batch: int, gen: torch.Generator) -> dict[str, float]:
        if batch == 0:
            order[:] = recs[torch.randperm(len(recs), generator=gen).numpy()].tolist()
        idx = torch.tensor(order[batch * u.batch_size:(batch + 1) * u.batch_size])
        eps = torch.randn(mu[idx].shape, generator=gen).to(dev)
        z = (mu[idx] + sigma[idx] * eps) * scale_factor
        noise = torch.randn(z.shape, generator=gen).to(dev)
        t = torch.randint(0, config.num_train_timesteps, (len(idx),), generator=gen).to(dev)
        unet.train()
        with torch.autocast(dev.type, enabled=use_amp):
            pred = unet(scheduler.add_noise(original_samples=z, noise=noise, timesteps=t), timesteps=t)
        target = noise if config.prediction_type == "epsilon" else scheduler.get_velocity(z, noise, t)
        loss = torch.nn.functional.mse_loss(pred.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"mse": loss.item()}

    meta = {"kind": "ldm", "config": config.to_dict(), "data": data, "n_images": len(images),
            "duplication": duplication, "n_records": int(len(recs)), "scale_factor": scale_factor,
            "vae": {"folder": str(Path(vae_dir).absolute()), "sha256": vae_meta["weights"]["vae"]["sha256"],
                    "recon_ssim": vae_meta.get("recon_ssim")}}

    def end_epoch(epoch: int, means: dict[str, float]) -> None:
        unet.eval()
        if epoch % config.grid_every == 0 or epoch == u.epochs:
            model = Ldm(vae, unet, config, scale_factor, meta, dev)
            write_grid(out / "grids" / f"ldm_epoch{epoch:03d}.png", model.sample(range(GRID_SAMPLES), seed=0))
        save_weights(out, {"unet": unet, "vae": vae}, {**meta, "epochs_done": epoch})

    expect = {"config": config.to_dict(), "data": data, "duplication": duplication, "vae": meta["vae"]["sha256"]}
    loop = run_epochs(out, epochs=u.epochs, steps_per_epoch=steps_per_epoch, seed=config.seed,
                      modules={"unet": unet, "optimizer": optimizer}, expect=expect, step=step,
                      end_epoch=end_epoch, resume=resume, max_minutes=max_minutes, max_steps=max_steps,
                      desc=f"LDM ({duplication})", progress=progress)
    unet.eval()
    write_grid(out / "grids" / "ldm_final.png", Ldm(vae, unet, config, scale_factor, meta, dev).sample(range(GRID_SAMPLES), seed=0))
    save_weights(out, {"unet": unet, "vae": vae}, {
        **meta, "epochs_done": loop.epochs, "steps": loop.steps, "stopped_by": loop.stopped_by,
        "seconds": round(loop.seconds, 1)})
    return LdmResult(out, loop, scale_factor, counts, ids)


@nets.needs_monai
def sample(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    n: int | None = None,
    per_record: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    device: str = "auto",
    progress: bool = True,
) -> list[Path]:
    """Write ``n`` samples (or ``per_record`` per training image) as PNG, with ``manifest.csv``.

    Files already there from an interrupted run with the same model and seed are kept (the
    manifest is written last and lists every sample).
    """
    if (n is None) == (per_record is None):
        raise ValueError("give exactly one of n (samples in total) and per_record (samples per training image)")
    model = load_ldm(model_dir, device)
    total = n if n is not None else per_record * int(model.meta["n_images"])  # type: ignore[operator]
    if total <= 0:
        raise ValueError(f"nothing to sample ({total} images asked for)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(total - 1)))
    sha = model.meta["weights"]["unet"]["sha256"]
    stamp = out / ".sampling.json"
    want = {"unet": sha, "seed": seed, "ddim_steps": model.config.ddim_steps}
    if stamp.is_file() and json.loads(stamp.read_text()) != want:
        raise FileExistsError(f"{out} holds samples of another model or seed: choose another folder")
    atomic_write_bytes(stamp, json.dumps(want).encode())
    paths = [out / f"sample_{i:0{width}d}.png" for i in range(total)]
    todo = [i for i, p in enumerate(paths) if not p.is_file()]
    bar = tqdm(total=total, initial=total - len(todo), desc="sampling", unit="image",
               disable=not progress, file=sys.stderr)
    for k in range(0, len(todo), batch_size):
        chunk = todo[k:k + batch_size]
        for i, image in zip(chunk, model.sample(chunk, seed)):
            write_png(paths[i], image)
        bar.update(len(chunk))
    bar.close()
    write_csv(out / MANIFEST, ["file", "index", "seed", "unet_sha256"],
              [{"file": p.name, "index": str(i), "seed": str(seed), "unet_sha256": sha} for i, p in enumerate(paths)])
    return paths
