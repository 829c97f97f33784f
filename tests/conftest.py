"""Shared fixtures: the real data in ../shared/data (read in place, never copied)."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder, or skip when this checkout has none beside it."""
    if not DATA.is_dir():
        pytest.skip(f"{DATA} not found: the real-data tests need ../shared/data")
    return DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 'small' embedder (width 8, 16-d) at 32 px, saved as a model folder."""
    import torch

    from deepssim.model import Embedder, ModelConfig, Preprocess, save_model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model")
    net = Embedder(ModelConfig(backbone="small", width=8, embedding_dim=16))
    # A few training-mode passes so that BatchNorm statistics are not the defaults.
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(8, 3, 32, 32))
    save_model(folder, net.eval(), Preprocess(size=32), {"preset": "test"})
    return folder
