"""The Siamese embedder: a backbone, a pooling, the paper's projection head.

``cos(embed(a), embed(b))`` is the DeepSSIM score; embeddings are L2-normalised. Backbones
are torchvision's ``convnext_base`` (the paper), ``convnext_tiny`` (DeepSSIM++), ``resnet18``
and ``resnet50``, plus ``small``, a compact CNN of ours for CPU training. Each is split into a
stem and four stages so that pooling, freezing and layer-wise learning rates work the same
way for all of them.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .scoring import LEGACY_FLAGS, Scoring, rule, scoring_from_flags
from .settings import built, checked_fields
from .torchfile import UnsafeFileError, load_torch_file, mismatch

log = logging.getLogger(__name__)

BACKBONES = ("convnext_base", "convnext_tiny", "resnet18", "resnet50", "small")
Pooling = Literal["avg", "gem", "local"]
POOLINGS: tuple[str, ...] = ("avg", "gem", "local")
DILATABLE = ("small", "resnet50")
"""Backbones whose last stage can keep the resolution of the one before (``dilate_last``)."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild an embedder (stored in ``config.json``).

    ``pretrained``: None (random initialisation), ``"imagenet"`` (torchvision's weights API:
    a checksummed download unless already cached) or a path to a local weights file.
    ``scoring``: how a pair is scored from the embeddings, a rule of ``scoring.py`` and not a
    layer: ``cosine`` (one cosine), ``best-flip`` (the best cosine over the four flips of the
    synthetic image) or ``cross-fit`` (joint flips of both images, the relative flip
    cross-fitted).
    ``pooling``: ``avg`` (the paper), ``gem`` (multi-scale GeM, DeepSSIM++), or ``local``: the
    last stage averaged over a ``grid`` x ``grid`` layout, the head applied to each of its
    cells alone, each cell's output (of ``embedding_dim / grid**2`` values) L2-normalised and
    scaled by ``1 / grid``, so that the cosine of two embeddings is the mean over the cells of
    the two images' cosines there, as SSIM is the mean over the image of a local comparison.
    ``dilate_last``: the last stage keeps the resolution of the one before (stride 1, its
    convolutions dilated by 2 so that its receptive field still grows, a little more than
    before for ``small``): a map twice as fine for ``local`` pooling (8 x 8 cells of 16 pixels
    at 128 px for ``small``, with ``grid=8``).
    ``small`` and ``resnet50`` only (torchvision's ResNet-18 blocks cannot dilate, ConvNeXt
    down-samples with a patchify layer).
    """

    backbone: str = "resnet18"
    pooling: Pooling = "avg"
    embedding_dim: int = 256
    hidden_dim: int = 512
    dropout: float = 0.33
    gem_p: float = 3.0
    scoring: Scoring = "cosine"
    frozen_stages: int = 0
    width: int = 32
    grid: int = 4
    dilate_last: bool = False
    pretrained: str | None = None

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}: use one of {', '.join(BACKBONES)}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}: use one of {', '.join(POOLINGS)}")
        rule(self.scoring)
        if self.grid < 1:
            raise ValueError(f"grid must be at least 1, got {self.grid}")
        if self.pooling == "local" and self.embedding_dim % (self.grid * self.grid):
            raise ValueError(f"local pooling splits the embedding over {self.grid} x "
                             f"{self.grid} cells: embedding_dim {self.embedding_dim} is not "
                             f"a multiple of {self.grid * self.grid}")
        if self.dilate_last and self.backbone not in DILATABLE:
            raise ValueError(f"dilate_last: the {self.backbone} backbone cannot dilate its last "
                             f"stage (use one of {', '.join(DILATABLE)})")
        if self.backbone == "small" and self.pretrained:
            raise ValueError("the 'small' backbone has no pretrained weights (pretrained none)")
        if not 0 <= self.frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in 0..4, got {self.frozen_stages}")
        for name in ("width", "embedding_dim", "hidden_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.gem_p <= 0:
            raise ValueError(f"gem_p must be > 0, got {self.gem_p}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "model") -> ModelConfig:
        """The settings of a ``to_dict`` result; also those written with the boolean scoring
        flags (``scoring.LEGACY_FLAGS``, read as their rule) and the ``stem`` setting (the pool
        stem only). Raises ValueError naming any setting this version cannot rebuild, or the
        field (``where.field``) whose value is not of its type."""
        if not isinstance(data, dict):
            checked_fields(cls, data, where)  # raises: not an object
        data = dict(data)
        if "scoring" not in data and any(flag in data for flag in LEGACY_FLAGS):
            data["scoring"] = scoring_from_flags(data)
        for flag in LEGACY_FLAGS:
            data.pop(flag, None)
        stem = data.pop("stem", "pool")
        if stem != "pool":
            raise ValueError(f"{where}.stem {stem!r}: the small backbone has one stem (pool): train "
                             "the model again")
        if data.get("pooling") == "grid":
            raise ValueError(f"{where}.pooling 'grid': this version pools avg, gem or local (a grid of "
                             "cells each through the head): train the model again")
        unknown = sorted(str(k) for k in set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"{where}: unknown model settings {', '.join(unknown)}: written by a newer "
                             "deepssim? upgrade deepssim")
        return built(cls, checked_fields(cls, data, where), where)


def _conv_block(c_in: int, c_out: int, stride: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _small(width: int, dilate_last: bool = False) -> tuple[nn.Module, list[nn.Module], list[int]]:
    """A compact VGG-style CNN for CPU training; like ResNet's, its stem (a stride-2
    convolution and 2 x 2 average pooling) reduces by 4. ``dilate_last``: the last stage at
    stride 1 with dilated convolutions."""
    channels = [width, 2 * width, 4 * width, 8 * width]
    stem = nn.Sequential(
        nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.AvgPool2d(2),
    )
    stages = [_conv_block(width, channels[0], 1)]
    stages += [_conv_block(channels[k - 1], channels[k], 2) for k in range(1, 3)]
    stages.append(_conv_block(channels[2], channels[3], 1, 2) if dilate_last else
                  _conv_block(channels[2], channels[3], 2))
    return stem, stages, channels


def _split(model: nn.Module, name: str) -> tuple[nn.Module, list[nn.Module], list[int]]:
    """Stem, four stages and their output channels of a torchvision ResNet or ConvNeXt."""
    if name.startswith("resnet"):
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
        stages = [model.layer1, model.layer2, model.layer3, model.layer4]
        last_bn = [getattr(s[-1], "bn3", None) or s[-1].bn2 for s in stages]
        return stem, stages, [bn.num_features for bn in last_bn]
    # ConvNeXt: features = [stem, stage1, down2, stage2, down3, stage3, down4, stage4]
    f = model.features
    stages = [f[1], nn.Sequential(f[2], f[3]), nn.Sequential(f[4], f[5]), nn.Sequential(f[6], f[7])]
    channels = [f[2][0].normalized_shape[0], f[4][0].normalized_shape[0],
                f[6][0].normalized_shape[0], f[6][1].out_channels]
    return f[0], stages, channels


def _imagenet_state(name: str, pretrained: str) -> dict[str, torch.Tensor]:
    """State dict of the torchvision model ``name`` from the weights API or a local file."""
    if pretrained == "imagenet":
        import torchvision

        weights = torchvision.models.get_model_weights(name).DEFAULT
        log.info("loading ImageNet weights %s (torchvision weights API, hash-checked; cached in "
                 "%s)", weights, torch.hub.get_dir())
        try:
            return weights.get_state_dict(progress=True, check_hash=True)
        except OSError as exc:  # URLError and friends: no network, proxy, disk full
            raise OSError(
                f"could not get the ImageNet weights of {name} from {weights.url} ({exc}); "
                "put the file in the torch hub cache, pass a local weights file as pretrained, "
                "or train from scratch (pretrained none)"
            ) from None
    path = Path(pretrained)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pretrained weights file not found")
    log.info("loading backbone weights from %s", path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except SafetensorError as exc:
            raise UnsafeFileError(f"{path}: not a readable safetensors file ({exc})") from None
    else:
        state = load_torch_file(path, "pretrained weights file")
    if not (isinstance(state, dict) and state and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                      for k, v in state.items())):
        raise UnsafeFileError(f"{path}: not a weights file: expected a state dict (names -> tensors) "
                              f"of a torchvision {name}")
    return state


def _load_backbone(model: nn.Module, name: str, pretrained: str) -> None:
    """Load the weights ``pretrained`` (``imagenet`` or a file) into the torchvision ``model``."""
    state = _imagenet_state(name, pretrained)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # missing, unexpected or differently shaped tensors
        raise UnsafeFileError(f"{pretrained}: these weights do not fit the {name} backbone "
                              f"({mismatch(exc)})") from None


def check_pretrained(config: ModelConfig) -> None:
    """Refuse a ``pretrained`` weights file of ``config`` that cannot be read or does not fit its
    backbone, before any other work (a file only: ImageNet weights come checksummed)."""
    if config.pretrained in (None, "imagenet") or config.backbone == "small":
        return
    _load_backbone(_torchvision(config), config.backbone, config.pretrained)


def _torchvision(config: ModelConfig) -> nn.Module:
    """The torchvision model of ``config.backbone``, randomly initialised."""
    import torchvision

    extra = {"replace_stride_with_dilation": [False, False, True]} if config.dilate_last else {}
    return torchvision.models.get_model(config.backbone, weights=None, **extra)


class GeM(nn.Module):
    """Generalised-mean pooling (p = 1: average, p -> inf: max)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(x.clamp(min=self.eps).pow(self.p), 1)
        return pooled.pow(1.0 / self.p).flatten(1)


