"""The networks, losses and schedulers of the latent diffusion model, all from MONAI.

MONAI is an optional dependency (the ``ldm`` extra): every MONAI import of the package is in
this module, inside the function that needs it, so that the rest of deepssim imports without
it, and the case study's entry points check for it first (``needs_monai``).
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from .presets import LdmConfig, VaeConfig

log = logging.getLogger(__name__)

EXTRA = "ldm"
"""The optional dependencies of the case study: ``pip install 'deepssim[ldm]'``."""
_NEEDED = (("monai", "MONAI"), ("einops", "einops (for MONAI's attention blocks)"))

F = TypeVar("F", bound=Callable[..., Any])


def require_monai() -> None:
    """Return if MONAI and einops import; else raise ImportError naming the ``ldm`` extra."""
    for module, name in _NEEDED:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ImportError(f"the LDM case study needs {name}: pip install 'deepssim[{EXTRA}]'",
                              name=module) from exc


def needs_monai(function: F) -> F:
    """``function`` checking ``require_monai`` first: a missing extra is named before any work
    (reading images, writing folders) is done."""

    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> Any:
        require_monai()
        return function(*args, **kwargs)

    return checked  # type: ignore[return-value]


def autoencoder(config: LdmConfig) -> nn.Module:
    """MONAI ``AutoencoderKL``: 1 channel in and out, no attention (as in the paper)."""
    from monai.networks.nets import AutoencoderKL

    v = config.vae
    levels = len(v.channels)
    return AutoencoderKL(
        spatial_dims=2, in_channels=1, out_channels=1, channels=v.channels,
        latent_channels=v.latent_channels, num_res_blocks=v.num_res_blocks,
        attention_levels=(False,) * levels, norm_num_groups=v.norm_num_groups,
        with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False,
    )


def discriminator(config: LdmConfig) -> nn.Module:
    """MONAI ``PatchDiscriminator`` for the autoencoder's adversarial loss."""
    from monai.networks.nets import PatchDiscriminator

    v = config.vae
    return PatchDiscriminator(spatial_dims=2, num_layers_d=v.disc_layers, channels=v.disc_channels,
                              in_channels=1, out_channels=1)


def unet(config: LdmConfig) -> nn.Module:
    """MONAI ``DiffusionModelUNet`` on the autoencoder's latents."""
    from monai.networks.nets import DiffusionModelUNet

    u, c = config.unet, config.vae.latent_channels
    return DiffusionModelUNet(
        spatial_dims=2, in_channels=c, out_channels=c, channels=u.channels,
        attention_levels=u.attention_levels, num_res_blocks=u.num_res_blocks,
        num_head_channels=u.num_head_channels, norm_num_groups=u.norm_num_groups,
    )


def ddpm(config: LdmConfig):  # noqa: ANN201 (monai type)
    """The training noise schedule."""
    from monai.networks.schedulers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=config.num_train_timesteps, schedule=config.schedule,
                         beta_start=config.beta_start, beta_end=config.beta_end,
                         prediction_type=config.prediction_type)


def ddim(config: LdmConfig):  # noqa: ANN201 (monai type)
    """The sampling scheduler: DDIM with ``config.ddim_steps`` steps over the same betas."""
    from monai.networks.schedulers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=config.num_train_timesteps, schedule=config.schedule,
                              beta_start=config.beta_start, beta_end=config.beta_end, clip_sample=False,
                              prediction_type=config.prediction_type)
    scheduler.set_timesteps(config.ddim_steps)
    return scheduler


def adversarial_loss() -> nn.Module:
    """MONAI ``PatchAdversarialLoss`` (least squares) for the autoencoder and its discriminator."""
    from monai.losses import PatchAdversarialLoss

    return PatchAdversarialLoss(criterion="least_squares")


def inferer(scheduler: Any, scale_factor: float) -> Any:
    """MONAI ``LatentDiffusionInferer``: samples latents with ``scheduler`` and decodes them."""
    from monai.inferers import LatentDiffusionInferer

    return LatentDiffusionInferer(scheduler, scale_factor=scale_factor)


def perceptual_loss(v: VaeConfig) -> nn.Module:
    """MONAI ``PerceptualLoss`` on a torchvision ResNet-50, from local weights only.

    ``v.perceptual``: ``imagenet`` takes the torchvision weights from the torch hub cache (put
    there by an earlier, explicit download); anything else is a path to a state-dict file.
    Raises FileNotFoundError naming the file and the way out when the weights are not here.
    """
    import torchvision
    from monai.losses import PerceptualLoss

    if v.perceptual == "imagenet":
        weights = torchvision.models.ResNet50_Weights.DEFAULT
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: the ImageNet ResNet-50 weights of the VAE's perceptual loss are not in the "
                f"torch hub cache (download them once from {weights.url}, pass a weights file as "
                "--vae-perceptual PATH, or switch the loss off with --vae-perceptual-weight 0)")
    else:
        path = Path(v.perceptual)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: perceptual-loss weights file not found")
    log.info("perceptual loss: ResNet-50 weights from %s", path)
    return PerceptualLoss(spatial_dims=2, network_type="resnet50", pretrained=True,
                          pretrained_path=str(path))
