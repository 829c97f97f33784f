"""The nuisance a memorization audit must see through: flips, a small rotation, a gamma change.

The DeepSSIM paper's set of structure-preserving perturbations, each applied with its own
probability. Training perturbs each side of a pair after its target is fixed (the embedder must
map a perturbed image close to the clean one), benchmarks perturb their synthetic images with
it, and verification searches over it to undo it.

Parameters are drawn in one place (``draw_params``, from a torch or a numpy generator) and
applied in one place (``apply_params``, torch, batched); ``Perturb`` and ``perturb_image`` are
thin wrappers around the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PerturbConfig:
    """Probabilities and ranges of the perturbations (paper preset: p = 0.33 each)."""

    p_flip0: float = 0.33
    p_flip1: float = 0.33
    p_rotate: float = 0.33
    max_degrees: float = 10.0
    p_gamma: float = 0.33
    gamma_range: tuple[float, float] = (0.5, 1.5)

    def __post_init__(self) -> None:
        for name in ("p_flip0", "p_flip1", "p_rotate", "p_gamma"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"PerturbConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.max_degrees < 0:
            raise ValueError(f"PerturbConfig.max_degrees must be >= 0, got {self.max_degrees}")
        lo, hi = self.gamma_range
        if not 0 < lo <= hi:
            raise ValueError(f"PerturbConfig.gamma_range needs 0 < low <= high, got {self.gamma_range}")


@dataclass(frozen=True)
class PerturbParams:
    """Per-sample perturbations: flips, rotation angle in degrees (0: none; positive is
    counter-clockwise as displayed) and gamma exponent (1: none), each of shape (B,)."""

    flip0: np.ndarray
    flip1: np.ndarray
    degrees: np.ndarray
    gamma: np.ndarray

    def __len__(self) -> int:
        return len(self.flip0)

    def __getitem__(self, index: int | slice | np.ndarray) -> PerturbParams:
        """The parameters of some samples (an int keeps a batch of one)."""
        index = [index] if isinstance(index, (int, np.integer)) else index
        return PerturbParams(self.flip0[index], self.flip1[index], self.degrees[index], self.gamma[index])


PAPER_PERTURB = PerturbConfig(p_flip0=0.33, p_flip1=0.33, p_rotate=0.33, max_degrees=10.0,
                              p_gamma=0.33, gamma_range=(0.5, 1.5))
"""The paper's training perturbation: each change with probability 0.33."""
BENCHMARK_PERTURB = PerturbConfig(p_flip0=0.8, p_flip1=0.8, p_rotate=0.8, max_degrees=10.0,
                                  p_gamma=0.8, gamma_range=(0.5, 1.5))
"""The benchmark protocol's perturbation of ``synthetic/``: each change with probability 0.8."""

_N_UNIFORMS = 6  # per sample: 4 coin flips, one angle, one gamma


def params_from_uniforms(config: PerturbConfig, u: np.ndarray) -> PerturbParams:
    """Map (B, 6) uniforms in [0, 1) to parameters: the one definition of the distribution."""
    u = np.asarray(u, dtype=np.float64)
    rotate = u[:, 2] < config.p_rotate
    use_gamma = u[:, 4] < config.p_gamma
    lo, hi = config.gamma_range
    return PerturbParams(
        flip0=u[:, 0] < config.p_flip0,
        flip1=u[:, 1] < config.p_flip1,
        degrees=np.where(rotate, (2.0 * u[:, 3] - 1.0) * config.max_degrees, 0.0),
        gamma=np.where(use_gamma, lo + (hi - lo) * u[:, 5], 1.0),
    )


def draw_params(
    config: PerturbConfig, n: int, generator: torch.Generator | np.random.Generator
) -> PerturbParams:
    """Parameters of ``n`` samples, drawn from a torch or numpy generator (deterministic)."""
    if isinstance(generator, np.random.Generator):
        u = generator.random((n, _N_UNIFORMS))
    else:
        u = torch.rand((n, _N_UNIFORMS), generator=generator, dtype=torch.float64, device=generator.device)
        u = u.cpu().numpy()
    return params_from_uniforms(config, u)


def _flip(x: torch.Tensor, mask: np.ndarray, dim: int) -> torch.Tensor:
    if not mask.any():
        return x
    keep = torch.as_tensor(mask, device=x.device).view(-1, 1, 1)
    return torch.where(keep, x.flip(dim), x)


