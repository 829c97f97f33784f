"""Using a trained model: ``load_model``, ``DeepSSIMModel.embed``, ``score_pairs``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..refssim import resolve_device
from ..classes import REFERENCE_THRESHOLDS
from ..storage import sha256_file
from .checkpoint import ModelFolderError, load_network
from .flips import FLIPS, by_flip, flipped
from .preprocess import Preprocess
from .torchfile import mismatch
from .scoring import as_real, as_synthetic, pair_scores, rule, scoring_of

log = logging.getLogger(__name__)

TORCHSCRIPT_SIZE = 224
"""Input size assumed for the authors' TorchScript checkpoint (z-scored, 3 channels)."""
PROGRESS_MIN_IMAGES = 2000


class DeepSSIMModel:
    """A loaded embedder with its preprocessing and its scoring rule (``scoring.py``). The score
    of a pair is ``cos(embed(a), embed(b))`` for a ``cosine`` model; ``score_pairs``, the CSV
    scores and the audit apply the model's rule through ``embed_real``, ``embed_synthetic``
    and ``pair_scores``."""

    def __init__(
        self,
        network: nn.Module,
        preprocess: Preprocess,
        config: dict[str, Any],
        device: str | torch.device = "auto",
        checksum: str = "",
        path: str | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.path = path
        self.network = network.to(self.device).eval()
        # Channels-last convolutions: 1.3x the forward on the CPU, equal to float rounding.
        self._channels_last = self.device.type == "cpu" and not isinstance(network, torch.jit.ScriptModule)
        if self._channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)
        self.preprocess = preprocess
        self.config = config
        self.checksum = checksum
        self.thresholds: tuple[float, float] = tuple(config.get("thresholds", REFERENCE_THRESHOLDS.pair))  # type: ignore[assignment]
        self.scoring = scoring_of(config.get("model", {}))

    @property
    def scoring(self) -> str:
        """The scoring rule: ``cosine``, ``best-flip`` or ``cross-fit`` (settable, to score the
        same weights by another rule)."""
        return self._rule.name

    @scoring.setter
    def scoring(self, name: str) -> None:
        self._rule = rule(name)

    @property
    def flip_search(self) -> bool:
        """Whether the score is taken over the flips of the synthetic image."""
        return self._rule.search

    @property
    def joint_flips(self) -> bool:
        """Whether each cosine is the mean over the four flips of both images."""
        return self._rule.joint

    @property
    def cross_fit(self) -> bool:
        """Whether the synthetic image's relative flip is cross-fitted instead of the best."""
        return self._rule.cross_fit

    @torch.no_grad()
    def embed_batch(self, resized: np.ndarray, *, flips: bool = False) -> np.ndarray:
        """Embeddings (B, D) float32 of already resized images (B, S, S); (B, 4, D) with
        ``flips``: those of the four flips (``flips.FLIPS``) of each image."""
        return self._forward(self._prepare(resized), flips)

    def _prepare(self, resized: np.ndarray) -> torch.Tensor:
        # Normalised where the network runs: on a GPU the per-image rank normalisation would
        # otherwise cost the CPU about 1 ms an image, more than the network there.
        x = torch.from_numpy(np.ascontiguousarray(resized, dtype=np.float32)).to(self.device)
        return self.preprocess.normalize(x)

    @torch.no_grad()
    def _forward(self, x: torch.Tensor, flips: bool = False) -> np.ndarray:
        n = len(x)
        x = x.to(self.device)
        x = flipped(x) if flips else x
        if self._channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        out = torch.nn.functional.normalize(self.network(x).float(), dim=1)
        return (by_flip(out, n) if flips else out).cpu().numpy()

    def embed(
        self,
        images: Iterable[np.ndarray],
        *,
        batch_size: int = 64,
        progress: bool | None = None,
        total: int | None = None,
        flips: bool = False,
    ) -> np.ndarray:
        """L2-normalised float32 embeddings (N, D) of 2D images (any size, resized here);
        with ``flips``, (N, 4, D): those of each image's four flips (``flips.FLIPS``).

        Images are resized in a background thread while the network runs on the previous
        batch. Results do not depend on ``batch_size`` (eval mode).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if total is None and isinstance(images, Sequence):
            total = len(images)
        show = (total or 0) >= PROGRESS_MIN_IMAGES if progress is None else progress
        batches = (self._prepare(b) for b in _batches(iter(images), batch_size, self.preprocess.resize))
        chunks: list[np.ndarray] = []
        with tqdm(total=total, unit="img", desc="embed", disable=not show, file=sys.stderr) as bar:
            for x in _prefetch(batches):
                chunks.append(self._forward(x, flips))
                bar.update(len(x))
        if not chunks:
            dim = int(self.config.get("model", {}).get("embedding_dim", 0))
            return np.empty((0, len(FLIPS), dim) if flips else (0, dim), dtype=np.float32)
        return np.concatenate(chunks)

    def embed_real(self, images: Iterable[np.ndarray], **kwargs: Any) -> np.ndarray:
        """Embeddings of the first images of pairs (the real, training ones) as the score needs
        them (``scoring.as_real``): (N, D), or (N, 4 * D) for ``cross-fit``. Keywords as
        ``embed``."""
        return self.as_real(self.embed(images, flips=self.real_flips, **kwargs))

    def embed_synthetic(self, images: Iterable[np.ndarray], **kwargs: Any) -> np.ndarray:
        """Embeddings of the second images of pairs (the synthetic ones) as the score needs
        them (``scoring.as_synthetic``): (N, D), (N, 4, D) for ``best-flip``, (N, 4, 4 * D)
        for ``cross-fit``. Keywords as ``embed``."""
        return self.as_synthetic(self.embed(images, flips=self.synthetic_flips, **kwargs))

    def as_real(self, emb: np.ndarray) -> np.ndarray:
        """``embed_real``'s result from ``embed``'s (with ``flips=real_flips``)."""
        return as_real(self._rule, emb)

    def as_synthetic(self, emb: np.ndarray) -> np.ndarray:
        """``embed_synthetic``'s result from ``embed``'s (with ``flips=synthetic_flips``)."""
        return as_synthetic(self._rule, emb)

    @property
    def real_flips(self) -> bool:
        """Whether the real side is embedded with its four flips (``embed(flips=...)``)."""
        return self._rule.real_flips

    @property
    def synthetic_flips(self) -> bool:
        """Whether the synthetic side is embedded with its four flips."""
        return self._rule.synthetic_flips

    def pair_scores(self, real: np.ndarray, synthetic: np.ndarray) -> np.ndarray:
        """Scores of pairs from ``embed_real`` rows (P, ...) and ``embed_synthetic`` rows
        (P, ...): the model's rule (``scoring.pair_scores``)."""
        return pair_scores(self._rule, real, synthetic)

    def score(self, a: np.ndarray, b: np.ndarray) -> float:
        """DeepSSIM score of one pair: a real (training) image ``a``, a synthetic image ``b``
        (whose flips flip search tries)."""
        return float(score_pairs(self, [(a, b)])[0])


