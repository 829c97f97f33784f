"""Metrics that compare embeddings: DeepSSIM, the Dar et al. contrastive baseline, SSCD, CLIP.

Each embeds every distinct image once and scores a pair by the cosine of the two
L2-normalised embeddings. Weights come from the user (``--model``, ``--weights``); a metric
whose weights are missing says what it needs and where to get it.
"""

from __future__ import annotations

import logging
import sys
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from ._prep import batches, unit_range
from .base import (
    Metric,
    MetricOptions,
    MetricUnavailable,
    MissingDependencyError,
    MissingWeightsError,
    check_pairs,
    unique_by_identity,
)

if TYPE_CHECKING:
    import torch

    from ...model import DeepSSIMModel

log = logging.getLogger(__name__)

SSCD_SIZE = 288
"""SSCD's evaluation resize (its README's ``Resize(288)``)."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def require_file(path: str | Path | None, metric: str, what: str, flag: str) -> Path:
    """``path`` as a Path, or MissingWeightsError saying what ``metric`` needs and how to pass it."""
    if path is None:
        raise MissingWeightsError(f"metric {metric!r} needs {what}: pass {flag}")
    path = Path(path)
    if not path.exists():
        raise MissingWeightsError(f"metric {metric!r} needs {what}, but {path} does not exist ({flag})")
    return path


class EmbeddingMetric(Metric):
    """Cosine of L2-normalised embeddings; each distinct image is embedded once."""

    scale = "cosine"

    @abstractmethod
    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalised float32 embeddings (N, D) of 2D images."""

    def embed_real(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings of the real side as the score needs them (``embed`` unless the model
        averages over joint flips)."""
        return self.embed(images)

    def embed_synthetic(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings of the synthetic side: (N, D), or (N, 4, D) for a flip-search model,
        whose score is the best cosine over the flips."""
        return self.embed(images)

    def pair_scores(self, real: np.ndarray, synthetic: np.ndarray) -> np.ndarray:
        """Scores of pairs from ``embed_real`` and ``embed_synthetic`` rows: the cosine, or the
        best over the synthetic side's flips (``flips.best_flip_scores``)."""
        from ...model.flips import best_flip_scores

        return best_flip_scores(real, synthetic)

    def score(self, real: Sequence[np.ndarray], synthetic: Sequence[np.ndarray]) -> np.ndarray:
        check_pairs(real, synthetic, same_shape=False)
        ua, ia = unique_by_identity(real)
        ub, ib = unique_by_identity(synthetic)
        ea, eb = self.embed_real(ua), self.embed_synthetic(ub)
        return np.asarray(self.pair_scores(ea[ia], eb[ib]), dtype=np.float64)


class _ModelFolderMetric(EmbeddingMetric):
    """An embedder saved as a deepssim model folder, used through ``deepssim.load_model``."""

    model: DeepSSIMModel

    def _load(self, path: Path) -> DeepSSIMModel:
        from ...model import load_model

        return load_model(path, device=self.options.device, trust_torchscript=self.options.trust_torchscript)

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        # None: the model's own rule, a bar for long runs only.
        return self.model.embed(images, batch_size=self.options.batch_size,
                                progress=None if self.options.progress else False)

    def embed_real(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self.model.embed_real(images, batch_size=self.options.batch_size,
                                     progress=None if self.options.progress else False)

    def embed_synthetic(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self.model.embed_synthetic(images, batch_size=self.options.batch_size,
                                       progress=None if self.options.progress else False)

    def pair_scores(self, real: np.ndarray, synthetic: np.ndarray) -> np.ndarray:
        return self.model.pair_scores(real, synthetic)


class DeepSSIMMetric(_ModelFolderMetric):
    """DeepSSIM: the cosine of the model's embeddings, trained to equal the SSIM of the
    pair as if aligned (so on the SSIM scale)."""

    name = "deepssim"
    scale = "ssim"
    summary = "DeepSSIM model (--model): cosine of embeddings trained to match SSIM"

    def __init__(self, options: MetricOptions = MetricOptions()) -> None:
        super().__init__(options)
        path = require_file(options.model, self.name, "a DeepSSIM model folder (deepssim train)",
                            "--model MODEL")
        self.model = self._load(path)


class DarMetric(_ModelFolderMetric):
    """The contrastive ResNet of Dar et al. (Nature BME 2025), retrained on the benchmark's
    ``train/`` by ``deepssim baseline train-dar``: cosine of its embeddings."""

    name = "dar"
    takes_weights = True
    summary = "contrastive ResNet of Dar et al. (--weights MODEL_DIR from baseline train-dar)"

    def __init__(self, options: MetricOptions = MetricOptions()) -> None:
        from ..dar import BASELINE

        super().__init__(options)
        path = require_file(options.weights, self.name,
                            "a model folder written by 'deepssim baseline train-dar'",
                            "--weights [dar=]MODEL_DIR")
        self.model = self._load(path)
        if self.model.config.get("baseline") != BASELINE:
            raise ValueError(f"{path}: not a Dar baseline model (train one with "
                             "'deepssim baseline train-dar --images train/ --out MODEL_DIR')")


class _NetworkMetric(EmbeddingMetric):
    """A torch image encoder fed (B, 3, S, S) batches made by ``_tensor``."""

    def _device(self) -> torch.device:
        from ...refssim import resolve_device

        return resolve_device(self.options.device)

    @abstractmethod
    def _tensor(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Network input of a batch of 2D images."""

    @abstractmethod
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, D) of a batch of network input."""

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        chunks = []
        parts = list(batches(len(images), max(1, self.options.batch_size)))
        for part in tqdm(parts, desc=f"embed ({self.name})", unit="batch", file=sys.stderr,
                         disable=not self.options.progress):
            with torch.no_grad():
                out = self._forward(self._tensor(images[part]).to(self.device))
            chunks.append(F.normalize(out.float().flatten(1), dim=1).cpu().numpy())
        return np.concatenate(chunks) if chunks else np.empty((0, 0), dtype=np.float32)


class SSCDMetric(_NetworkMetric):
    """SSCD (Pizzi et al. 2022), the copy-detection descriptor used by the UMS baseline, from
    the user's TorchScript file (e.g. ``sscd_disc_mixup.torchscript.pt`` of
    facebookresearch/sscd-copy-detection). Each image is min-max scaled to [0, 1], resized to
    288 x 288, repeated to three channels and normalised with the ImageNet mean and standard
    deviation (the reference code divides by the mean instead)."""

    name = "sscd"
    takes_weights = True
    summary = "SSCD copy-detection descriptor (--weights TorchScript file)"

    def __init__(self, options: MetricOptions = MetricOptions()) -> None:
        import torch

        super().__init__(options)
        path = require_file(options.weights, self.name,
                            "the SSCD TorchScript file (e.g. sscd_disc_mixup.torchscript.pt from "
                            "github.com/facebookresearch/sscd-copy-detection)", "--weights [sscd=]FILE")
        if not options.trust_torchscript:
            raise MetricUnavailable(f"metric 'sscd': {path} is a TorchScript file, which can execute "
                                    "code when loaded; pass --trust-torchscript if you trust it")
        self.device = self._device()
        try:
            self.network = torch.jit.load(str(path), map_location=self.device).eval()
        except RuntimeError as exc:
            raise ValueError(f"{path}: not a TorchScript model ({str(exc).splitlines()[0]})") from None
        self._mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def _tensor(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.stack([unit_range(im) for im in images]))[:, None]
        x = F.interpolate(x, size=(SSCD_SIZE, SSCD_SIZE), mode="bilinear", antialias=True,
                          align_corners=False)
        return (x.expand(-1, 3, -1, -1) - self._mean) / self._std

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


class CLIPMetric(_NetworkMetric):
    """CLIP image embeddings (open_clip) from the user's checkpoint, as SemDeDup compares
    images; the architecture is ``MetricOptions.clip_arch`` (``--clip-arch``). Each image
    is min-max scaled to 8 bits, made RGB and passed through the model's own preprocessing."""

    name = "clip"
    takes_weights = True
    summary = "CLIP image embeddings (open_clip; --weights checkpoint, --clip-arch NAME)"

    def __init__(self, options: MetricOptions = MetricOptions()) -> None:
        super().__init__(options)
        path = require_file(options.weights, self.name,
                            f"an open_clip checkpoint file for architecture {options.clip_arch} "
                            "(--clip-arch)", "--weights [clip=]FILE")
        try:
            import open_clip
        except ImportError:
            raise MissingDependencyError(
                "metric 'clip' needs open_clip: pip install 'deepssim[clip]' (open_clip_torch)") from None
        self.device = self._device()
        try:
            model, _, self._preprocess = open_clip.create_model_and_transforms(
                options.clip_arch, pretrained=str(path), device=self.device)
        except RuntimeError as exc:
            raise ValueError(f"{path}: not an open_clip checkpoint of {options.clip_arch} "
                             f"({str(exc).splitlines()[0]})") from None
        self.network = model.eval()

    def _tensor(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        import torch
        from PIL import Image

        pil = [Image.fromarray(np.round(unit_range(im) * 255).astype(np.uint8)).convert("RGB")
               for im in images]
        return torch.stack([self._preprocess(p) for p in pil])

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.encode_image(x)
