"""The histogram of best-match scores (PNG)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from deepssim.auditing.plots import write_histogram_png


def _scores() -> np.ndarray:
    return np.random.default_rng(0).beta(4, 3, 500)


def _png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    return image


def test_histogram_png_is_a_sane_png(tmp_path: Path) -> None:
    out = write_histogram_png(_scores(), (0.6, 0.85), tmp_path / "sub" / "hist.png")
    assert out == tmp_path / "sub" / "hist.png"
    image = _png(out.read_bytes())
    assert 400 <= image.width <= 2000 and 200 <= image.height <= 1200
    assert np.asarray(image.convert("L")).std() > 5  # something is drawn
    assert list(out.parent.iterdir()) == [out]  # no temp file left behind


def test_histogram_tolerates_empty_and_nonfinite_scores(tmp_path: Path) -> None:
    _png(write_histogram_png(np.array([]), (0.6, 0.85), tmp_path / "e.png").read_bytes())
    scores = np.array([np.nan, np.inf, 0.2, 0.9, -0.3])
    _png(write_histogram_png(scores, (0.6, 0.85), tmp_path / "n.png").read_bytes())
