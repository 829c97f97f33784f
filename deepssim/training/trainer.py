"""Self-supervised DeepSSIM training: pairs with SSIM targets, perturbed sides, MSE on cosine.

The run writes into its output folder: the best model (``model.safetensors`` +
``config.json``), ``metrics.csv`` (one row per validation: every ``val_every`` epochs and when
training stops), TensorBoard events when the ``tensorboard`` package is installed, the cached
pair sets (``cache/``), and ``train_state.pt`` (weights, optimizer, schedule and random
states, saved after every epoch) for ``--resume``.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from ..model.checkpoint import ModelFolderError, load_network, save_model
from ..storage import atomic_write
from ..model.flips import FLIPS, best_flip_scores, by_flip, flip_each, flip_image, flipped, joint_scores
from ..model.network import DILATABLE, Embedder
from ..model.preprocess import Preprocess
from ..readers import fingerprint, load_stack
from ..refssim import resolve_device, ssim_pairs
from ..transforms.perturb import Perturb
from .blocks import BlockTargets, CopyPartners
from .pairs import PairSet, build_pairs, split_by_image
from .presets import TrainConfig

log = logging.getLogger(__name__)

STATE = "train_state.pt"
METRICS = "metrics.csv"
EVAL_SEED = 1234
"""Seed of the validation perturbations: every evaluation sees the same perturbed pairs."""


@dataclass
class TrainResult:
    """What a training run produced."""

    model_dir: Path
    best: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_by: str = "epochs"
    val_pairs: PairSet | None = None


def load_images(
    inputs: Sequence[str | Path], preprocess: Preprocess, progress: bool = False
) -> tuple[np.ndarray, list[str]]:
    """All images under ``inputs`` (folders or files, any readable format), resized.

    Raises:
        ReadError: naming every unreadable file, or when no image is found.
    """
    return load_stack(inputs, preprocess.resize, progress)


def split_groups(images: np.ndarray, val_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Train / validation indices, keeping byte-identical images on one side (real data sets
    hold exact duplicates; split apart they would leak validation images into training)."""
    keys = [hashlib.sha1(im.tobytes()).hexdigest() for im in images]
    groups: dict[str, list[int]] = {}
    for k, key in enumerate(keys):
        groups.setdefault(key, []).append(k)
    members = list(groups.values())
    train_groups, val_groups = split_by_image(len(members), val_fraction, rng)

    def images_of(chosen: np.ndarray) -> np.ndarray:
        return np.sort(np.concatenate([np.asarray(members[g]) for g in chosen] or [np.empty(0, int)]))

    train, val = images_of(train_groups), images_of(val_groups)
    if len(train) < 2 or len(val) < 2:
        raise ValueError(f"too few distinct images ({len(groups)}) to split into training and validation")
    return train, val


T = TypeVar("T", PairSet, BlockTargets, CopyPartners)


def _cached(cache: Path, what: str, key: dict[str, Any], kind: type[T], build: Callable[[], T]) -> T:
    """``build()`` once per data and settings (``key``): later runs and resumes load the file
    ``cache/<what>-<hash of key>.npz``; a damaged file is rebuilt, not trusted."""
    name = hashlib.sha256(repr(sorted(key.items())).encode()).hexdigest()[:16]
    path = cache / f"{what}-{name}.npz"
    if path.is_file():
        try:
            return kind.load(path)
        except Exception as exc:
            log.warning("%s: unreadable %s cache (%s), rebuilding", path, what, exc)
    made = build()
    cache.mkdir(parents=True, exist_ok=True)
    made.save(path)
    return made


def _check_cover(cache: Path, what: str, covered: int, n_inputs: int) -> None:
    """A cached table of per-input targets must cover the run's training inputs."""
    if covered != n_inputs:
        raise ValueError(f"{cache}: the {what} cover {covered} inputs, the training set has "
                         f"{n_inputs}; delete the cache folder and train again")


