"""A few images for the model tests (the tiny model folder is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image



@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    for k in range(5):
        image = (rng.random((40 + 4 * k, 36)) * 255).astype(np.uint8)
        Image.fromarray(image).save(root / ("sub" if k % 2 else ".") / f"img{k}.png")
    return root
