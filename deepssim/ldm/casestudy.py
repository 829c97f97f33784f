"""``deepssim case-study``: train a latent diffusion model with and without duplicated training
records, sample it, find its copies with the oracle, and check that the DeepSSIM audit finds them.

Stages (each resumes or is skipped when a rerun finds it finished, so an interrupted study
continues where it stopped):

1. ``train/``: the training subset, ``n_train`` distinct images (``subset.py``), ``train.csv``.
2. ``vae/``: one autoencoder for all levels (only the diffusion model sees the duplication, so
   the levels differ in that alone).
3. ``ldm-<level>/``: the diffusion model per duplication level. ``match="steps"`` (default:
   every level gets the optimiser steps of the first level, i.e. the same compute, so that the
   levels differ only in how the views are spread over the images) or ``"epochs"`` (every level
   trains the preset's epochs over its own records: duplicated records make longer epochs, so
   the duplicated model also gets more compute).
4. ``samples-<level>/``: ``n_samples`` samples (DDIM) with ``manifest.csv``.
5. ``oracle-<level>.csv`` (and ``.json``: how it was computed, so that a rerun reuses it only
   when nothing changed): each sample's nearest training image by aligned SSIM (``oracle.py``); a copy when
   > 0.85. ``bench-<level>/``: the samples as a benchmark folder (docs/benchmark.md), labelled by the
   reference SSIM, so ``deepssim evaluate`` runs on real generated images.
6. ``deepssim-model/`` (unless ``model`` is given): the ``fast`` DeepSSIM preset trained on
   ``train/`` only; ``audit-<level>/``: the audit of the samples (``verify`` checks too).
7. ``case_study.json`` and ``report.md`` (``report.py``): memorization rate per level with 95%
   intervals, its dependence on the number of copies, DeepSSIM's agreement with the oracle,
   grids and galleries.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..benchmark import build_from_samples
from ..storage import atomic_write_bytes, write_csv
from .diffusion import sample, train_ldm
from .duplication import LEVELS
from .nets import needs_monai
from .oracle import GRID, Oracle, cached_nearest_training
from .presets import preset
from .report import agreement, memorization, rate_ratio, render_report, write_gallery
from .store import CONFIG, STATE, load_folder
from .subset import choose_subset, write_subset
from .vae import train_vae

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaseStudyConfig:
    preset: str = "small"
    n_train: int = 100
    levels: tuple[str, ...] = ("none", "high")
    n_samples: int = 300
    match: str = "steps"
    vae_epochs: int | None = None
    unet_epochs: int | None = None
    deepssim_minutes: float = 8.0
    verify: int = 10
    seed: int = 0
    ldm_overrides: dict[str, Any] = field(default_factory=dict)
    """More preset settings (``preset()`` names: ``image_size``, ``unet_lr``, ...)."""
    deepssim_overrides: dict[str, Any] = field(default_factory=dict)
    """More settings of the DeepSSIM model's ``fast`` preset (``TrainConfig.with_overrides``
    names: ``compile``, ``batch_size``, ...)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(self.levels))
        unknown = [lv for lv in self.levels if lv not in LEVELS]
        if unknown or not self.levels:
            raise ValueError(f"duplication levels must be among {', '.join(LEVELS)} (got {self.levels})")
        if self.match not in ("epochs", "steps"):
            raise ValueError(f"match must be 'epochs' or 'steps', not {self.match!r}")
        if self.n_train < 2 or self.n_samples < 1:
            raise ValueError("the case study needs at least 2 training images and 1 sample")


def _finished(folder: Path) -> bool:
    """A training folder whose run ended (its final config records how it stopped)."""
    path = folder / CONFIG
    return path.is_file() and "stopped_by" in json.loads(path.read_text())


def _train_subset(images: Sequence[str | Path], out: Path, config: CaseStudyConfig, size: int,
                  progress: bool) -> tuple[np.ndarray, list[str]]:
    folder, table = out / "train", out / "train.csv"
    if not table.is_file():
        subset, ids = choose_subset(images, config.n_train, size, config.seed, progress=progress)
        names = write_subset(folder, subset, ids)
        write_csv(table, ["train", "source"], [{"train": n, "source": i} for n, i in zip(names, ids)])
    return load_folder([folder], size)


def _audit(out: Path, level: str, model: Path, names: list[str], oracle: Oracle, config: CaseStudyConfig,
           device: str, progress: bool) -> dict[str, Any]:
    from ..auditing import SearchOptions, VerifyOptions, audit

    result = {}
    for tag, verify in (("deepssim", 0), ("verified", config.verify)):
        if tag == "verified" and not verify:
            continue
        # The oracle's grid, uncorrected: verified scores are the oracle's measure.
        res = audit(out / "train", out / f"samples-{level}", model, search=SearchOptions(top_k=max(5, verify)),
                    verify=VerifyOptions(top=verify, grid=GRID, correct=False), cache_dir=out / "cache", device=device,
                    progress=progress)
        if tag == "verified" or not config.verify:
            res.save(out / f"audit-{level}", progress=progress)
        order = [int(Path(s).stem.split("_")[-1]) for s in res.synthetic_ids]
        train_idx = {Path(t).stem: k for k, t in enumerate(names)}
        flagged = np.zeros(len(order), bool)
        best = np.full(len(order), -1)
        for k, i in enumerate(order):
            flagged[i] = res.labels[k] == "duplicate"
            best[i] = train_idx[Path(res.train_ids[res.best_train[k]]).stem]
        t = res.decision_thresholds if tag == "verified" and res.decision_thresholds else res.thresholds
        result[tag] = {**agreement(flagged, best, oracle), "thresholds": [t.different_max, t.duplicate_min]}
    return result


