"""The training presets: ``paper``, ``plus`` and ``fast`` (the default), overridable field by
field (``TrainConfig.with_overrides``). docs/ holds what each one measures."""

from __future__ import annotations

from ..model.network import ModelConfig
from ..model.preprocess import Preprocess
from ..transforms.nearcopy import ALL_FAMILIES
from ..transforms.perturb import PAPER_PERTURB, PerturbConfig
from .config import TrainConfig

PRESETS: dict[str, TrainConfig] = {
    # The WACV paper's model.
    "paper": TrainConfig(
        preset="paper",
        # ConvNeXt-Base from ImageNet with its early stages frozen, average pooling, one cosine.
        model=ModelConfig(backbone="convnext_base", pooling="avg", dropout=0.33,
                          frozen_stages=2, pretrained="imagenet"),
        preprocess=Preprocess(size=224, intensity="zscore"),
        # Flips, rotations and gamma at p 0.33 each: the cosine learns to ignore them.
        perturb=PAPER_PERTURB,
        epochs=40, batch_size=32, lr=1e-3, weight_decay=1e-3,
    ),
    # DeepSSIM++.
    "plus": TrainConfig(
        preset="plus",
        # A smaller ConvNeXt; multi-scale GeM pooling of the last two stages.
        model=ModelConfig(backbone="convnext_tiny", pooling="gem", gem_p=3.0, dropout=0.1,
                          pretrained="imagenet"),
        preprocess=Preprocess(size=224, intensity="zscore"),
        perturb=PAPER_PERTURB,
        # Layer-wise learning-rate decay keeps the pretrained early stages close to ImageNet's.
        epochs=65, batch_size=32, lr=1e-3, weight_decay=1e-3, layer_decay=0.3,
        # Targets of the pair as aligned (registered SSIM): a small shift is still a copy.
        registered_targets=True, n_train_pairs=10_000,
    ),
    # What trains in about 10 minutes on a 2-core CPU (benchmarks/train_fast.py).
    "fast": TrainConfig(
        preset="fast",
        # Every near-copy family: more kinds of copies than the benchmark's seven.
        families=ALL_FAMILIES,
        model=ModelConfig(
            # A small CNN trained from scratch: ImageNet backbones are too slow for the CPU.
            backbone="small", width=32, dropout=0.0,
            # Local pooling: SSIM is a mean of local comparisons, the score a mean of the
            # cells' cosines; the last stage dilated gives an 8 x 8 layout at 128 px.
            pooling="local", grid=8, embedding_dim=1024, dilate_last=True,
            # Cross-fitted joint flips: flips undone by the rule instead of learned, four
            # estimates of one SSIM averaged, no upward bias from the best of them.
            scoring="cross-fit",
        ),
        # Rank normalisation: invariant to any monotonic intensity change such as gamma.
        preprocess=Preprocess(size=128, intensity="rank"),
        # No flips (the scoring undoes them); rotation and gamma stay.
        perturb=PerturbConfig(p_flip0=0.0, p_flip1=0.0, p_rotate=0.8, max_degrees=10.0,
                              p_gamma=0.8, gamma_range=(0.5, 1.5)),
        # A time budget instead of epochs; bfloat16 and compiled steps for more steps in it.
        epochs=1000, max_minutes=10.0, batch_size=96, lr=2e-3, weight_decay=1e-4,
        n_train_pairs=40_000, n_val_pairs=2_000, max_images=3000, cpu_bf16=True, compile=True,
        # In-batch pairs within blocks of 128 inputs: thousands of unrelated pairs a step whose
        # targets are computed once, the pairs an audit takes the maximum over.
        in_batch_pairs=32, in_batch_block=128,
        # Sampled pairs shown flipped, so in-batch pairs meet in every relative orientation
        # with that orientation's SSIM: the flips the scoring tries are trained.
        flip_pairs=0.75,
        # Each near-copy meets the look-alikes of its source: a synthetic image is judged
        # against the training images that look most like it.
        copy_partners=12,
        # Validated at the end only: validations within the budget cost steps.
        val_every=0,
    ),
}


def get_preset(name: str) -> TrainConfig:
    """The preset called ``name``; ValueError naming the presets for any other name."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}")
    return PRESETS[name]
