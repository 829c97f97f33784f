"""The memorization case study: a MONAI latent diffusion model trained with duplicated records.

``train_vae`` -> ``train_ldm`` -> ``sample``; ``case_study`` runs the whole experiment.
Names load on first use (torch and MONAI take seconds to import; the CLI's help should not).
"""

from importlib import import_module
from typing import Any

_WHERE = {
    "CaseStudyConfig": "casestudy", "case_study": "casestudy",
    "Ldm": "diffusion", "load_ldm": "diffusion", "sample": "diffusion", "train_ldm": "diffusion",
    "LEVELS": "duplication", "copy_counts": "duplication",
    "PRESETS": "presets", "LdmConfig": "presets", "UnetConfig": "presets", "VaeConfig": "presets",
    "preset": "presets",
    "load_vae": "vae", "train_vae": "vae",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'deepssim.ldm' has no attribute {name!r}")