@needs_monai
def case_study(
    images: Sequence[str | Path],
    out_dir: str | Path,
    config: CaseStudyConfig = CaseStudyConfig(),
    *,
    model: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole experiment into ``out_dir`` and return what ``case_study.json`` holds."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    ldm_config = preset(config.preset, **{"vae_epochs": config.vae_epochs, "unet_epochs": config.unet_epochs,
                                          "seed": config.seed, **config.ldm_overrides})
    size = ldm_config.image_size
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    train, _ = _train_subset(images, out, config, size, progress)
    names = sorted(p.name for p in (out / "train").glob("*.png"))
    say(f"[1/6] training subset: {len(train)} distinct images at {size} x {size} in {out / 'train'}")

    vae_dir = out / "vae"
    if not _finished(vae_dir):
        train_vae([out / "train"], vae_dir, ldm_config, device=device,
                  resume=(vae_dir / STATE).is_file(), progress=progress)
    vae_meta = json.loads((vae_dir / CONFIG).read_text())
    timings["vae_seconds"] = vae_meta["seconds"]
    say(f"[2/6] VAE: {vae_meta['steps']} steps, reconstruction SSIM median "
        f"{vae_meta['recon_ssim']['median']:.3f} (the ceiling of a copy's SSIM)")

    levels: dict[str, Any] = {}
    oracles: dict[str, Oracle] = {}
    step_budget = None
    for level in config.levels:
        ldm_dir = out / f"ldm-{level}"
        overrides: dict[str, Any] = {}
        if config.match == "steps" and step_budget is not None:
            overrides["epochs"] = 10**6  # the step budget stops it
        if not _finished(ldm_dir):
            train_ldm([out / "train"], vae_dir, ldm_dir, duplication=level, unet_overrides=overrides,
                      device=device, resume=(ldm_dir / STATE).is_file(), progress=progress,
                      max_steps=step_budget if config.match == "steps" else None)
        meta = json.loads((ldm_dir / CONFIG).read_text())
        if step_budget is None:
            step_budget = meta["steps"]
        with open(ldm_dir / "duplication.csv", newline="") as fh:
            counts = np.array([int(r["copies"]) for r in csv.DictReader(fh)])
        paths = sample(ldm_dir, out / f"samples-{level}", n=config.n_samples, seed=config.seed,
                       device=device, progress=progress)
        samples, _ = load_folder([out / f"samples-{level}"], size)
        oracle = oracles[level] = cached_nearest_training(out / f"oracle-{level}.csv", train, samples, names,
                                                          progress)
        found = memorization(oracle, counts)
        gallery = write_gallery(out / f"copies-{level}.png", train, samples, oracle)
        levels[level] = {"records": meta["n_records"], "epochs": meta["epochs_done"], "steps": meta["steps"],
                         "train_seconds": meta["seconds"], "scale_factor": meta["scale_factor"],
                         "oracle": found, "samples_dir": paths[0].parent.name,
                         "grid": f"{ldm_dir.name}/grids/ldm_final.png",
                         "gallery": gallery.name if gallery else None}
        say(f"[3-4/6] {level}: {meta['n_records']} records, {meta['steps']} steps; "
            f"{found['copies']} of {found['samples']} samples are copies by the oracle "
            f"({found['rate']:.1%}, 95% CI {found['rate_ci95'][0]:.1%}-{found['rate_ci95'][1]:.1%})")
        build_from_samples(out / "train", out / f"samples-{level}", out / f"bench-{level}",
                           seed=config.seed, overwrite=True, progress=False)

    t0 = time.perf_counter()
    if model is None:
        model = out / "deepssim-model"
        if not (Path(model) / "model.safetensors").is_file():
            from ..training import get_preset, train as train_deepssim

            cfg = get_preset("fast").with_overrides(**{
                "max_minutes": config.deepssim_minutes, "seed": config.seed, "preprocess__size": size,
                **config.deepssim_overrides})
            train_deepssim([out / "train"], model, cfg, device=device, progress=progress)
        timings["deepssim_train_seconds"] = time.perf_counter() - t0
    say(f"[5/6] DeepSSIM model: {model}")
    for level in config.levels:
        levels[level]["audit"] = _audit(out, level, Path(model), names, oracles[level], config, device, progress)

    base = levels[config.levels[0]]["oracle"]
    summary = {
        "config": asdict(config), "ldm_config": ldm_config.to_dict(), "images": [str(Path(i).absolute()) for i in images],
        "vae": {"steps": vae_meta["steps"], "seconds": vae_meta["seconds"], "recon_ssim": vae_meta["recon_ssim"]},
        "levels": levels,
        "rate_ratio_vs_first_level": {lv: rate_ratio(v["oracle"], base) for lv, v in levels.items()},
        "model": str(model), "timings": {**timings, "total_seconds": time.perf_counter() - t_start},
    }
    atomic_write_bytes(out / "case_study.json", (json.dumps(summary, indent=2) + "\n").encode())
    atomic_write_bytes(out / "report.md", render_report(summary).encode())
    say(f"[6/6] report: {out / 'report.md'} ({summary['timings']['total_seconds'] / 60:.1f} min in all)")
    return summary