def _cached_pairs(
    cache: Path, key: dict[str, Any], images: np.ndarray, n_pairs: int, families: Sequence[str],
    config: TrainConfig, seed: int, device: str, progress: bool,
) -> PairSet:
    # The targets' SSIMs on the training device. Cache keys ignore the device: the values agree to
    # float rounding (a near-tie of a registered target's alignment search may differ).
    return _cached(cache, "pairs", key, PairSet, lambda: build_pairs(
        images, n_pairs, families=families, rng=np.random.default_rng(seed),
        copy_fraction=config.copy_fraction, registered=config.registered_targets, progress=progress,
        device=device,
    ))


def _cached_blocks(
    cache: Path, key: dict[str, Any], inputs: np.ndarray, block_size: int, grouping: str,
    rng: np.random.Generator, device: str, progress: bool, flips: bool,
) -> BlockTargets:
    def build() -> BlockTargets:
        t0 = time.perf_counter()
        blocks = BlockTargets.build(inputs, block_size, rng, device, progress, grouping=grouping, flips=flips)
        sizes = [len(m) for m in blocks.matrices]
        log.info("in-batch targets: %d block(s) of %d-%d inputs, %d pairs in %.1f s", len(sizes),
                 min(sizes), max(sizes), (4 if flips else 1) * sum(k * k for k in sizes), time.perf_counter() - t0)
        return blocks

    return _cached(cache, "blocks", key, BlockTargets, build)


def _param_groups(network: Embedder, config: TrainConfig) -> list[dict[str, Any]]:
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


def _lr_factor(progress: float, warmup: float) -> float:
    """Linear warm-up, then cosine decay to 2% of the base rate; ``progress`` in [0, 1]."""
    if progress < warmup:
        return max(progress / warmup, 1e-3)
    t = (progress - warmup) / max(1e-9, 1.0 - warmup)
    return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


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


def _initial_state(config: TrainConfig) -> dict[str, torch.Tensor]:
    """The weights of the model folder ``config.init``, checked to fit ``config.model``."""
    trained, _, _ = load_network(config.init)
    # Scoring rules, where the first weights came from, dropout and frozen stages do not change
    # the weights a network has.
    ignore = {"pretrained", "flip_search", "joint_flips", "cross_fit", "dropout", "frozen_stages"}
    mine = {k: v for k, v in asdict(config.model).items() if k not in ignore}
    theirs = {k: v for k, v in asdict(trained.config).items() if k not in ignore}
    if mine != theirs:
        diff = ", ".join(f"{k} {theirs.get(k)!r} vs {mine[k]!r}" for k in mine if mine[k] != theirs.get(k))
        raise ModelFolderError(f"{config.init}: its network is not the one to be trained ({diff}); "
                               "fine-tune with the same model settings")
    return trained.state_dict()


def embed_pairs(
    network: Embedder, preprocess: Preprocess, images: np.ndarray, a: np.ndarray, b: np.ndarray,
    perturb: Perturb | None, generator: torch.Generator | None, device: torch.device,
) -> torch.Tensor:
    """Scores of pairs (images[a], images[b]), each side perturbed independently: cosines,
    or for a network with ``flip_search`` the best cosine over the four flips of each b;
    with ``joint_flips`` each cosine the mean over the four flips of both (``flips.py``)."""
    n = len(a)
    search, joint = network.config.flip_search, network.config.joint_flips
    if not (search or joint):
        emb = embed_images(network, preprocess, images, np.concatenate([a, b]), perturb, generator, device)
        return (emb[:n] * emb[n:]).sum(dim=1)
    x = network_input(preprocess, perturbed_batch(images, np.concatenate([a, b]), perturb, generator, device))
    if joint:
        emb = by_flip(network(flipped(x)), 2 * n)
        return joint_scores(emb[:n], emb[n:], search, network.config.cross_fit)
    emb = network(torch.cat([x[:n], flipped(x[n:])]))
    return best_flip_scores(emb[:n], by_flip(emb[n:], n))