class Embedder(nn.Module):
    """Backbone stages -> pooling -> BatchNorm1d -> Linear -> GELU -> Dropout -> Linear."""

    def __init__(self, config: ModelConfig, *, log_init: bool = True) -> None:
        """``log_init=False`` when trained weights are loaded next (no "random initialisation" note)."""
        super().__init__()
        self.config = config
        say = log.info if log_init else log.debug
        if config.backbone == "small":
            stem, stages, channels = _small(config.width, config.dilate_last)
            say("backbone small (width %d): random initialisation", config.width)
        else:
            model = _torchvision(config)
            if config.pretrained:
                _load_backbone(model, config.backbone, config.pretrained)
            else:
                say("backbone %s: random initialisation (no pretrained weights asked for)",
                         config.backbone)
            stem, stages, channels = _split(model, config.backbone)
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        if config.pooling == "gem":
            # Multi-scale GeM (DeepSSIM++): the last two stages, concatenated.
            self.pools = nn.ModuleList([GeM(config.gem_p), GeM(config.gem_p)])
            features = channels[-2] + channels[-1]
        else:  # avg, and local: the head sees one cell's channels at a time
            self.pools = nn.ModuleList()
            features = channels[-1]
        self.head = nn.Sequential(
            nn.BatchNorm1d(features),
            nn.Linear(features, config.hidden_dim),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden_dim, self._cell_dim()),
        )
        # The paper freezes the early stages of its ImageNet backbone.
        frozen = [self.stem, *self.stages[: config.frozen_stages]] if config.frozen_stages else []
        for module in frozen:
            for param in module.parameters():
                param.requires_grad_(False)

    def _cells(self) -> int:
        """Cells the embedding is split over: ``grid``**2 for ``local`` pooling, else 1."""
        return self.config.grid**2 if self.config.pooling == "local" else 1

    def _cell_dim(self) -> int:
        """The head's output size: the embedding, or one cell's share of it (``local``)."""
        return self.config.embedding_dim // self._cells()

    def map_side(self, size: int) -> int:
        """Side of the last stage's map for a ``size`` x ``size`` input (one pass of zeros in
        evaluation mode, nothing learned changes): ``grid`` beyond it repeats cells."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                last = self.stage_maps(torch.zeros(1, 3, size, size, device=next(self.parameters()).device))[-1]
        finally:
            self.train(was_training)
        return int(last.shape[-1])

    def stage_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four stages' output maps for network input (B, C, S, S)."""
        x = self.stem(x)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features of network input (B, C, S, S); (B * cells, C) for ``local``."""
        maps = self.stage_maps(x)
        if self.config.pooling == "gem":
            return torch.cat([pool(m) for pool, m in zip(self.pools, maps[-2:])], dim=1)
        if self.config.pooling == "local":
            cells = F.adaptive_avg_pool2d(maps[-1], self.config.grid).flatten(2)  # (B, C, cells)
            return cells.transpose(1, 2).reshape(-1, cells.shape[1])
        return F.adaptive_avg_pool2d(maps[-1], 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings (B, embedding_dim) of network input (B, C, S, S)."""
        feats = self.features(x)
        # The head and the normalisation stay in float32 under mixed precision: the score is
        # a cosine that must resolve differences of 0.01.
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = self.head(feats.float())
            if self.config.pooling != "local":
                return F.normalize(out, dim=1)
            cells = self._cells()
            out = F.normalize(out.view(x.shape[0], cells, -1), dim=2) / cells**0.5
            return out.flatten(1)
