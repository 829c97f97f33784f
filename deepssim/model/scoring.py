"""The scoring rules of a DeepSSIM model: how the cosines of embeddings become a pair's score.

A model is trained for one rule and recorded with it (``ModelConfig.scoring``):

============  ==========  ===============  ======  =======  =========  ================
rule          real side   synthetic side   joint   search   cross-fit  trained with
                                                                       flips
============  ==========  ===============  ======  =======  =========  ================
cosine        1 view      1 view           no      no       no         yes
best-flip     1 view      4 flips          no      yes      no         no
cross-fit     4 flips     4 flips          yes     yes      yes        no
============  ==========  ===============  ======  =======  =========  ================

- ``cosine``: one cosine of the two embeddings (the ``paper`` and ``plus`` presets); flip
  augmentation teaches the network to ignore flips.
- ``best-flip``: the best cosine over the four flips of the synthetic image, so a flipped copy
  is scored in the orientation that undoes the flip (``flips.best_flip_scores``).
- ``cross-fit`` (the ``fast`` preset): each cosine is the mean over the four flips applied to
  both images (``flips.joint``, ``flips.joint_views``), and the relative flip of the synthetic
  image is chosen with half of those joint views and scored with the other half
  (``flips.cross_fitted``), so that unrelated images are not scored by the luckiest of four
  estimates.

Everything else (which side is embedded with its flips, the vectors a score is made of, the
score itself) is derived here from the table, for the model API, the trainer and the audit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import torch

from .flips import best_flip_scores, joint, joint_views

Scoring = Literal["cosine", "best-flip", "cross-fit"]

Emb = TypeVar("Emb", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class ScoringRule:
    """One row of the table above.

    Attributes:
        real_flips: the real (training) side is embedded with its four flips.
        synthetic_flips: the synthetic side is embedded with its four flips.
        joint: each cosine is the mean over the four flips of both images.
        search: the score is taken over the relative flips of the synthetic image.
        cross_fit: the relative flip is cross-fitted instead of the best.
        trains_with_flips: the perturbation of its training flips images (the network learns
            to ignore flips); the others train without (the rule undoes flips).
    """

    name: str
    real_flips: bool
    synthetic_flips: bool
    joint: bool
    search: bool
    cross_fit: bool
    trains_with_flips: bool


RULES: dict[str, ScoringRule] = {
    "cosine": ScoringRule("cosine", real_flips=False, synthetic_flips=False, joint=False, search=False,
                          cross_fit=False, trains_with_flips=True),
    "best-flip": ScoringRule("best-flip", real_flips=False, synthetic_flips=True, joint=False, search=True,
                             cross_fit=False, trains_with_flips=False),
    "cross-fit": ScoringRule("cross-fit", real_flips=True, synthetic_flips=True, joint=True, search=True,
                             cross_fit=True, trains_with_flips=False),
}
SCORINGS: tuple[str, ...] = tuple(RULES)


def rule(name: str) -> ScoringRule:
    """The rule called ``name``; ValueError naming the rules for any other name."""
    try:
        return RULES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown scoring {name!r}: use one of {', '.join(SCORINGS)}") from None


def as_real(scoring: ScoringRule, emb: Emb) -> Emb:
    """The real side's score vectors from its embeddings: (N, D) as they are, or with
    ``real_flips`` the per-flip embeddings (N, 4, D) as joint vectors (N, 4 * D)."""
    return joint(emb) if scoring.joint else emb


def as_synthetic(scoring: ScoringRule, emb: Emb) -> Emb:
    """The synthetic side's score vectors from its embeddings: (N, D) as they are, the per-flip
    embeddings (N, 4, D) for ``best-flip``, or their joint views (N, 4, 4 * D) for ``cross-fit``."""
    return joint_views(emb) if scoring.joint else emb


def pair_scores(scoring: ScoringRule, real: Emb, synthetic: Emb) -> Emb:
    """Scores of pairs from ``as_real`` rows (P, ...) and ``as_synthetic`` rows (P, ...)."""
    return best_flip_scores(real, synthetic, scoring.cross_fit)


LEGACY_FLAGS = ("flip_symmetric", "flip_search", "joint_flips", "cross_fit")
"""Boolean settings that older model files record the scoring rule with, read as their rule."""

_LEGACY = {  # (flip_search, joint_flips, cross_fit) -> rule
    (False, False, False): "cosine",
    (True, False, False): "best-flip",
    (True, True, True): "cross-fit",
}


def scoring_from_flags(flags: Mapping[str, Any]) -> str:
    """The rule of model settings written with the boolean flags ``LEGACY_FLAGS`` (absent ones
    off). Raises ValueError, naming the settings, for a combination that is not a rule."""
    on = {name: bool(flags.get(name, False)) for name in LEGACY_FLAGS}
    key = (on["flip_search"], on["joint_flips"], on["cross_fit"])
    if on["flip_symmetric"] or key not in _LEGACY:
        named = ", ".join(name for name, value in on.items() if value)
        raise ValueError(f"the scoring settings {named} are not a supported scoring rule (the rules are "
                         f"{', '.join(SCORINGS)}): train the model again with one of them")
    return _LEGACY[key]


def scoring_of(model_settings: Mapping[str, Any]) -> str:
    """The rule of a model's settings (``config.json``'s ``model`` section): its ``scoring``,
    or the rule its boolean flags stand for (``scoring_from_flags``); ``cosine`` when neither
    is recorded (a TorchScript model)."""
    if "scoring" in model_settings:
        return rule(model_settings["scoring"]).name
    return scoring_from_flags(model_settings)
