"""Training the DeepSSIM embedder: pairs with reference-SSIM targets, perturbations, presets."""

from ..transforms.nearcopy import FAMILIES
from ..transforms.perturb import Perturb, PerturbConfig, perturb_image
from .pairs import PairSet, build_pairs, split_by_image
from .presets import PRESETS, TrainConfig, get_preset
from .trainer import TrainResult, evaluate, train

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
