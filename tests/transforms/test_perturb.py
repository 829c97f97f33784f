"""Structure-preserving perturbations: batched torch and single-image numpy versions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from deepssim.transforms.perturb import (
    Perturb,
    PerturbConfig,
    PerturbParams,
    apply_params,
    apply_to_image,
    draw_params,
    perturb_image,
)

OFF = PerturbConfig(p_flip0=0.0, p_flip1=0.0, p_rotate=0.0, p_gamma=0.0)


def _batch(b: int = 6, h: int = 24, w: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth, asymmetric test images with distinct ranges (no flip or rotation symmetry)."""
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.random((b, h, w)), (0, 2, 2))
    x = x * rng.uniform(1, 100, (b, 1, 1)) + rng.uniform(-50, 50, (b, 1, 1))
    return torch.from_numpy(x.astype(np.float32))


def _params(n: int, **kw: np.ndarray) -> PerturbParams:
    off = np.zeros(n, bool)
    base = {"flip0": off, "flip1": off, "degrees": np.zeros(n), "gamma": np.ones(n)}
    return PerturbParams(**{**base, **kw})


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", [(5, 20, 28), (5, 1, 20, 28)])
def test_shapes_and_dtype(shape: tuple[int, ...]) -> None:
    x = _batch(5, 20, 28).reshape(shape)
    y = Perturb(PerturbConfig(0.8, 0.8, 0.8, 10.0, 0.8))(x, _gen(0))
    assert y.shape == x.shape and y.dtype == x.dtype


def test_deterministic_given_generator() -> None:
    x = _batch(16)
    perturb = Perturb(PerturbConfig(0.5, 0.5, 0.5, 10.0, 0.5))
    torch.testing.assert_close(perturb(x, _gen(1)), perturb(x, _gen(1)), rtol=0, atol=0)
    assert not torch.equal(perturb(x, _gen(1)), perturb(x, _gen(2)))


def test_probability_zero_is_identity() -> None:
    x = _batch()
    assert torch.equal(Perturb(OFF)(x, _gen(0)), x)


@pytest.mark.parametrize(("p0", "p1", "dims"), [(1.0, 0.0, [1]), (0.0, 1.0, [2]), (1.0, 1.0, [1, 2])])
def test_flip_only_flips_exactly(p0: float, p1: float, dims: list[int]) -> None:
    x = _batch()
    config = PerturbConfig(p_flip0=p0, p_flip1=p1, p_rotate=0.0, p_gamma=0.0)
    assert torch.equal(Perturb(config)(x, _gen(0)), x.flip(dims))


def test_gamma_keeps_each_image_range() -> None:
    x = _batch(8)
    y = Perturb(PerturbConfig(p_flip0=0.0, p_flip1=0.0, p_rotate=0.0, p_gamma=1.0))(x, _gen(3))
    torch.testing.assert_close(y.amin(dim=(1, 2)), x.amin(dim=(1, 2)), rtol=0, atol=1e-4)
    torch.testing.assert_close(y.amax(dim=(1, 2)), x.amax(dim=(1, 2)), rtol=0, atol=1e-4)
    assert not torch.allclose(y, x)


def test_gamma_leaves_constant_images_alone() -> None:
    x = torch.full((2, 8, 8), 3.0)
    assert torch.equal(apply_params(x, _params(2, gamma=np.array([0.5, 1.5]))), x)


def test_rotation_by_zero_is_identity() -> None:
    x = _batch(2)
    # A vanishing angle still goes through affine_grid / grid_sample: the sampling grid must
    # land on pixel centres. An exact 0 skips the resampling altogether.
    y = apply_params(x, _params(2, degrees=np.array([1e-9, 0.0])))
    torch.testing.assert_close(y, x, rtol=0, atol=1e-5)
    assert torch.equal(y[1], x[1])


def test_rotation_matches_scipy_on_non_square_images() -> None:
    x = _batch(1, 40, 60)
    y = apply_params(x, _params(1, degrees=np.array([7.0])))[0].numpy()
    expected = ndimage.rotate(x[0].numpy(), 7.0, reshape=False, order=1, mode="nearest")
    # Same direction and centre; borders differ only in how outside values are extended.
    np.testing.assert_allclose(y[6:-6, 6:-6], expected[6:-6, 6:-6], atol=1e-4)


def test_parameters_follow_the_config() -> None:
    config = PerturbConfig(p_flip0=0.8, p_flip1=0.2, p_rotate=0.5, max_degrees=10.0, p_gamma=0.5)
    params = draw_params(config, 20_000, np.random.default_rng(0))
    assert params.flip0.mean() == pytest.approx(0.8, abs=0.02)
    assert params.flip1.mean() == pytest.approx(0.2, abs=0.02)
    assert (params.degrees != 0).mean() == pytest.approx(0.5, abs=0.02)
    assert np.abs(params.degrees).max() <= 10.0
    gammas = params.gamma[params.gamma != 1.0]
    assert gammas.min() >= 0.5 and gammas.max() <= 1.5


def test_batch_and_single_image_agree() -> None:
    x = _batch(10)
    config = PerturbConfig(0.5, 0.5, 0.5, 10.0, 0.5)
    params = draw_params(config, len(x), _gen(4))
    batch = apply_params(x, params)
    assert torch.equal(batch, Perturb(config)(x, _gen(4)))  # Perturb = draw + apply
    for i in range(len(x)):
        single = apply_to_image(x[i].numpy(), params[i])
        np.testing.assert_allclose(single, batch[i].numpy(), rtol=0, atol=1e-5)


def test_repeated_angles_agree_with_single_images() -> None:
    """A verification grid repeats a few angles (one sampling grid each) among flipped samples."""
    x = _batch(8)
    params = PerturbParams(np.array([0, 1, 0, 1, 1, 0, 0, 1], bool), np.array([0, 0, 1, 1, 0, 1, 0, 0], bool),
                           np.array([5.0, -5.0, 5.0, 0.0, -5.0, 10.0, 5.0, 0.0]), np.ones(8))
    batch = apply_params(x, params)
    for i in range(len(x)):
        np.testing.assert_allclose(apply_to_image(x[i].numpy(), params[i]), batch[i].numpy(), rtol=0, atol=1e-6)


def test_perturb_image_is_deterministic_given_rng() -> None:
    image = _batch(1)[0].numpy()
    config = PerturbConfig(0.8, 0.8, 0.8, 10.0, 0.8)
    first = perturb_image(image, config, np.random.default_rng(5))
    np.testing.assert_array_equal(first, perturb_image(image, config, np.random.default_rng(5)))
    expected = apply_to_image(image, draw_params(config, 1, np.random.default_rng(5)))
    np.testing.assert_array_equal(first, expected)
    assert first.shape == image.shape and first.dtype == np.float32


def test_bad_config_and_input_are_refused() -> None:
    with pytest.raises(ValueError, match="p_gamma"):
        PerturbConfig(p_gamma=1.5)
    with pytest.raises(ValueError, match="gamma_range"):
        PerturbConfig(gamma_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="batch"):
        Perturb()(torch.zeros(8, 8), _gen(0))
