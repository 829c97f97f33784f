"""The DeepSSIM model: preprocessing contract, embedder network, checkpoints, scoring."""

from .api import DeepSSIMModel, load_model, score_pairs
from .checkpoint import ModelFolderError, load_network, save_model
from .network import BACKBONES, Embedder, ModelConfig
from .preprocess import Preprocess

__all__ = [
    "BACKBONES",
    "DeepSSIMModel",
    "Embedder",
    "ModelConfig",
    "ModelFolderError",
    "Preprocess",
    "load_model",
    "load_network",
    "save_model",
    "score_pairs",
]