def in_batch_pairs(
    index: np.ndarray, per_image: int, generator: torch.Generator, emb: torch.Tensor | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``per_image`` partners for each position of a batch, among the other positions that
    hold a different image: pairs whose embeddings are already computed, so they cost only
    their SSIM targets. An audit takes the maximum over many such unrelated pairs, so their
    errors matter more than their share of the training pairs says.

    Partners are drawn at random, or, given the batch's embeddings ``emb``, they are the
    positions of highest current cosine (hard pairs: those an audit would wrongly flag).
    """
    n = len(index)
    if emb is None:
        first = np.repeat(np.arange(n), per_image)
        second = (first + 1 + torch.randint(0, n - 1, (len(first),), generator=generator).numpy()) % n
    else:
        with torch.no_grad():
            cos = emb.detach().float() @ emb.detach().float().T
            same = torch.from_numpy(index[:, None] == index[None, :]).to(cos.device)
            k = min(per_image, n - 1)
            second = cos.masked_fill(same, -float("inf")).topk(k, dim=1).indices.cpu().numpy().ravel()
        first = np.repeat(np.arange(n), k)
    keep = index[first] != index[second]
    return first[keep], second[keep]


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


def targets_in_frame(
    images: np.ndarray, i: np.ndarray, j: np.ndarray, relative: np.ndarray, device: torch.device
) -> np.ndarray:
    """SSIM of (images[i[k]], images[j[k]] flipped by code ``relative[k]``): the target of two
    inputs whose flips differ by that code (flipping both sides alike leaves SSIM unchanged).
    Each image's statistics are computed once per view, however many pairs it is in."""
    views: dict[tuple[int, int], np.ndarray] = {}  # one array per view: its statistics once

    def view(k: int, code: int) -> np.ndarray:
        if (k, code) not in views:
            views[k, code] = flip_image(images[k], code)
        return views[k, code]

    return ssim_pairs([view(int(k), 0) for k in i], [view(int(k), int(c)) for k, c in zip(j, relative)],
                      device=device.type).astype(np.float32)


@torch.no_grad()
def evaluate(
    network: Embedder, preprocess: Preprocess, pairs: PairSet, perturb: Perturb | None,
    device: torch.device, batch_size: int = 128,
) -> dict[str, float]:
    """MSE, MAE and Pearson r of the scores against the targets (eval mode)."""
    was_training = network.training
    network.eval()
    generator = torch.Generator(device="cpu").manual_seed(EVAL_SEED)
    scores = []
    for start in range(0, len(pairs), batch_size):
        sl = slice(start, start + batch_size)
        scores.append(embed_pairs(network, preprocess, pairs.images, pairs.a[sl], pairs.b[sl],
                                  perturb, generator, device).float().cpu())
    network.train(was_training)
    s = torch.cat(scores).numpy().astype(np.float64)
    t = pairs.target.astype(np.float64)
    r = float(np.corrcoef(s, t)[0, 1]) if s.std() > 0 and t.std() > 0 else float("nan")
    return {"mse": float(np.mean((s - t) ** 2)), "mae": float(np.mean(np.abs(s - t))), "r": r}


class _Logs:
    """metrics.csv, and TensorBoard when its package is installed."""

    def __init__(self, folder: Path, resume: bool) -> None:
        self.path = folder / METRICS
        self.fresh = not (resume and self.path.is_file())
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb: Any = SummaryWriter(str(folder / "tensorboard"))
        except ImportError:
            self.tb = None
            log.info("TensorBoard logs are off (pip install \"deepssim[tensorboard]\" to get them); "
                     "metrics go to %s", self.path)

    def write(self, row: dict[str, float]) -> None:
        new = self.fresh or not self.path.is_file()
        with open(self.path, "w" if self.fresh else "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        self.fresh = False
        if self.tb is not None:
            for key, value in row.items():
                if key not in ("epoch", "step"):
                    self.tb.add_scalar(key, value, int(row["step"]))
            self.tb.flush()


def _cpu_has_bf16() -> bool:
    try:  # a private oneDNN query; assume support where this torch build lacks it
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def _resume_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings a resumed run must share with the interrupted one: all but ``compile``,
    which changes speed and rounding only, and ``val_every``, which changes when the run is
    measured only (a run may resume with other values of these), with the defaults of
    settings added since filled in."""
    settings = TrainConfig.from_dict(config).to_dict()
    settings.pop("compile")
    settings.pop("val_every")
    return settings


def _changed(before: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """Names of the settings that differ, nested ones as ``model.cross_fit``."""
    out = []
    for key in set(before) | set(now):
        a, b = before.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def _check_resume(path: Path, saved: dict[str, Any], config: TrainConfig) -> None:
    """Refuse to resume the run saved at ``path`` with other settings, naming them."""
    try:
        before = _resume_settings(saved)
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: written by another version of deepssim ({exc}); train again "
                         "into a new folder") from None
    now = _resume_settings(config.to_dict())
    changed = sorted(_changed(before, now))
    if changed:
        raise ValueError(f"{path}: the earlier run used other settings ({', '.join(changed)}); "
                         "resume with the same command (a preset's defaults may have changed since: "
                         "set those settings back with their flags)")


def _save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda fh: torch.save(state, fh))


def train(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    config: TrainConfig,
    *,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train a DeepSSIM embedder on the images under ``inputs``; the best model (by validation
    MSE on perturbed pairs) is written to ``out_dir``."""
    if config.in_batch_pairs and config.registered_targets:
        raise ValueError("in_batch_pairs needs plain SSIM targets (registered targets are too slow "
                         "to compute per step); set one of them off")
    if config.in_batch_mining not in ("random", "hardest", "block"):
        raise ValueError(f"in_batch_mining must be 'random', 'hardest' or 'block', got {config.in_batch_mining!r}")
    if config.copy_partners and (config.copy_partners < 0 or not config.in_batch_pairs
                                 or config.in_batch_mining != "block"):
        raise ValueError("copy_partners pairs near-copies with look-alikes of their sources within the "
                         "in-batch blocks: it needs in_batch_pairs > 0 with in_batch_mining='block' "
                         f"(got copy_partners={config.copy_partners})")
    if config.in_batch_grouping not in ("random", "similar"):
        raise ValueError(f"in_batch_grouping must be 'random' or 'similar', got {config.in_batch_grouping!r}")
    if config.val_every < 0:
        raise ValueError(f"val_every is a number of epochs (0: validate only at the end), got {config.val_every}")
    if not 0.0 <= config.flip_pairs <= 1.0:
        raise ValueError(f"flip_pairs is a probability, got {config.flip_pairs}")
    if config.flip_pairs and (config.registered_targets or config.perturb.p_flip0 or config.perturb.p_flip1
                              or config.model.flip_symmetric):
        raise ValueError("flip_pairs recomputes SSIM targets in the pairs' relative orientation: it "
                         "needs plain SSIM targets, no flips in the perturbation and a model that "
                         "is not flip-symmetric (set flip_pairs to 0)")
    if config.model.stem == "unshuffle" and config.preprocess.input_side % 4:
        raise ValueError(f"the unshuffle stem folds 4 x 4 blocks of pixels into channels: the "
                         f"network input's side must be a multiple of 4, got "
                         f"{config.preprocess.input_side} (change the image size, or use the pool stem)")
    if not config.model.flip_search and config.perturb.p_flip0 == config.perturb.p_flip1 == 0.0:
        log.warning("trained without flips and scored without flip search: flipped copies will "
                    "score low (turn flip search on, or train with flips)")
    try:  # recorded in config.json and the resume state: checked before any work, not after it
        json.dumps(config.to_dict())
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the training configuration cannot be recorded as JSON ({exc}): give its "
                         "fields plain values (str, int, float, bool, lists)") from exc
    # Checked before the minutes of image reading and pair building.
    initial = _initial_state(config) if config.init is not None and not resume else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)

    images, ids = load_images(inputs, config.preprocess, progress=progress)
    if config.max_images is not None and len(images) > config.max_images:
        keep = np.sort(rng.choice(len(images), config.max_images, replace=False))
        images, ids = images[keep], [ids[k] for k in keep]
    data_print = fingerprint(images, ids)
    train_idx, val_idx = split_groups(images, config.val_fraction, rng)
    log.info("%d images (%d train, %d validation), fingerprint %s",
             len(images), len(train_idx), len(val_idx), data_print[:12])

    common = {"data": data_print, "size": config.preprocess.size, "resize": config.preprocess.resize_policy,
              "copy_fraction": config.copy_fraction, "registered": config.registered_targets,
              "seed": config.seed, "val_fraction": config.val_fraction}
    cache = out / "cache"
    train_key = {**common, "part": "train", "n": config.n_train_pairs, "families": config.families}
    train_pairs = _cached_pairs(cache, train_key, images[train_idx], config.n_train_pairs, config.families, config,
                                config.seed, str(dev), progress)
    val_families = config.val_families or config.families
    val_pairs = _cached_pairs(cache, {**common, "part": "val", "n": config.n_val_pairs,
                                      "families": val_families},
                              images[val_idx], config.n_val_pairs, val_families, config,
                              config.seed + 1, str(dev), progress)
    blocks = None
    if config.in_batch_pairs and config.in_batch_mining == "block":
        block_key = {k: common[k] for k in ("data", "size", "resize", "seed", "val_fraction")}
        block_key.update(part="blocks", block=config.in_batch_block)
        if config.in_batch_grouping != "random":  # the key of the caches made before the option
            block_key["grouping"] = config.in_batch_grouping
        if config.flip_pairs:
            block_key["flips"] = True
        blocks = _cached_blocks(cache, block_key, train_pairs.images[: len(train_idx)],
                                config.in_batch_block, config.in_batch_grouping,
                                np.random.default_rng(config.seed + 2), str(dev), progress,
                                flips=bool(config.flip_pairs))
        _check_cover(cache, "block targets", blocks.n_inputs, len(train_idx))
    partners = None
    if blocks is not None and config.copy_partners:
        # Made from the training pairs and the block targets: both keys, and k.
        partner_key = {"part": "partners", "pairs": train_key, "blocks": block_key, "k": config.copy_partners}
        started = time.perf_counter()
        partners = _cached(cache, "partners", partner_key, CopyPartners, lambda: CopyPartners.build(
            train_pairs.images, train_pairs.a, train_pairs.b, train_pairs.family, blocks,
            config.copy_partners, str(dev), progress, flips=bool(config.flip_pairs)))
        _check_cover(cache, "copy partners", partners.n_inputs, len(train_idx))
        log.info("copy partners: %d near-copies x %d look-alikes of their sources (%.1f s)",
                 len(partners.copy), partners.partner.shape[1], time.perf_counter() - started)

    # channels_last: 1.3x faster convolutions on the CPU (oneDNN) and on recent GPUs.
    # A network fine-tuned from ``init`` needs no pretrained weights underneath.
    network = Embedder(config.model if initial is None else replace(config.model, pretrained=None),
                       log_init=initial is None)
    if initial is not None:
        network.load_state_dict(initial)
        log.info("network initialised from %s", config.init)
    if config.model.pooling in ("local", "grid"):
        side = network.map_side(config.preprocess.input_side)
        if config.model.grid > side:
            log.warning("grid %d is finer than the last stage's %d x %d map at %d px: its cells "
                        "repeat, which costs time and embedding size for the same scores (use "
                        "--grid %d%s)", config.model.grid, side, side, config.preprocess.input_side,
                        side, "" if config.model.dilate_last or config.model.backbone not in DILATABLE
                        else " or --dilate-last")
    network = network.to(dev, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(_param_groups(network, config), lr=config.lr,
                                  weight_decay=config.weight_decay)
    for group in optimizer.param_groups:
        group["base_lr"] = group["lr"]
    perturb = Perturb(config.perturb)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    steps_per_epoch = max(1, len(train_pairs) // config.batch_size)
    if blocks is not None:  # block batches keep every pair
        steps_per_epoch = -(-len(train_pairs) // config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    epoch, step, elapsed_before = 0, 0, 0.0
    best: dict[str, float] = {}
    history: list[dict[str, float]] = []
    state_path = out / STATE
    if resume:
        if not state_path.is_file():
            raise FileNotFoundError(f"{state_path}: nothing to resume (no earlier run in {out})")
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        _check_resume(state_path, state["config"], config)
        if state["data"] != data_print:
            raise ValueError(f"{state_path}: the earlier run used other data; resume with the same "
                             "command")
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])  # dropout draws from the global generator
        epoch, step, elapsed_before = state["epoch"], state["step"], state["elapsed"]
        best, history = state["best"], state["history"]
        log.info("resuming %s at epoch %d, step %d", out, epoch, step)

    logs = _Logs(out, resume)
    use_amp = dev.type == "cuda" or config.cpu_bf16
    if dev.type == "cpu" and config.cpu_bf16 and not _cpu_has_bf16():
        log.warning("cpu_bf16 is on but this CPU has no native bfloat16: training will be slow")
    # Compiled before the clock starts, like the pairs are built: the time budget and the
    # learning-rate schedule count training steps only.
    budget = None if config.max_minutes is None else 60.0 * config.max_minutes
    steps_left = epoch < config.epochs and (budget is None or elapsed_before < budget)
    step_network = StepNetwork(network, config.preprocess, full=2 * config.batch_size, amp=use_amp,
                               device=dev, compile=config.compile and steps_left
                               and len(train_pairs) >= config.batch_size)
    t0 = time.perf_counter() - elapsed_before
    stopped_by = "epochs"
    # With a time budget the step count is unknown: the bar then counts steps and time only.
    bar = tqdm(total=None if budget else total_steps, initial=step, unit="step",
               desc=f"train (budget {config.max_minutes:g} min)" if budget else "train",
               disable=not progress, file=sys.stderr, dynamic_ncols=True)
    network.train()
    last_loss = history[-1]["train_mse"] if history else float("nan")  # of the last epoch with steps
    while epoch < config.epochs:
        # Out of time at an epoch's end: no permutation drawn, so that the saved state is the
        # one an uninterrupted run would have there.
        out_of_time = budget is not None and time.perf_counter() - t0 >= budget
        if out_of_time:
            stopped_by = "max_minutes"
            batches = []
        else:
            order = torch.randperm(len(train_pairs), generator=generator).numpy()
            if blocks is None:
                batches = [order[k * config.batch_size : (k + 1) * config.batch_size] for k in range(steps_per_epoch)]
            else:
                batches = blocks.batches(train_pairs.a, train_pairs.b, order, config.batch_size, generator)
        running, done = 0.0, 0
        for batch in batches:
            elapsed = time.perf_counter() - t0
            if budget is not None and elapsed >= budget:
                stopped_by = "max_minutes"
                break
            frac = max(step / total_steps, elapsed / budget if budget else 0.0)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * _lr_factor(frac, config.warmup_fraction)
            index = np.concatenate([train_pairs.a[batch], train_pairs.b[batch]])
            x = perturbed_batch(train_pairs.images, index, perturb, generator, dev)
            codes = pair_flips(len(batch), config.flip_pairs, generator)
            if codes is not None:
                x = flip_each(x, codes)
            emb = step_network(x)
            half = len(batch)
            scores = (emb[:half] * emb[half:]).sum(dim=1)
            target = torch.from_numpy(train_pairs.target[batch]).to(dev)
            loss = torch.nn.functional.mse_loss(scores.float(), target)
            first = second = np.empty(0, np.int64)
            if config.in_batch_pairs and blocks is not None:
                first, second = capped(*blocks.pairs_in_batch(index), config.in_batch_pairs * len(index),
                                       generator)
                extra = blocks.target(index[first], index[second],
                                      None if codes is None else codes[first] ^ codes[second])
            elif config.in_batch_pairs:
                first, second = in_batch_pairs(index, config.in_batch_pairs, generator,
                                               emb if config.in_batch_mining == "hardest" else None)
                relative = np.zeros(len(first), np.int64) if codes is None else codes[first] ^ codes[second]
                extra = targets_in_frame(train_pairs.images, index[first], index[second], relative, dev)
            extra_losses = []
            if len(first):
                extra_losses.append(_pair_mse(emb, first, second, extra))
            if partners is not None:
                near, copies, near_target = partners.pairs_in_batch(index, codes)
                if len(near):
                    extra_losses.append(_pair_mse(emb, near, copies, near_target))
            if extra_losses:
                # Equal weight to the sampled pairs (copies, stratified) and the in-batch ones,
                # which are mostly unrelated images: neither regime drowns the other. Within the
                # in-batch half, the copies' look-alike partners (a few hundred pairs a step)
                # weigh as much as the thousands of block pairs (a third of the loss each was
                # no better: docs/quality.md, session 17).
                loss = 0.5 * (loss + sum(extra_losses) / len(extra_losses))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), config.grad_clip)
            optimizer.step()
            step += 1
            running += loss.item()
            done += 1
            bar.update(1)
            bar.set_postfix(loss=f"{running / done:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.1e}")
        else:
            if not out_of_time:
                epoch += 1
        if done:
            last_loss = running / done
        elif history and history[-1]["step"] == step:
            break  # out of time before the epoch's first step, validated and saved already
        stopping = stopped_by == "max_minutes" or epoch >= config.epochs
        if stopping or (config.val_every > 0 and epoch % config.val_every == 0):
            row = _evaluate_and_log(network, config, val_pairs, perturb, dev, epoch, step,
                                    time.perf_counter() - t0, last_loss, logs)
            history.append(row)
            if not best or row["val_perturbed_mse"] < best["val_perturbed_mse"]:
                best = row
                save_model(out, network, config.preprocess, _model_extra(config, data_print, len(images), best))
        else:
            log.info("epoch %d step %d: train MSE %.4f", epoch, step, last_loss)
        _save_state(state_path, {
            "config": config.to_dict(), "data": data_print, "network": network.state_dict(),
            "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "epoch": epoch, "step": step, "elapsed": time.perf_counter() - t0,
            "best": best, "history": history,
        })
        if stopped_by == "max_minutes":
            break
    bar.close()
    log.info("stopped by %s after %d steps; best validation MSE (perturbed) %.4f at step %d",
             stopped_by, step, best["val_perturbed_mse"], int(best["step"]))
    return TrainResult(model_dir=out, best=best, history=history, stopped_by=stopped_by,
                       val_pairs=val_pairs)


