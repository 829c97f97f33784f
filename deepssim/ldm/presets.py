"""LDM presets: the paper's configuration and a small one that trains on a 2-core CPU.

The paper (PAPER.md) fixes the autoencoder (1 -> 3 latent channels, channels 64/128/128, no
attention), the diffusion UNet (channels 256/512/768, attention at the two deepest levels), the
noise schedule (1000 steps, scaled-linear betas 0.0015..0.0205) and DDIM sampling with 50 steps.
Loss weights, learning rates and epochs are not in the paper: they follow MONAI's 2D latent
diffusion tutorial. ``small`` keeps the structure and shrinks widths, depth and image size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class VaeConfig:
    """The autoencoder (MONAI ``AutoencoderKL``), its discriminator and its losses."""

    channels: tuple[int, ...] = (64, 128, 128)
    latent_channels: int = 3
    num_res_blocks: int = 2
    norm_num_groups: int = 32
    lr: float = 1e-4
    batch_size: int = 16
    epochs: int = 100
    kl_weight: float = 1e-6
    perceptual_weight: float = 0.001
    perceptual: str = "imagenet"
    """Weights of the perceptual network (torchvision ResNet-50): ``imagenet`` (torchvision's
    weights API, hash-checked, from the local cache or an explicit download) or a file path."""
    adv_weight: float = 0.01
    adv_start_epoch: int = 10
    disc_channels: int = 64
    disc_layers: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if any(c % self.norm_num_groups for c in self.channels):
            raise ValueError(f"VAE channels {self.channels} must be multiples of norm_num_groups "
                             f"{self.norm_num_groups}")


@dataclass(frozen=True)
class UnetConfig:
    """The diffusion network (MONAI ``DiffusionModelUNet``) on the latents, and its training."""

    channels: tuple[int, ...] = (256, 512, 768)
    attention_levels: tuple[bool, ...] = (False, True, True)
    num_res_blocks: int = 2
    num_head_channels: tuple[int, ...] = (0, 512, 768)
    norm_num_groups: int = 32
    lr: float = 2.5e-5
    batch_size: int = 32
    epochs: int = 150

    def __post_init__(self) -> None:
        for name in ("channels", "attention_levels", "num_head_channels"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not len(self.channels) == len(self.attention_levels) == len(self.num_head_channels):
            raise ValueError("UNet channels, attention_levels and num_head_channels need one entry per level")


@dataclass(frozen=True)
class LdmConfig:
    """Everything that defines an LDM run except the data; recorded in every checkpoint."""

    preset: str = "paper"
    image_size: int = 128
    vae: VaeConfig = field(default_factory=VaeConfig)
    unet: UnetConfig = field(default_factory=UnetConfig)
    num_train_timesteps: int = 1000
    schedule: str = "scaled_linear_beta"
    beta_start: float = 0.0015
    beta_end: float = 0.0205
    ddim_steps: int = 50
    prediction_type: str = "epsilon"
    """What the UNet predicts: ``epsilon`` (the noise; MONAI's default) or ``v_prediction``
    (more stable at the noisiest steps when training is short)."""
    grid_every: int = 1
    """Write a sample grid PNG every this many epochs (and after the last one)."""
    seed: int = 42

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LdmConfig:
        data = dict(data)
        data["vae"] = VaeConfig(**data.get("vae", {}))
        data["unet"] = UnetConfig(**data.get("unet", {}))
        return cls(**data)

    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.vae.channels) - 1)


PRESETS: dict[str, LdmConfig] = {
    "paper": LdmConfig(),
    # Trains on a CPU. No adversarial loss (it lowered the reconstruction SSIM), no perceptual
    # loss (its ImageNet weights are not available offline), and the UNet predicts v (epsilon
    # prediction gave unusable DDIM samples after short training): docs/case-study.md, Set-up.
    "small": LdmConfig(
        preset="small",
        image_size=64,
        vae=VaeConfig(channels=(32, 64, 64), num_res_blocks=1, norm_num_groups=16, lr=1e-3,
                      epochs=150, perceptual_weight=0.0, adv_weight=0.0, disc_channels=32,
                      disc_layers=2),
        unet=UnetConfig(channels=(32, 64, 64), num_res_blocks=1, num_head_channels=(0, 32, 32),
                        lr=5e-4, epochs=1500),
        prediction_type="v_prediction",
        grid_every=250,
    ),
}


def preset(name: str, **overrides: Any) -> LdmConfig:
    """The preset ``name`` with top-level, ``vae_*`` or ``unet_*`` fields overridden.

    ``preset("small", image_size=32, unet_epochs=5, vae_lr=1e-3)``; ``None`` values are ignored.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown LDM preset {name!r} (choose from {', '.join(PRESETS)})")
    config = PRESETS[name]
    top, vae, unet = {}, {}, {}
    names = {"vae": {f.name for f in fields(VaeConfig)}, "unet": {f.name for f in fields(UnetConfig)}}
    for key, value in overrides.items():
        if value is None:
            continue
        part, _, rest = key.partition("_")
        if part in names and rest in names[part]:
            (vae if part == "vae" else unet)[rest] = value
        elif key in {f.name for f in fields(LdmConfig)} - {"vae", "unet"}:
            top[key] = value
        else:
            raise ValueError(f"unknown LDM setting {key!r}")
    return replace(config, **top, vae=replace(config.vae, **vae), unet=replace(config.unet, **unet))
