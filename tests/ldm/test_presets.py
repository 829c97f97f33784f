from __future__ import annotations

import pytest
import torch

from deepssim.ldm import nets
from deepssim.ldm.presets import PRESETS, LdmConfig, preset

from .conftest import tiny_config


def test_paper_preset_is_the_papers_configuration():
    c = PRESETS["paper"]
    assert c.vae.channels == (64, 128, 128) and c.vae.latent_channels == 3
    assert c.unet.channels == (256, 512, 768) and c.unet.attention_levels == (False, True, True)
    assert (c.num_train_timesteps, c.schedule, c.beta_start, c.beta_end, c.ddim_steps) == (
        1000, "scaled_linear_beta", 0.0015, 0.0205, 50)
    assert c.vae.perceptual_weight > 0 and c.vae.adv_weight > 0 and c.vae.kl_weight > 0


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_networks_of_each_preset_build_and_run_on_tiny_shapes(name):
    # The preset's own widths, on a 16 x 16 image: shapes line up end to end.
    config = preset(name, image_size=32)
    vae, unet = nets.autoencoder(config), nets.unet(config)
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        recon, mu, sigma = vae(x)
        assert recon.shape == x.shape
        assert mu.shape == (1, config.vae.latent_channels, config.latent_size(), config.latent_size())
        assert unet(mu, timesteps=torch.tensor([5])).shape == mu.shape
        assert len(nets.discriminator(config).eval()(x)) > 1


def test_overrides_and_round_trip():
    config = tiny_config()
    assert config.image_size == 16 and config.unet.channels == (8, 16) and config.vae.epochs == 2
    assert LdmConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown LDM setting"):
        preset("small", vae_nope=1)
    with pytest.raises(ValueError, match="unknown LDM preset"):
        preset("huge")
    with pytest.raises(ValueError, match="multiples of norm_num_groups"):
        preset("small", vae_channels=(10, 20))


def test_perceptual_loss_needs_local_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="perceptual-weight 0"):
        nets.perceptual_loss(PRESETS["paper"].vae)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        nets.perceptual_loss(preset("paper", vae_perceptual=str(tmp_path / "nope.pth")).vae)
