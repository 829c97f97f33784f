"""The one preprocessing contract of a DeepSSIM model, recorded in its checkpoint.

Two steps, shared by training and embedding so that they cannot drift apart:

1. ``Preprocess.resize`` (numpy, per image): grayscale float32 -> ``size x size``. Policy
   ``stretch`` resizes each axis independently (bilinear, anti-aliased when shrinking);
   ``pad`` keeps the aspect ratio and pads the short side with the image's minimum first.
   SSIM targets are computed on these resized images, perturbations are applied to them.
2. ``Preprocess.normalize`` (torch, per batch): per-image intensity normalisation, then the
   grayscale channel repeated to ``channels``. ``zscore`` is the paper's ``(x - mean) / std``;
   ``rank`` first maps each pixel to the fraction of the image's pixels in its intensity bin or
   below (histogram equalisation over ``RANK_BINS`` bins between the image's min and max),
   which makes the input invariant, up to that binning, to any monotonic intensity change
   such as a gamma curve, then z-scores that.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from .settings import built, checked_fields

RANK_BINS = 4096
"""Intensity bins of the ``rank`` normalisation (a histogram is O(pixels); a sort is not)."""
MIN_SIZE = 16
"""The smallest image side a model takes."""
ResizePolicy = Literal["stretch", "pad"]
Intensity = Literal["zscore", "rank"]


@dataclass(frozen=True)
class Preprocess:
    """How images become network input (see module docstring)."""

    size: int = 128
    resize_policy: ResizePolicy = "stretch"
    intensity: Intensity = "zscore"
    channels: int = 3

    def __post_init__(self) -> None:
        if self.size < MIN_SIZE:
            raise ValueError(f"Preprocess.size must be >= {MIN_SIZE}, got {self.size}")
        if self.resize_policy not in ("stretch", "pad"):
            raise ValueError(f"unknown resize policy {self.resize_policy!r}: stretch or pad")
        if self.intensity not in ("zscore", "rank"):
            raise ValueError(f"unknown intensity normalisation {self.intensity!r}: zscore or rank")
        if self.channels not in (1, 3):
            raise ValueError(f"Preprocess.channels must be 1 or 3, got {self.channels}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "preprocess") -> Preprocess:
        """The contract of a ``to_dict`` result; also one recorded with ``network_size`` unset
        (None). Raises ValueError for a network size, which this version does not apply, and
        naming the field (``where.field``) whose value is not of its type."""
        if not isinstance(data, dict):
            checked_fields(cls, data, where)  # raises: not an object
        data = dict(data)
        network_size = data.pop("network_size", None)
        if network_size is not None:
            raise ValueError(f"{where}.network_size {network_size}: the network runs on the images at "
                             "their size; train the model again without it")
        return built(cls, checked_fields(cls, data, where), where)

    def resize(self, image: np.ndarray) -> np.ndarray:
        """One 2D image as float32 ``size x size``."""
        arr = np.asarray(image, dtype=np.float32)
        if arr.ndim != 2:
            raise ValueError(f"expected a 2D grayscale image, got shape {arr.shape}")
        if self.resize_policy == "pad":
            h, w = arr.shape
            side = max(h, w)
            padded = np.full((side, side), arr.min(), dtype=np.float32)
            top, left = (side - h) // 2, (side - w) // 2
            padded[top : top + h, left : left + w] = arr
            arr = padded
        if arr.shape == (self.size, self.size):
            return arr.copy()
        resized = Image.fromarray(arr, mode="F").resize((self.size, self.size), Image.BILINEAR)
        return np.asarray(resized, dtype=np.float32)

    def resize_all(self, images: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """A stack (N, size, size) of resized images."""
        return np.stack([self.resize(im) for im in images]) if len(images) else np.empty(
            (0, self.size, self.size), np.float32
        )

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, S, S) or (B, 1, S, S) resized images -> (B, channels, S, S) network input."""
        x = batch.float()
        if x.ndim == 4:
            x = x[:, 0]
        if x.ndim != 3:
            raise ValueError(f"expected (B, S, S) or (B, 1, S, S) images, got {tuple(batch.shape)}")
        flat = x.reshape(x.shape[0], -1)
        if self.intensity == "rank":
            flat = _equalize(flat)
        mean = flat.mean(dim=1, keepdim=True)
        std = flat.std(dim=1, unbiased=False, keepdim=True)
        flat = (flat - mean) / torch.where(std > 0, std, torch.ones_like(std))
        out = flat.reshape(x.shape)[:, None]
        return out.expand(-1, self.channels, -1, -1).contiguous()


def _equalize(flat: torch.Tensor) -> torch.Tensor:
    """Per row: the fraction of the row's values in the same bin or a lower one."""
    b, n = flat.shape
    lo = flat.amin(dim=1, keepdim=True)
    span = (flat.amax(dim=1, keepdim=True) - lo).clamp(min=1e-12)
    bins = ((flat - lo) / span * (RANK_BINS - 1)).round().long()
    offsets = torch.arange(b, device=flat.device)[:, None] * RANK_BINS
    counts = torch.bincount((bins + offsets).ravel(), minlength=b * RANK_BINS)
    cdf = counts.reshape(b, RANK_BINS).cumsum(dim=1).float() / n
    return cdf.gather(1, bins)
