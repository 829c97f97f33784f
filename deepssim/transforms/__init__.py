"""Image changes shared by training, benchmarks and verification.

``perturb``: the nuisance an audit sees through (flips, small rotations, gamma), as the paper
defines it. ``nearcopy``: the changes a memorizing generator makes (noise, blur, warps,
intensity drift, ...), by family and strength.
"""

from .nearcopy import ALL_FAMILIES, BENCHMARK_FAMILIES, FAMILIES, Family
from .perturb import (
    BENCHMARK_PERTURB,
    PAPER_PERTURB,
    Perturb,
    PerturbConfig,
    PerturbParams,
    apply_params,
    apply_to_image,
    draw_params,
    perturb_image,
)

__all__ = [
    "ALL_FAMILIES",
    "BENCHMARK_FAMILIES",
    "BENCHMARK_PERTURB",
    "FAMILIES",
    "PAPER_PERTURB",
    "Family",
    "Perturb",
    "PerturbConfig",
    "PerturbParams",
    "apply_params",
    "apply_to_image",
    "draw_params",
    "perturb_image",
]
