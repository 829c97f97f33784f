"""One training step: the batch's images perturbed (and flipped), the network on them, the
loss of the sampled pairs, the in-batch pairs and the copy partners; the optimiser's groups
and learning-rate schedule."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..model.flips import FLIPS, flip_each
from ..model.network import Embedder
from ..model.preprocess import Preprocess
from ..transforms.perturb import Perturb
from .blocks import BlockTargets, CopyPartners
from .config import TrainConfig
from .pairs import PairSet

log = logging.getLogger(__name__)


def perturbed_batch(
    images: np.ndarray, index: np.ndarray, perturb: Perturb | None,
    generator: torch.Generator | None, device: torch.device,
) -> torch.Tensor:
    """images[index] as a (B, S, S) tensor on ``device``, each perturbed independently."""
    x = torch.from_numpy(images[index]).to(device)
    return x if perturb is None else perturb(x, generator)


def network_input(preprocess: Preprocess, batch: torch.Tensor) -> torch.Tensor:
    """The network input (channels-last) of a batch of resized images."""
    return preprocess.normalize(batch).contiguous(memory_format=torch.channels_last)


def embed_images(
    network: Embedder, preprocess: Preprocess, images: np.ndarray, index: np.ndarray,
    perturb: Perturb | None, generator: torch.Generator | None, device: torch.device,
) -> torch.Tensor:
    """Embeddings of images[index], each perturbed independently."""
    return network(network_input(preprocess, perturbed_batch(images, index, perturb, generator, device)))


class StepNetwork:
    """Normalisation and network as the training steps call them: embeddings of a batch of
    perturbed images, the network under bfloat16 autocast when ``amp`` (the perturbations and
    the normalisation stay float32).

    With ``compile``, both go through ``torch.compile`` for batches of ``full`` images; other
    batch sizes run eagerly (same weights) instead of compiling again. The compilation is done
    and checked here, before training starts (see ``_compile``); if it fails, the run is
    told once and trains eagerly: the same training up to rounding, only slower. (A failure
    that only the network's own first step would meet, after the copy compiled, is not
    caught: it stops the run.)
    """

    def __init__(self, network: Embedder, preprocess: Preprocess, *, compile: bool, full: int,
                 amp: bool, device: torch.device) -> None:
        self.network, self.preprocess, self.full = network, preprocess, full
        self.amp, self.device = amp, device
        self.compiled = self._compile() if compile else None

    def _run(self, normalize: Callable[..., torch.Tensor], network: Callable[..., torch.Tensor],
             batch: torch.Tensor) -> torch.Tensor:
        x = normalize(self.preprocess, batch)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return network(x)

    def _compile(self) -> tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]] | None:
        """The compiled functions, after one forward and backward pass of a copy of the network
        on a dummy batch: Inductor compiles both passes there (about a minute the first time on
        a machine; it caches the result, so the network's own first step takes seconds), and a
        failure at any point leaves the network, its optimiser and every random state as they
        were. None if compiling fails."""
        t0 = time.perf_counter()
        log.info("torch.compile: compiling the training step (about a minute the first time)")
        size = self.preprocess.size
        try:
            normalize = torch.compile(network_input, dynamic=False)
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                probe = torch.compile(copy.deepcopy(self.network).train(), dynamic=False)
                dummy = torch.rand((self.full, size, size), generator=torch.Generator().manual_seed(0))
                self._run(normalize, probe, dummy.to(self.device)).float().sum().backward()
            compiled = (normalize, torch.compile(self.network, dynamic=False))
        except Exception as exc:  # no C++ compiler, an unsupported Python or platform, a bug
            cause = getattr(exc, "inner_exception", None) or exc
            text = str(cause).strip().splitlines()
            log.warning("torch.compile failed (%s%s); training continues uncompiled (the same "
                        "training up to rounding, slower)", type(cause).__name__, f": {text[0]}" if text else "")
            log.debug("torch.compile failure", exc_info=True)
            return None
        log.info("torch.compile: ready in %.1f s", time.perf_counter() - t0)
        return compiled

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if self.compiled is None or batch.shape[0] != self.full:
            return self._run(network_input, self.network, batch)
        return self._run(*self.compiled, batch)


def step_loss(
    step_network: StepNetwork, config: TrainConfig, pairs: PairSet, batch: np.ndarray,
    blocks: BlockTargets | None, partners: CopyPartners | None, perturb: Perturb,
    generator: torch.Generator, device: torch.device,
) -> torch.Tensor:
    """The loss of one batch of sampled pairs (indices into ``pairs``): the MSE of their
    cosines against their targets, and, with in-batch pairs, the mean of that and of the
    in-batch pairs' and copy partners' MSEs. Draws from ``generator`` in a fixed order
    (perturbations, flips, the in-batch subset), which a run's random stream depends on."""
    index = np.concatenate([pairs.a[batch], pairs.b[batch]])
    x = perturbed_batch(pairs.images, index, perturb, generator, device)
    codes = pair_flips(len(batch), config.flip_pairs, generator)
    if codes is not None:
        x = flip_each(x, codes)
    emb = step_network(x)
    half = len(batch)
    scores = (emb[:half] * emb[half:]).sum(dim=1)
    target = torch.from_numpy(pairs.target[batch]).to(device)
    loss = torch.nn.functional.mse_loss(scores.float(), target)
    extra_losses = []
    if blocks is not None:
        first, second = capped(*blocks.pairs_in_batch(index), config.in_batch_pairs * len(index), generator)
        if len(first):
            extra = blocks.target(index[first], index[second],
                                  None if codes is None else codes[first] ^ codes[second])
            extra_losses.append(_pair_mse(emb, first, second, extra))
    if partners is not None:
        near, copies, near_target = partners.pairs_in_batch(index, codes)
        if len(near):
            extra_losses.append(_pair_mse(emb, near, copies, near_target))
    if extra_losses:
        # Equal weight to the sampled pairs (copies, stratified) and the in-batch ones, which
        # are mostly unrelated images: neither regime drowns the other. Within the in-batch
        # half, the copies' look-alike partners (a few hundred pairs a step) weigh as much as
        # the thousands of block pairs.
        loss = 0.5 * (loss + sum(extra_losses) / len(extra_losses))
    return loss


def capped(
    first: np.ndarray, second: np.ndarray, cap: int, generator: torch.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``cap`` of the pairs (first[k], second[k]): a random subset, in their order."""
    if len(first) <= cap:
        return first, second
    keep = np.sort(torch.randperm(len(first), generator=generator)[:cap].numpy())
    return first[keep], second[keep]


def pair_flips(n: int, p: float, generator: torch.Generator) -> np.ndarray | None:
    """Flip codes (``FLIPS`` indices) of a batch's 2n positions, sampled pairs (k, n + k) both
    flipped by the same code: with probability ``p`` one of the three flips, else none.
    None when ``p`` is 0 (no draws, so runs without flips keep their random streams)."""
    if not p:
        return None
    flip = torch.rand(n, generator=generator) < p
    code = torch.randint(1, len(FLIPS), (n,), generator=generator)
    codes = torch.where(flip, code, 0).numpy()
    return np.concatenate([codes, codes])


def _pair_mse(emb: torch.Tensor, first: np.ndarray, second: np.ndarray, target: np.ndarray) -> torch.Tensor:
    """MSE of the cosines of a batch's positions (first[k], second[k]) against their targets."""
    scores = (emb[first] * emb[second]).sum(dim=1).float()
    return torch.nn.functional.mse_loss(scores, torch.from_numpy(target).float().to(emb.device))


def param_groups(network: Embedder, config: TrainConfig) -> list[dict[str, Any]]:
    """One group, or layer-wise decayed learning rates: head, stage 4, ..., stage 1, stem."""
    if config.layer_decay is None:
        return [{"params": [p for p in network.parameters() if p.requires_grad], "lr": config.lr}]
    layers = [[*network.head.parameters(), *network.pools.parameters()]]
    layers += [list(stage.parameters()) for stage in reversed(network.stages)]
    layers.append(list(network.stem.parameters()))
    return [
        {"params": [p for p in params if p.requires_grad], "lr": config.lr * config.layer_decay**depth}
        for depth, params in enumerate(layers)
        if any(p.requires_grad for p in params)
    ]


def lr_factor(progress: float, warmup: float) -> float:
    """Linear warm-up, then cosine decay to 2% of the base rate; ``progress`` in [0, 1]."""
    if progress < warmup:
        return max(progress / warmup, 1e-3)
    t = (progress - warmup) / max(1e-9, 1.0 - warmup)
    return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (True where the build cannot say)."""
    try:  # a private oneDNN query
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True
