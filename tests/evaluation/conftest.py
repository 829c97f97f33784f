"""A tiny memorization benchmark (32 px, built by the project's builder) for the harness tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage


@pytest.fixture(scope="session")
def tiny_bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``build_benchmark`` on 30 subjects x 2 smooth random images: 30 train, 24 synthetic,
    about 120 labelled pairs of 32 x 32 images with all three classes."""
    from deepssim.benchmark import build_benchmark

    rng = np.random.default_rng(0)
    images = tmp_path_factory.mktemp("real")
    for s in range(30):
        for k in range(2):
            field = ndimage.gaussian_filter(rng.standard_normal((40, 44)), 2.0)
            field = (field - field.min()) / (field.max() - field.min()) * 255
            Image.fromarray(field.astype(np.uint8)).save(images / f"subj{s:02d}_{k}.png")
    out = tmp_path_factory.mktemp("bench") / "bench"
    build_benchmark([images], out, n_train=30, n_synthetic=24, size=32, group_by=r"subj(\d+)_",
                    seed=3, progress=False)
    return out
