"""A tiny random model folder and a few images for the model tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepssim.model import Embedder, ModelConfig, Preprocess, save_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model")
    net = Embedder(ModelConfig(backbone="small", width=8, embedding_dim=16))
    # A few training-mode passes so that BatchNorm statistics are not the defaults.
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(8, 3, 32, 32))
    save_model(folder, net.eval(), Preprocess(size=32), {"preset": "test"})
    return folder


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    for k in range(5):
        image = (rng.random((40 + 4 * k, 36)) * 255).astype(np.uint8)
        Image.fromarray(image).save(root / ("sub" if k % 2 else ".") / f"img{k}.png")
    return root