def _rotate(x: torch.Tensor, degrees: np.ndarray) -> torch.Tensor:
    """Rotate the samples with a non-zero angle (bilinear, border values outside); the others
    are passed through untouched, so angle 0 is exactly the identity."""
    moved = np.flatnonzero(degrees != 0)
    if not len(moved):
        return x
    _, h, w = x.shape
    # One sampling grid per distinct angle (a verification grid repeats a few angles many times).
    angles, which = np.unique(degrees[moved], return_inverse=True)
    if len(angles) == len(moved):  # all distinct (training): no gather, in sample order
        angles, which = degrees[moved], None
    theta = torch.as_tensor(np.deg2rad(angles), dtype=x.dtype, device=x.device)
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(theta)
    # affine_grid maps each output point (x, y) to the input point it samples, in [-1, 1]
    # coordinates per axis; h / w and w / h keep the rotation rigid in pixels for non-square
    # images. With rows growing downwards this turns the image counter-clockwise as displayed,
    # like scipy.ndimage.rotate and np.rot90.
    matrix = torch.stack(
        [torch.stack([cos, -sin * h / w, zero], 1), torch.stack([sin * w / h, cos, zero], 1)], 1
    )
    idx = torch.as_tensor(moved, device=x.device)
    batch = x[idx].unsqueeze(1)
    grid = F.affine_grid(matrix, [len(angles), 1, h, w], align_corners=False)
    if which is not None:
        grid = grid[torch.as_tensor(which.ravel(), device=x.device)]
    rotated = F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = x.clone()
    out[idx] = rotated.squeeze(1)
    return out


def _gamma(x: torch.Tensor, gamma: np.ndarray) -> torch.Tensor:
    """``u ** gamma`` of each image min-max normalised to u in [0, 1], mapped back to its own
    range: min and max stay, only the intensity curve changes (z-scoring cannot undo it)."""
    changed = np.flatnonzero(gamma != 1.0)
    if not len(changed):
        return x
    idx = torch.as_tensor(changed, device=x.device)
    part = x[idx]
    lo = part.amin(dim=(1, 2), keepdim=True)
    span = part.amax(dim=(1, 2), keepdim=True) - lo
    safe = torch.where(span > 0, span, torch.ones_like(span))  # constant images stay constant
    g = torch.as_tensor(gamma[changed], dtype=x.dtype, device=x.device).view(-1, 1, 1)
    u = ((part - lo) / safe).clamp(0.0, 1.0)
    out = x.clone()
    out[idx] = torch.where(span > 0, lo + u.pow(g) * span, part)
    return out


def apply_params(x: torch.Tensor, params: PerturbParams) -> torch.Tensor:
    """Flip axis 0, flip axis 1, rotate, then gamma, per sample; (B, H, W) or (B, 1, H, W)."""
    if x.ndim == 4 and x.shape[1] == 1:
        return apply_params(x[:, 0], params).unsqueeze(1)
    if x.ndim != 3:
        raise ValueError(f"expected a (B, H, W) or (B, 1, H, W) batch, got shape {tuple(x.shape)}")
    if len(params) != x.shape[0]:
        raise ValueError(f"{len(params)} parameter sets for a batch of {x.shape[0]}")
    x = _flip(x, params.flip0, dim=1)
    x = _flip(x, params.flip1, dim=2)
    return _gamma(_rotate(x, params.degrees), params.gamma)


class Perturb:
    """Random structure-preserving perturbations of a batch, each sample drawn independently."""

    def __init__(self, config: PerturbConfig = PerturbConfig()) -> None:
        self.config = config

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A perturbed copy of ``x`` (same shape and dtype); deterministic given ``generator``."""
        return apply_params(x, draw_params(self.config, x.shape[0], generator))

    def __repr__(self) -> str:
        return f"Perturb({self.config})"


def apply_to_image(image: np.ndarray, params: PerturbParams) -> np.ndarray:
    """``apply_params`` for one 2D numpy image and one parameter set; float32 out."""
    if len(params) != 1:
        raise ValueError(f"one image needs one parameter set, got {len(params)}")
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {tuple(x.shape)}")
    return apply_params(x.unsqueeze(0), params)[0].numpy()


def perturb_image(image: np.ndarray, config: PerturbConfig, rng: np.random.Generator) -> np.ndarray:
    """One randomly perturbed copy of a 2D image (float32); deterministic given ``rng``."""
    return apply_to_image(image, draw_params(config, 1, rng))


__all__ = [
    "BENCHMARK_PERTURB",
    "PAPER_PERTURB",
    "Perturb",
    "PerturbConfig",
    "PerturbParams",
    "apply_params",
    "apply_to_image",
    "draw_params",
    "params_from_uniforms",
    "perturb_image",
]
