"""The training configuration: every setting a run depends on, checked when it is made."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..model.network import DILATABLE, ModelConfig
from ..model.preprocess import Preprocess
from ..model.scoring import rule
from ..model.settings import built, checked_fields
from ..transforms.nearcopy import BENCHMARK_FAMILIES
from ..transforms.perturb import PerturbConfig

MIN_IN_BATCH_BLOCK = 2
"""The fewest inputs of an in-batch block (a pair needs two)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (recorded in the model's ``config.json``).

    A configuration that cannot train is refused when it is made (ValueError, saying why).

    Attributes:
        epochs: passes over the training pairs (the run may stop earlier at ``max_minutes``).
        n_train_pairs / n_val_pairs: pairs built (and cached) from the training / validation
            images; validation images never appear in training pairs.
        max_images: train on a random subset of at most this many images.
        families: near-copy generator families for training pairs; ``val_families`` for the
            validation pairs (defaults to ``families``; hold one out to test generalisation).
            By default the first seven (``BENCHMARK_FAMILIES``); ``fast`` takes all thirteen
            (``ALL_FAMILIES``).
        layer_decay: layer-wise learning-rate decay (DeepSSIM++): the head gets ``lr``, each
            earlier stage ``layer_decay`` times the next one's. None: one learning rate.
        registered_targets: targets are ``registered_ssim`` (DeepSSIM++) instead of ``ssim``.
        in_batch_pairs: extra pairs between the images of each batch, whose embeddings are
            already computed (only the SSIM targets are new). The training inputs are split
            into blocks of ``in_batch_block``, the SSIM of every pair within a block is computed
            once before training, batches are formed from pairs whose first input lies in one
            block, and every pair of the batch's positions holding distinct inputs of one block
            is used, up to ``in_batch_pairs`` times the batch's image count in all (a random
            subset beyond); see ``blocks.py``. 0: off (the paper). Needs plain SSIM targets.
        flip_pairs: probability that a sampled pair is shown flipped, both sides by the same
            random one of the three flips (so its target stands). The in-batch pairs between
            two sampled pairs flipped differently are then unrelated images in another
            relative orientation, and get the SSIM of that orientation as target: a model
            scored over flips learns what every flip of an unrelated image scores, instead of
            only the frame it was trained in. 0: off. Needs plain SSIM targets and no flips in
            ``perturb``.
        copy_partners: each near-copy of a (source, copy) pair also meets, as an in-batch pair,
            the inputs of its source's block that look most like the source (this many, by
            SSIM; ``blocks.CopyPartners``): the pairs of a synthetic image and look-alike
            training images it is judged against, which the block pairs (clean inputs only)
            and the sampled pairs do not hold. Their targets are computed once before
            training. 0: off. Needs ``in_batch_pairs``.
        val_every: validate (and write the model if it is the best so far) every this many
            epochs, and always when training stops; 0: only when it stops. Validation time
            counts against ``max_minutes``.
        init: a model folder (``deepssim train --out``) whose weights training starts from
            instead of ``model.pretrained`` / random ones: fine-tuning a trained DeepSSIM model
            on other data. Its network must be the one ``model`` describes (backbone, width,
            pooling, head); its preprocessing is not checked. The run's own learning-rate
            schedule and optimizer start afresh. A ``pathlib.Path`` is accepted and kept as a
            string.
        cpu_bf16: bfloat16 autocast for the backbone when training on the CPU (faster on CPUs
            with AMX / AVX-512 BF16; the head and the loss stay float32). On CUDA, bfloat16
            autocast is always on. Evaluation and embedding always run in float32.
        compile: run the training steps (normalisation and network) through
            ``torch.compile``: Inductor fuses the normalisation and activation layers with their
            neighbours, for more steps in the same minutes (benchmarks/train_speed.py).
            Compiling takes about a minute the first time on a machine (before the clock of
            ``max_minutes`` starts; Inductor caches it for later runs) and needs a C++ compiler
            on the CPU. Full-size batches only: a last, smaller batch runs uncompiled instead of
            compiling again. If compiling fails the run says so and continues uncompiled.
            Evaluation and embedding never compile.
    """

    preset: str = "fast"
    model: ModelConfig = field(default_factory=ModelConfig)
    preprocess: Preprocess = field(default_factory=Preprocess)
    perturb: PerturbConfig = field(default_factory=PerturbConfig)
    epochs: int = 40
    max_minutes: float | None = None
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-3
    layer_decay: float | None = None
    warmup_fraction: float = 0.05
    grad_clip: float = 1.0
    n_train_pairs: int = 20_000
    n_val_pairs: int = 2_000
    val_fraction: float = 0.1
    max_images: int | None = None
    families: tuple[str, ...] = BENCHMARK_FAMILIES
    val_families: tuple[str, ...] | None = None
    copy_fraction: float = 0.5
    registered_targets: bool = False
    in_batch_pairs: int = 0
    in_batch_block: int = 128
    flip_pairs: float = 0.0
    copy_partners: int = 0
    val_every: int = 1
    init: str | None = None
    cpu_bf16: bool = False
    compile: bool = False
    seed: int = 42

    def __post_init__(self) -> None:
        # A pathlib.Path is the natural value from Python; config.json and the resume state
        # record a string.
        if self.init is not None and not isinstance(self.init, str):
            object.__setattr__(self, "init", os.fspath(self.init))
        self._check()

    def _check(self) -> None:
        """Refuse settings that cannot train, before any image is read."""
        if self.in_batch_pairs < 0:
            raise ValueError(f"in_batch_pairs is a number of pairs per image (0: off), got {self.in_batch_pairs}")
        if self.in_batch_pairs and self.registered_targets:
            raise ValueError("in_batch_pairs needs plain SSIM targets (registered targets are too slow "
                             "to compute per block); set one of them off")
        if self.in_batch_pairs and self.in_batch_block < MIN_IN_BATCH_BLOCK:
            raise ValueError(f"in_batch_block must be at least {MIN_IN_BATCH_BLOCK} inputs, got {self.in_batch_block}")
        if self.copy_partners and (self.copy_partners < 0 or not self.in_batch_pairs):
            raise ValueError("copy_partners pairs near-copies with look-alikes of their sources within the "
                             "in-batch blocks: it needs in_batch_pairs > 0 "
                             f"(got copy_partners={self.copy_partners})")
        if self.val_every < 0:
            raise ValueError(f"val_every is a number of epochs (0: validate only at the end), got {self.val_every}")
        if not 0.0 <= self.flip_pairs <= 1.0:
            raise ValueError(f"flip_pairs is a probability, got {self.flip_pairs}")
        if self.flip_pairs and (self.registered_targets or self.perturb.p_flip0 or self.perturb.p_flip1):
            raise ValueError("flip_pairs recomputes SSIM targets in the pairs' relative orientation: it "
                             "needs plain SSIM targets and no flips in the perturbation (set flip_pairs "
                             "to 0)")
        try:  # recorded in config.json and the resume state: checked before any work, not after it
            json.dumps(self.to_dict())
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the training configuration cannot be recorded as JSON ({exc}): give its "
                             "fields plain values (str, int, float, bool, lists)") from exc

    def caveats(self) -> list[str]:
        """What this configuration trains that is likely not what was meant (the run warns)."""
        if rule(self.model.scoring).trains_with_flips and not (self.perturb.p_flip0 or self.perturb.p_flip1):
            return ["trained without flips and scored by plain cosines: flipped copies will score "
                    "low (score over flips, or train with flips)"]
        return []

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "training") -> TrainConfig:
        """The configuration of a ``to_dict`` result (a model's ``config.json``, a resume
        state), settings it does not record at their defaults. Older files' settings are read
        too: ``in_batch_mining="block"`` and ``in_batch_grouping="random"`` (the one kind of
        in-batch pairs), the model's boolean scoring flags (``ModelConfig.from_dict``). Raises
        ValueError naming a setting this version cannot train, or the field (``where.field``)
        whose value is not of its type."""
        if not isinstance(data, dict):
            checked_fields(cls, data, where)  # raises: not an object
        data = dict(data)
        mining = data.pop("in_batch_mining", "block")
        if mining != "block" and data.get("in_batch_pairs"):
            raise ValueError(f"{where}.in_batch_mining {mining!r}: in-batch pairs are the pairs within "
                             "blocks of inputs; train again without it")
        grouping = data.pop("in_batch_grouping", "random")
        if grouping != "random":
            raise ValueError(f"{where}.in_batch_grouping {grouping!r}: the in-batch blocks hold random "
                             "inputs; train again without it")
        data = checked_fields(cls, data, where)
        if "model" in data:
            data["model"] = ModelConfig.from_dict(data["model"], f"{where}.model")
        if "preprocess" in data:
            data["preprocess"] = Preprocess.from_dict(data["preprocess"], f"{where}.preprocess")
        if "perturb" in data:
            perturb = checked_fields(PerturbConfig, data["perturb"], f"{where}.perturb")
            data["perturb"] = built(PerturbConfig, {k: tuple(v) if isinstance(v, list) else v
                                                    for k, v in perturb.items()}, f"{where}.perturb")
        for key in ("families", "val_families"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        if not data.get("val_families"):
            data["val_families"] = None
        return built(cls, data, where)

    def with_overrides(self, **overrides: Any) -> TrainConfig:
        """A copy with top-level fields replaced; ``model__x`` / ``preprocess__x`` /
        ``perturb__x`` replace a nested field (the CLI's flags map onto these). Settings that
        follow from a choice made here take their derived values unless given too
        (``_derived_defaults``)."""
        nested: dict[str, dict[str, Any]] = {"model": {}, "preprocess": {}, "perturb": {}}
        top: dict[str, Any] = {}
        for key, value in overrides.items():
            part, sep, name = key.partition("__")
            if sep:
                if part not in nested:
                    raise ValueError(f"unknown setting {key!r}: the nested parts are {', '.join(nested)}")
                nested[part][name] = value
            else:
                top[key] = value
        _derived_defaults(self, top, nested)
        for part, values in nested.items():
            if values:
                top[part] = replace(getattr(self, part), **values)
        return replace(self, **top)


def _derived_defaults(config: TrainConfig, top: dict[str, Any], nested: dict[str, dict[str, Any]]) -> None:
    """Fill in, unless given, the settings that follow from the overrides ``top`` / ``nested``
    applied to ``config`` (in place)."""
    model, perturb = nested["model"], nested["perturb"]
    scoring = rule(model.get("scoring", config.model.scoring))
    if scoring.trains_with_flips != rule(config.model.scoring).trains_with_flips:
        # A cosine learns flip invariance from flips (p 0.5 per axis); a rule that scores over
        # flips undoes them, so its network trains without them.
        flip = 0.5 if scoring.trains_with_flips else 0.0
        perturb.setdefault("p_flip0", flip)
        perturb.setdefault("p_flip1", flip)
        if scoring.trains_with_flips:
            top.setdefault("flip_pairs", 0.0)  # flipped pairs teach the orientations a search tries
    if config.model.dilate_last:
        # The dilated last stage serves the fine local layout: a backbone that cannot dilate or
        # another pooling drops it, and without it the grid and embedding size go back to the
        # coarse layout's (ModelConfig's defaults).
        if "dilate_last" not in model and (model.get("backbone", config.model.backbone) not in DILATABLE
                                           or model.get("pooling", config.model.pooling) != "local"):
            model["dilate_last"] = False
        if not model.get("dilate_last", True):
            coarse = ModelConfig()
            model.setdefault("grid", coarse.grid)
            model.setdefault("embedding_dim", coarse.embedding_dim)
    if "in_batch_pairs" in top and not top["in_batch_pairs"]:
        top.setdefault("copy_partners", 0)  # copy partners are in-batch pairs: none without them
