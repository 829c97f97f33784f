"""The preprocessing contract shared by training and embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepssim.model import Preprocess


def test_resize_policies() -> None:
    image = np.arange(20 * 40, dtype=np.float32).reshape(20, 40)
    stretched = Preprocess(size=32).resize(image)
    assert stretched.shape == (32, 32) and stretched.dtype == np.float32
    padded = Preprocess(size=32, resize_policy="pad").resize(image)
    assert padded.shape == (32, 32)
    # The padding (image minimum) fills the top and bottom quarters.
    assert np.allclose(padded[:6], image.min())
    assert Preprocess(size=40, resize_policy="pad").resize(image)[10:30].std() > 0
    same = Preprocess(size=16).resize(np.ones((16, 16)))
    assert np.array_equal(same, np.ones((16, 16), np.float32))


def test_zscore_normalisation_matches_the_paper() -> None:
    rng = np.random.default_rng(0)
    batch = torch.from_numpy(rng.random((3, 16, 16)).astype(np.float32)) * 100 + 7
    out = Preprocess(size=16).normalize(batch)
    assert out.shape == (3, 3, 16, 16)
    x = batch[1].double()
    want = (x - x.mean()) / x.std(unbiased=False)
    torch.testing.assert_close(out[1, 2].double(), want, atol=1e-5, rtol=0)
    assert torch.equal(out[:, 0], out[:, 1])
    flat = Preprocess(size=16).normalize(torch.full((1, 16, 16), 3.0))
    assert torch.count_nonzero(flat) == 0  # constant image: zeros, not NaN


def test_rank_normalisation_is_invariant_to_monotonic_changes() -> None:
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.random((2, 16, 16)).astype(np.float32))
    pre = Preprocess(size=16, intensity="rank", channels=1)
    # Invariant up to the intensity binning (RANK_BINS levels between min and max).
    torch.testing.assert_close(pre.normalize(x), pre.normalize(x**0.5 * 3 + 1), atol=0.03, rtol=0)
    torch.testing.assert_close(pre.normalize(x), pre.normalize(2 * x - 5), atol=1e-5, rtol=0)
    # Ties (a flat background) share one value.
    y = x.clone()
    y[:, :8] = 0.0
    out = pre.normalize(y)[:, 0]
    assert torch.unique(out[0, :8]).numel() == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"size": 8}, "size"), ({"resize_policy": "crop"}, "resize"), ({"intensity": "minmax"}, "intensity"),
     ({"channels": 2}, "channels")],
)
def test_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Preprocess(**kwargs)


def test_bad_images() -> None:
    with pytest.raises(ValueError, match="2D"):
        Preprocess(size=16).resize(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="expected"):
        Preprocess(size=16).normalize(torch.zeros(16))
