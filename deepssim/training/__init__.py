"""Training the DeepSSIM embedder: pairs with reference-SSIM targets, perturbations, presets.

Modules: ``config`` (TrainConfig, checked when made), ``presets``, ``pairs`` and ``blocks``
(the training pairs and the in-batch block targets), ``data`` (a run's images, split and
cached pair sets), ``steps`` (one training step), ``validation``, ``state`` (resume and
fine-tuning), ``trainer`` (the loop).
"""

from ..transforms.nearcopy import FAMILIES
from ..transforms.perturb import Perturb, PerturbConfig, perturb_image
from .config import TrainConfig
from .pairs import PairSet, build_pairs, split_by_image
from .presets import PRESETS, get_preset
from .trainer import TrainResult, train
from .validation import evaluate

__all__ = [
    "FAMILIES",
    "PRESETS",
    "PairSet",
    "Perturb",
    "PerturbConfig",
    "TrainConfig",
    "TrainResult",
    "build_pairs",
    "evaluate",
    "get_preset",
    "perturb_image",
    "split_by_image",
    "train",
]