def _pair_mse(emb: torch.Tensor, first: np.ndarray, second: np.ndarray, target: np.ndarray) -> torch.Tensor:
    """MSE of the cosines of a batch's positions (first[k], second[k]) against their targets."""
    scores = (emb[first] * emb[second]).sum(dim=1).float()
    return torch.nn.functional.mse_loss(scores, torch.from_numpy(target).float().to(emb.device))


def _evaluate_and_log(
    network: Embedder, config: TrainConfig, val_pairs: PairSet, perturb: Perturb,
    dev: torch.device, epoch: int, step: int, elapsed: float, train_loss: float, logs: _Logs,
) -> dict[str, float]:
    clean = evaluate(network, config.preprocess, val_pairs, None, dev)
    perturbed = evaluate(network, config.preprocess, val_pairs, perturb, dev)
    row = {"epoch": epoch, "step": step, "elapsed_s": round(elapsed, 1), "train_mse": train_loss}
    row.update({f"val_clean_{k}": v for k, v in clean.items()})
    row.update({f"val_perturbed_{k}": v for k, v in perturbed.items()})
    logs.write(row)
    log.info("epoch %d step %d: train MSE %.4f, validation MAE clean %.4f / perturbed %.4f, "
             "r perturbed %.3f", epoch, step, train_loss, clean["mae"], perturbed["mae"], perturbed["r"])
    return row


def _model_extra(config: TrainConfig, data_print: str, n_images: int, best: dict[str, float]) -> dict[str, Any]:
    return {
        "preset": config.preset,
        "training": config.to_dict(),
        "training_data": {"fingerprint": data_print, "n_images": n_images},
        "validation": best,
    }