def _batches(
    images: Iterator[np.ndarray], size: int, resize: Callable[[np.ndarray], np.ndarray]
) -> Iterator[np.ndarray]:
    while True:
        batch = [resize(im) for _, im in zip(range(size), images)]
        if not batch:
            return
        yield np.stack(batch)


def _prefetch(batches: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """Yield the batches of ``batches`` while the next one is prepared in a worker thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(next, batches, None)
        while True:
            batch = pending.result()
            if batch is None:
                return
            pending = pool.submit(next, batches, None)
            yield batch


def load_model(
    path: str | Path, *, device: str | torch.device = "auto", trust_torchscript: bool = False
) -> DeepSSIMModel:
    """Load a deepssim model folder, or (only with ``trust_torchscript=True``) the authors'
    TorchScript file ``best_model_jit.pt``, which can run arbitrary code when loaded."""
    path = Path(path)
    if path.is_file() and path.suffix in (".pt", ".pth", ".jit"):
        if not trust_torchscript:
            raise ModelFolderError(
                f"{path}: a TorchScript file can execute code when loaded; pass "
                "--trust-torchscript (trust_torchscript=True) if you trust its source"
            )
        try:
            network = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as exc:  # truncated, damaged, or not TorchScript
            raise ModelFolderError(f"{path}: not a readable TorchScript model ({mismatch(exc)})") from None
        preprocess = Preprocess(size=TORCHSCRIPT_SIZE, intensity="zscore", channels=3)
        config = {"format": "torchscript", "path": str(path), "preprocess": preprocess.to_dict(),
                  "thresholds": list(REFERENCE_THRESHOLDS.pair)}
        log.warning("loaded TorchScript model %s (trusted by the caller)", path)
        return DeepSSIMModel(network, preprocess, config, device, sha256_file(path), str(path))
    network, preprocess, config = load_network(path)
    return DeepSSIMModel(network, preprocess, config, device, config.get("weights_sha256", ""), str(path))


def score_pairs(
    model: DeepSSIMModel,
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    batch_size: int = 64,
    progress: bool | None = None,
) -> np.ndarray:
    """DeepSSIM score of each ``(a, b)`` pair (a real, b synthetic), float32 (P,), by the
    model's scoring rule (``scoring.py``): the cosine of the embeddings, the best cosine over
    the four flips of b (``best-flip``), or the cross-fitted flip of b over joint flips of both
    images (``cross-fit``)."""
    if not pairs:
        return np.empty(0, dtype=np.float32)
    ea = model.embed_real([a for a, _ in pairs], batch_size=batch_size, progress=progress)
    eb = model.embed_synthetic([b for _, b in pairs], batch_size=batch_size, progress=progress)
    # Cosines of unit vectors: float rounding can step past 1.
    return np.clip(model.pair_scores(ea, eb), -1.0, 1.0).astype(np.float32)
