from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from deepssim.ldm import nets
from deepssim.ldm.diffusion import load_ldm, sample, train_ldm
from deepssim.ldm.store import load_folder
from deepssim.ldm.vae import kl_divergence, load_vae, train_vae
from deepssim.model.checkpoint import ModelFolderError

from .conftest import blobs, tiny_config


def test_one_vae_step_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    config = tiny_config()
    vae = nets.autoencoder(config)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    x = torch.from_numpy(blobs(4))[:, None]

    def loss() -> torch.Tensor:
        recon, mu, sigma = vae(x)
        return (recon - x).abs().mean() + 1e-6 * kl_divergence(mu, sigma)

    torch.manual_seed(1)
    before = loss()
    opt.zero_grad()
    before.backward()
    opt.step()
    torch.manual_seed(1)
    assert loss().item() < before.item()


def test_one_unet_step_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    config = tiny_config()
    unet, scheduler = nets.unet(config), nets.ddpm(config)
    opt = torch.optim.Adam(unet.parameters(), lr=1e-3)
    z = torch.randn(4, 3, 8, 8)
    noise = torch.randn_like(z)
    t = torch.tensor([3, 20, 50, 90])

    def loss() -> torch.Tensor:
        return torch.nn.functional.mse_loss(unet(scheduler.add_noise(z, noise, t), timesteps=t), noise)

    before = loss()
    opt.zero_grad()
    before.backward()
    opt.step()
    assert loss().item() < before.item()


def test_kl_divergence_is_zero_for_the_prior():
    assert kl_divergence(torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)).item() == pytest.approx(0.0)


@pytest.fixture
def trained(tmp_path, image_dir):
    config = tiny_config()
    train_vae([image_dir], tmp_path / "vae", config, device="cpu", progress=False)
    result = train_ldm([image_dir], tmp_path / "vae", tmp_path / "ldm", duplication="high",
                       device="cpu", progress=False)
    return tmp_path, config, result


def test_training_writes_folders_grids_and_duplication_record(trained, image_dir):
    tmp, config, result = trained
    vae_meta = json.loads((tmp / "vae" / "config.json").read_text())
    assert vae_meta["kind"] == "vae" and vae_meta["epochs_done"] == 2
    assert 0 < vae_meta["recon_ssim"]["median"] <= 1
    assert (tmp / "vae" / "grids" / "vae_epoch002.png").is_file()
    history = (tmp / "vae" / "history.csv").read_text().splitlines()
    assert "adv_g" in history[0] and len(history) == 3  # the adversarial loss from epoch 2 on
    meta = json.loads((tmp / "ldm" / "config.json").read_text())
    assert meta["kind"] == "ldm" and meta["duplication"] == "high"
    assert set(meta["weights"]) == {"unet", "vae"}
    assert meta["n_records"] == int(result.counts.sum()) and meta["scale_factor"] > 0
    with open(tmp / "ldm" / "duplication.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["copies"]) for r in rows] == result.counts.tolist()
    assert meta["steps"] == 2 * -(-int(result.counts.sum()) // config.unet.batch_size)
    for name in ("ldm_epoch001.png", "ldm_epoch002.png", "ldm_final.png"):
        assert (tmp / "ldm" / "grids" / name).is_file()
    assert (tmp / "ldm" / "history.csv").read_text().count("\n") == 3


def test_sampling_is_deterministic_and_independent_of_batch_size(trained):
    tmp, _, _ = trained
    a = sample(tmp / "ldm", tmp / "s1", n=5, seed=7, batch_size=2, device="cpu", progress=False)
    b = sample(tmp / "ldm", tmp / "s2", n=5, seed=7, batch_size=5, device="cpu", progress=False)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    model = load_ldm(tmp / "ldm")
    x = model.sample([0, 1], seed=7)
    assert x.shape == (2, 16, 16) and x.min() >= 0 and x.max() <= 1
    assert np.abs(x - model.sample([0, 1], seed=8)).max() > 1e-3
    assert (tmp / "s1" / "manifest.csv").read_text().count("\n") == 6
    per = sample(tmp / "ldm", tmp / "s3", per_record=2, device="cpu", progress=False)
    assert len(per) == 16  # 8 training images x 2
    with pytest.raises(FileExistsError, match="another model or seed"):
        sample(tmp / "ldm", tmp / "s1", n=5, seed=8, device="cpu", progress=False)
    with pytest.raises(ValueError, match="exactly one"):
        sample(tmp / "ldm", tmp / "s4", n=2, per_record=1, device="cpu", progress=False)


def test_resume_continues_exactly_where_an_interrupted_run_stopped(tmp_path, image_dir):
    config = tiny_config(unet_epochs=3)
    train_vae([image_dir], tmp_path / "vae", tiny_config(vae_epochs=1), device="cpu", progress=False)
    full = train_ldm([image_dir], tmp_path / "vae", tmp_path / "full", unet_overrides={"epochs": 3},
                     device="cpu", progress=False)
    # "Interrupted" after one epoch (a step budget), then resumed to three.
    train_ldm([image_dir], tmp_path / "vae", tmp_path / "part", unet_overrides={"epochs": 3},
              max_steps=2, device="cpu", progress=False)
    resumed = train_ldm([image_dir], tmp_path / "vae", tmp_path / "part", unet_overrides={"epochs": 3},
                        resume=True, device="cpu", progress=False)
    assert resumed.loop.steps == full.loop.steps == 6
    a, b = load_ldm(tmp_path / "full"), load_ldm(tmp_path / "part")
    for (k, v), w in zip(a.unet.state_dict().items(), b.unet.state_dict().values()):
        assert torch.allclose(v, w, atol=1e-6), k
    with pytest.raises(ValueError, match="other settings or data"):
        train_ldm([image_dir], tmp_path / "vae", tmp_path / "part", duplication="low", resume=True,
                  device="cpu", progress=False)
    assert config.unet.epochs == 3


def test_bad_folders_are_named(tmp_path, trained, image_dir):
    tmp, _, _ = trained
    with pytest.raises(ModelFolderError, match="not a 'vae' one"):
        load_vae(tmp / "ldm")
    with pytest.raises(ModelFolderError, match="no config.json"):
        load_ldm(image_dir)
    weights = tmp / "ldm" / "unet.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(ModelFolderError, match="checksum mismatch"):
        load_ldm(tmp / "ldm")
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train_vae([image_dir], tmp / "fresh", tiny_config(), resume=True, device="cpu", progress=False)


def test_load_folder_scales_each_image_to_unit_range(image_dir):
    images, ids = load_folder([image_dir], 16)
    assert images.shape == (8, 16, 16) and ids[0] == "img0.png"
    assert images.min() == 0.0 and images.max() == 1.0
