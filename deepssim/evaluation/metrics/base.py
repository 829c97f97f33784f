"""One interface for every similarity metric, and the registry that names them.

A metric scores pairs of 2D grayscale images: ``score(real, synthetic)`` returns one
similarity per pair, higher meaning more alike. Its ``scale`` says how its values may be
read: ``ssim`` metrics estimate the reference SSIM, so the paper's fixed thresholds (0.60 /
0.85) apply to them; the others (``similarity`` in [0, 1] or [-1, 1], ``cosine`` of
embeddings) need thresholds calibrated on validation pairs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from ...classes import Thresholds

Scale = Literal["ssim", "similarity", "cosine"]


class MetricUnavailable(ValueError):
    """A metric cannot run here: weights, a package or suitable images are missing.

    The message says what is needed; ``evaluate --all`` lists such metrics as skipped.
    """


class MissingWeightsError(MetricUnavailable):
    """A metric needs a weights file or model folder that was not given or does not exist."""


class MissingDependencyError(MetricUnavailable):
    """A metric needs an optional package that is not installed."""


@dataclass(frozen=True)
class MetricOptions:
    """What metrics may need beyond the images (each metric reads only its own fields).

    Attributes:
        model: DeepSSIM model folder (or the authors' TorchScript file) for ``deepssim``.
        weights: Weights of ``dar`` (a folder from ``deepssim baseline train-dar``), ``sscd``
            (TorchScript file) or ``clip`` (open_clip checkpoint).
        clip_arch: open_clip architecture name of the ``clip`` weights.
        trust_torchscript: allow loading TorchScript files (they can run code).
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: images per forward pass of the network metrics.
        num_threads: CPU threads of the ``ssim`` and ``ssim-flip`` kernels (default: all
            cores; the CLI's ``--num-threads`` limits every metric).
        progress: progress bars on stderr for long loops.
    """

    model: str | Path | None = None
    weights: str | Path | None = None
    clip_arch: str = "ViT-B-16"
    trust_torchscript: bool = False
    device: str = "auto"
    batch_size: int = 64
    num_threads: int | None = None
    progress: bool = False


class Metric(ABC):
    """A similarity of image pairs (see the module docstring).

    Subclasses set ``name``, ``scale`` and ``summary`` and implement ``score``; their
    constructor takes ``MetricOptions`` and raises ``MetricUnavailable`` when what they need
    is missing, so that a metric that can be built can run.
    """

    name: ClassVar[str]
    scale: ClassVar[Scale]
    summary: ClassVar[str]
    takes_weights: ClassVar[bool] = False
    """Reads ``MetricOptions.weights`` (the ``--weights`` flag)."""

    def __init__(self, options: MetricOptions = MetricOptions()) -> None:
        self.options = options

    @abstractmethod
    def score(self, real: Sequence[np.ndarray], synthetic: Sequence[np.ndarray]) -> np.ndarray:
        """Similarity of each pair ``(real[k], synthetic[k])``: float64 (P,), higher = closer.

        The same array object may appear in several pairs; metrics may reuse work on it.
        """

    @property
    def default_thresholds(self) -> Thresholds | None:
        """The paper's thresholds for SSIM-scale metrics; None for the others."""
        return Thresholds(source="default") if self.scale == "ssim" else None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "scale": self.scale, "summary": self.summary}


def check_pairs(real: Sequence[np.ndarray], synthetic: Sequence[np.ndarray], *, same_shape: bool) -> None:
    """Raise ValueError unless there are as many real as synthetic images (of one shape per
    pair when ``same_shape``)."""
    if len(real) != len(synthetic):
        raise ValueError(f"{len(real)} real images but {len(synthetic)} synthetic ones")
    if same_shape:
        for k, (a, b) in enumerate(zip(real, synthetic)):
            if np.shape(a) != np.shape(b):
                raise ValueError(f"pair {k}: the real image is {np.shape(a)} and the synthetic one "
                                 f"{np.shape(b)}; this metric compares images of one size")


_REGISTRY: dict[str, type[Metric]] = {}


def register_metric(cls: type[Metric]) -> type[Metric]:
    """Class decorator: make ``cls`` available by its ``name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"a metric named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def metric_names() -> tuple[str, ...]:
    """Names of the registered metrics, in registration order."""
    return tuple(_REGISTRY)


def metric_class(name: str) -> type[Metric]:
    """The class registered as ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}: use one of {', '.join(_REGISTRY)}") from None


def create_metric(name: str, options: MetricOptions = MetricOptions()) -> Metric:
    """An instance of the metric registered as ``name``.

    Raises:
        ValueError: an unknown name.
        MetricUnavailable: the metric's weights or package are missing (the message says which).
    """
    return metric_class(name)(options)


def unique_by_identity(images: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """The distinct array objects of ``images`` and the index of each item among them."""
    position: dict[int, int] = {}
    unique: list[np.ndarray] = []
    index = np.empty(len(images), dtype=np.int64)
    for k, image in enumerate(images):
        key = id(image)
        if key not in position:
            position[key] = len(unique)
            unique.append(image)
        index[k] = position[key]
    return unique, index


def per_image(images: Sequence[np.ndarray], fn: Callable[[np.ndarray], Any]) -> list[Any]:
    """``fn`` of each image, computed once per distinct array object."""
    unique, index = unique_by_identity(images)
    results = [fn(im) for im in unique]
    return [results[k] for k in index]
