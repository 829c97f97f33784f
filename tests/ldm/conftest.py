from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepssim.ldm.presets import preset
from deepssim.ldm.store import write_png


def tiny_config(**overrides):
    settings = dict(
        image_size=16, grid_every=1, seed=3,
        vae_channels=(8, 8), vae_norm_num_groups=4, vae_num_res_blocks=1, vae_epochs=2, vae_batch_size=4,
        vae_lr=1e-3, vae_adv_weight=0.01, vae_adv_start_epoch=1, vae_disc_channels=8, vae_disc_layers=1,
        unet_channels=(8, 16), unet_attention_levels=(False, True), unet_num_head_channels=(0, 8),
        unet_norm_num_groups=4, unet_num_res_blocks=1, unet_epochs=2, unet_batch_size=4, unet_lr=1e-3,
        ddim_steps=5, num_train_timesteps=100,
    )
    settings.update(overrides)
    return preset("small", **settings)


def blobs(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """Distinct smooth images in [0, 1]: a bright disc at a random place on a gradient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
        image = 0.3 * xx + ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) * rng.uniform(0.5, 1.0)
        out.append((image - image.min()) / (image.max() - image.min()))
    return np.stack(out).astype(np.float32)


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    for k, image in enumerate(blobs(8)):
        write_png(folder / f"img{k}.png", image)
    return folder


def textures(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Distinct smooth random fields in [0, 1] (no two are near-duplicates)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    out = [gaussian_filter(rng.standard_normal((size, size)), 2.0) for _ in range(n)]
    return np.stack([(x - x.min()) / (x.max() - x.min()) for x in out]).astype(np.float32)
