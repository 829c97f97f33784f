"""Training configurations: the ``paper``, ``plus`` and ``fast`` presets, overridable field by field."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from ..model.network import DILATABLE, ModelConfig
from ..model.preprocess import Preprocess
from ..transforms.nearcopy import ALL_FAMILIES, BENCHMARK_FAMILIES
from ..transforms.perturb import PAPER_PERTURB, PerturbConfig


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (recorded in the model's ``config.json``).

    Attributes:
        epochs: passes over the training pairs (the run may stop earlier at ``max_minutes``).
        n_train_pairs / n_val_pairs: pairs built (and cached) from the training / validation
            images; validation images never appear in training pairs.
        families: near-copy generator families for training pairs; ``val_families`` for the
            validation pairs (defaults to ``families``; hold one out to test generalisation).
            By default the first seven (as ``paper`` and ``plus`` were measured); ``fast``
            takes all thirteen (``ALL_FAMILIES``).
        layer_decay: layer-wise learning-rate decay (DeepSSIM++): the head gets ``lr``, each
            earlier stage ``layer_decay`` times the next one's. None: one learning rate.
        registered_targets: targets are ``registered_ssim`` (DeepSSIM++) instead of ``ssim``.
        in_batch_pairs: extra pairs per image of each batch, formed between images of the
            batch (their embeddings are already computed; only the SSIM targets are new).
            0: off (the paper). ``in_batch_mining``: partners drawn at random, or the
            ``hardest`` ones (highest current cosine among the batch's other images), or
            ``block``: the training inputs are split into blocks of ``in_batch_block``, the
            SSIM of every pair within a block is computed once before training, batches are
            formed from pairs whose first input lies in one block, and every pair of the
            batch's positions holding distinct inputs of one block is used, up to
            ``in_batch_pairs`` times the batch's image count in all (a random subset beyond);
            see ``blocks.py``. ``in_batch_grouping``: those blocks hold random inputs, or
            ``similar`` ones (look-alike thumbnails), whose pairs are the hard pairs of distinct
            images that random pairs almost never are (SSIM 0.4-0.7).
        flip_pairs: probability that a sampled pair is shown flipped, both sides by the same
            random one of the three flips (so its target stands). The in-batch pairs between
            two sampled pairs flipped differently are then unrelated images in another
            relative orientation, and get the SSIM of that orientation as target: a model
            scored by flip search (the best cosine over the flips) learns what every flip of
            an unrelated image scores, instead of only the frame it was trained in. 0: off.
            Needs plain SSIM targets and no flips in ``perturb``.
        copy_partners: with block in-batch pairs, each near-copy of a (source, copy) pair also
            meets, as an in-batch pair, the inputs of its source's block that look most like the
            source (this many, by SSIM; ``blocks.CopyPartners``): the pairs of a synthetic image
            and look-alike training images it is judged against, which the block pairs (clean
            inputs only) and the sampled pairs do not hold. Their targets are computed once
            before training. 0: off.
        val_every: validate (and write the model if it is the best so far) every this many
            epochs, and always when training stops; 0: only when it stops. Validation time
            counts against ``max_minutes``: the ``fast`` preset validates only at the end (a
            validation of 2,000 pairs costs it about 30 s on the 2-core CPU, with flip search).
        init: a model folder (``deepssim train --out``) whose weights training starts from
            instead of ``model.pretrained`` / random ones: fine-tuning a trained DeepSSIM model
            on other data. Its network must be the one ``model`` describes (backbone, width,
            pooling, head); its preprocessing is not checked. The run's own learning-rate
            schedule and optimizer start afresh. A ``pathlib.Path`` is accepted and kept as a
            string.
        cpu_bf16: bfloat16 autocast for the backbone when training on the CPU (2.3x faster on
            CPUs with AMX / AVX-512 BF16; the head and the loss stay float32). On CUDA, bfloat16
            autocast is always on. Evaluation and embedding always run in float32.
        compile: run the training steps (normalisation and network) through
            ``torch.compile``: Inductor fuses the normalisation and activation layers with their
            neighbours, which gives the ``fast`` preset 1.2-1.4x more steps in 10 minutes on
            the CPU (docs/quality.md, benchmarks/train_speed.py). Compiling takes about a
            minute the first time on a machine (before the clock of ``max_minutes`` starts;
            Inductor caches it for later runs) and needs a C++ compiler on the CPU. Full-size
            batches only: a last, smaller batch runs uncompiled instead of compiling again. If
            compiling fails the run says so and continues uncompiled. Evaluation and
            embedding never compile.
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
    in_batch_mining: Literal["random", "hardest", "block"] = "random"
    in_batch_block: int = 128
    in_batch_grouping: Literal["random", "similar"] = "random"
    flip_pairs: float = 0.0
    copy_partners: int = 0
    val_every: int = 1
    init: str | None = None
    cpu_bf16: bool = False
    compile: bool = False
    seed: int = 42

    def __post_init__(self) -> None:
        # A pathlib.Path is the natural value from Python; config.json and the resume state
        # record a string (a Path there made the run fail when it wrote the model).
        if self.init is not None and not isinstance(self.init, str):
            object.__setattr__(self, "init", os.fspath(self.init))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        return cls(
            **{
                **data,
                "model": ModelConfig.from_dict(data["model"]),
                "preprocess": Preprocess.from_dict(data["preprocess"]),
                "perturb": PerturbConfig(**{k: tuple(v) if isinstance(v, list) else v
                                            for k, v in data["perturb"].items()}),
                "families": tuple(data["families"]),
                "val_families": tuple(data["val_families"]) if data.get("val_families") else None,
            }
        )

    def with_overrides(self, **overrides: Any) -> TrainConfig:
        """A copy with top-level fields replaced; ``model__x`` / ``preprocess__x`` /
        ``perturb__x`` replace a nested field (the CLI's flags map onto these)."""
        nested: dict[str, dict[str, Any]] = {"model": {}, "preprocess": {}, "perturb": {}}
        top: dict[str, Any] = {}
        for key, value in overrides.items():
            part, sep, name = key.partition("__")
            if sep:
                nested[part][name] = value
            else:
                top[key] = value
        # Cross-fitting chooses among the joint views of flip search: turning either off turns
        # it off too, unless it is set explicitly (and then refused by ModelConfig).
        if "cross_fit" not in nested["model"] and not all(nested["model"].get(k, True)
                                                          for k in ("flip_search", "joint_flips")):
            nested["model"]["cross_fit"] = False
        # A flip moves the cells of a local layout: a flip-symmetric embedding pools globally
        # unless a pooling is set explicitly (``local`` is then refused by ModelConfig).
        if (nested["model"].get("flip_symmetric") and "pooling" not in nested["model"]
                and self.model.pooling == "local"):
            nested["model"]["pooling"] = "avg"
        # A fine layout (local pooling on a dilated last stage, as in ``fast``) holds together:
        # a backbone that cannot dilate or another pooling drops the dilation, and without it
        # the grid and embedding size go back to the coarse layout's (ModelConfig's defaults),
        # each unless set explicitly (a dilation then refused by ModelConfig).
        if self.model.dilate_last:
            model = nested["model"]
            if "dilate_last" not in model and (
                    model.get("backbone", self.model.backbone) not in DILATABLE
                    or model.get("pooling", self.model.pooling) != "local"):
                model["dilate_last"] = False
            if not model.get("dilate_last", True):
                coarse = ModelConfig()
                model.setdefault("grid", coarse.grid)
                model.setdefault("embedding_dim", coarse.embedding_dim)
        # The unshuffle stem is the small backbone's: another backbone takes its own stem
        # unless one is set explicitly (and then refused by ModelConfig).
        if (self.model.stem != "pool" and "stem" not in nested["model"]
                and nested["model"].get("backbone", self.model.backbone) != "small"):
            nested["model"]["stem"] = "pool"
        # Copy partners are in-batch pairs of the blocks: setting other in-batch pairs, or none,
        # turns them off unless they are set explicitly (and then refused by ``train``).
        if ("copy_partners" not in top and ("in_batch_mining" in top or "in_batch_pairs" in top)
                and (top.get("in_batch_mining", self.in_batch_mining) != "block"
                     or not top.get("in_batch_pairs", self.in_batch_pairs))):
            top["copy_partners"] = 0
        for part, values in nested.items():
            if values:
                top[part] = replace(getattr(self, part), **values)
        return replace(self, **top)


PRESETS: dict[str, TrainConfig] = {
    # The WACV paper: ConvNeXt-Base from ImageNet, early stages frozen, avg pooling.
    "paper": TrainConfig(
        preset="paper",
        model=ModelConfig(backbone="convnext_base", pooling="avg", dropout=0.33,
                          frozen_stages=2, pretrained="imagenet"),
        preprocess=Preprocess(size=224, intensity="zscore"),
        perturb=PAPER_PERTURB,
        epochs=40, batch_size=32, lr=1e-3, weight_decay=1e-3,
    ),
    # DeepSSIM++: ConvNeXt-Tiny, multi-scale GeM, layer-wise LR decay, registered targets.
    "plus": TrainConfig(
        preset="plus",
        model=ModelConfig(backbone="convnext_tiny", pooling="gem", gem_p=3.0, dropout=0.1,
                          pretrained="imagenet"),
        preprocess=Preprocess(size=224, intensity="zscore"),
        perturb=PAPER_PERTURB,
        epochs=65, batch_size=32, lr=1e-3, weight_decay=1e-3, layer_decay=0.3,
        registered_targets=True, n_train_pairs=10_000,
    ),
    # What trains in about 10 minutes on a 2-core CPU (benchmarks/train_fast.py).
    "fast": TrainConfig(
        preset="fast",
        families=ALL_FAMILIES,
        # Flip search (model/flips.py): scored as the best cosine over the four flips of the
        # second image, so trained without flips: benchmark macro F1 perturbed 0.62 -> 0.69
        # (fixed thresholds) / 0.74 (calibrated), for MAE 0.067 -> 0.082 on train_fast's
        # pairs, where it over-estimates unrelated images (docs/quality.md, run 24).
        # Joint flips (model/flips.py): each cosine the mean over the four flips of both images,
        # four estimates of one SSIM: MAE 0.067 -> 0.055 on train_fast's pairs with the same
        # weights (docs/quality.md, run 27); the real side is embedded four times.
        # Cross-fitted flips (model/flips.py): the relative flip chosen with half of the joint
        # views and scored with the other half, so unrelated images are not scored by the
        # luckiest of four estimates: MAE 0.056 -> 0.053 with the same weights (run 30).
        # Local pooling (model/network.py): the head applied to each cell of a 4 x 4 layout of
        # the last stage, the cosine the mean of the 16 cells' cosines, as SSIM is a mean of
        # local comparisons: MAE 0.050 -> 0.047 in the same 10 minutes, the unseen `mix`
        # copies 0.072 -> 0.063 (docs/quality.md, runs 35 and 36).
        # A finer layout (model/network.py, dilate_last): the last stage at stride 1 (dilated),
        # 8 x 8 cells of 16 pixels, 16 values each (1,024 in all); steps about 30% slower. On
        # brain128nd, macro F1 fixed 0.774-0.793 -> 0.799 registered, 0.754-0.772 -> 0.786
        # perturbed, the MAE of the 30-minute 4 x 4 model in 10 minutes (docs/quality.md,
        # session 18).
        # The unshuffle stem (model/network.py, --stem unshuffle) makes a step about 1.3x
        # faster, but its 1.3x more steps in the 10 minutes gave the same validation MAE and
        # benchmark F1 (docs/quality.md, run 40 and the issue-5 section's session 19): the
        # pool stem stays.
        model=ModelConfig(backbone="small", width=32, pooling="local", grid=8, embedding_dim=1024,
                          dilate_last=True, dropout=0.0, flip_search=True, joint_flips=True,
                          cross_fit=True),
        preprocess=Preprocess(size=128, intensity="rank"),
        perturb=PerturbConfig(p_flip0=0.0, p_flip1=0.0, p_rotate=0.8, max_degrees=10.0,
                              p_gamma=0.8, gamma_range=(0.5, 1.5)),
        epochs=1000, max_minutes=10.0, batch_size=96, lr=2e-3, weight_decay=1e-4,
        n_train_pairs=40_000, n_val_pairs=2_000, max_images=3000, cpu_bf16=True, compile=True,
        # In-batch pairs: MAE 0.099 -> 0.074 in the same 10 minutes; with targets precomputed
        # per block of 128 inputs (every pair of a batch's inputs of one block, about 4,000
        # a step; 32 x 192 images is a cap it never reaches) and 96 sampled pairs a step,
        # 0.071 (docs/quality.md, runs 7 and 14). All thirteen families and compiled steps
        # (about 1.3x more of them): 0.067 (run 20, measured with eleven: the script holds
        # out resample and mix for validation; 0.070 uncompiled, run 21).
        in_batch_pairs=32, in_batch_mining="block", in_batch_block=128,
        # Flip search over-estimates unrelated images when their flipped views were never
        # trained: three in four sampled pairs shown flipped, so that in-batch pairs meet in
        # every relative orientation with that orientation's SSIM, 0.082 -> 0.071, r 0.943 ->
        # 0.954 (runs 24 and 25).
        flip_pairs=0.75,
        # A synthetic image is judged against the training images that look most like it:
        # each near-copy also meets the 12 look-alikes of its source in its block as in-batch
        # pairs. On brain128nd the look-alike pairs' over-estimation +0.082 -> +0.061-0.064
        # and macro F1 (fixed thresholds, means of runs) 0.750 -> 0.763 perturbed, 0.762 ->
        # 0.781 registered; train_fast's MAE unchanged (docs/quality.md, run 38, session 17).
        copy_partners=12,
        # Validated at the end only: two validations within the 10 minutes cost about a
        # tenth of its steps.
        val_every=0,
    ),
}


def get_preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}")
    return PRESETS[name]
