"""The findings of the case study and its ``report.md``.

Per duplication level: the oracle's memorization rate with its 95% interval and its dependence
on the number of copies of a training image, the rate against the first level's, and the
DeepSSIM audit's agreement with the oracle; a gallery of the closest copies; the Markdown
report rendered from ``case_study.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..classes import SIMILAR_THRESHOLD, wilson_interval
from .oracle import Oracle
from .store import write_grid

COPY_BINS = ((1, 3), (4, 7), (8, 11), (12, 14))
GALLERY_ROWS = 12


def memorization(oracle: Oracle, counts: np.ndarray) -> dict[str, Any]:
    """The oracle's findings for one level: rate with interval, distinct images, by copy count."""
    copies = oracle.is_copy
    k, n = int(copies.sum()), len(copies)
    lo, hi = wilson_interval(k, n)
    per_image = np.bincount(oracle.nearest[copies], minlength=len(counts))
    by_copies = []
    for a, b in COPY_BINS:
        sel = (counts >= a) & (counts <= b)
        if sel.any():
            by_copies.append({"copies": f"{a}-{b}", "images": int(sel.sum()),
                              "images_copied": int((per_image[sel] > 0).sum()),
                              "share_copied": float((per_image[sel] > 0).mean()),
                              "copying_samples": int(per_image[sel].sum()),
                              "samples_per_image": float(per_image[sel].mean())})
    out: dict[str, Any] = {
        "samples": n, "copies": k, "rate": k / n, "rate_ci95": [lo, hi],
        "similar": int(((oracle.aligned > SIMILAR_THRESHOLD) & ~copies).sum()),
        "distinct_images_copied": int((per_image > 0).sum()),
        "median_nearest_ssim": float(np.median(oracle.aligned)),
        "by_copies": by_copies,
    }
    if counts.min() != counts.max() and per_image.min() != per_image.max():
        from scipy.stats import spearmanr

        out["spearman_copies_vs_copying_samples"] = float(spearmanr(counts, per_image).statistic)
    return out


def rate_ratio(level: dict[str, Any], base: dict[str, Any]) -> dict[str, float | None]:
    """How many times the first level's memorization rate: the point estimate (None when the
    base rate is 0) and the conservative one, lower 95% bound over the base's upper bound."""
    return {"estimate": level["rate"] / base["rate"] if base["rate"] else None,
            "conservative": level["rate_ci95"][0] / base["rate_ci95"][1]}


def agreement(flagged: np.ndarray, best: np.ndarray, oracle: Oracle) -> dict[str, Any]:
    """Precision and recall of the audit's flagged copies against the oracle's, and top-1."""
    copies = oracle.is_copy
    tp = int((flagged & copies).sum())
    n_flag, n_copy = int(flagged.sum()), int(copies.sum())
    top1 = int((best[copies] == oracle.nearest[copies]).sum())
    return {"flagged": n_flag, "oracle_copies": n_copy, "true_positives": tp,
            "precision": tp / n_flag if n_flag else None,
            "recall": tp / n_copy if n_copy else None,
            "top1": top1 / n_copy if n_copy else None}


def write_gallery(path: Path, train: np.ndarray, samples: np.ndarray, oracle: Oracle) -> Path | None:
    """The oracle's closest copies as a PNG grid, a row each: sample | training image | difference
    (None when there is no copy)."""
    idx = np.flatnonzero(oracle.is_copy)
    if not len(idx):
        return None
    idx = idx[np.argsort(-oracle.aligned[idx])][:GALLERY_ROWS]
    tiles = [im for i in idx for im in (samples[i], train[oracle.nearest[i]],
                                        np.abs(samples[i] - train[oracle.nearest[i]]))]
    return write_grid(path, np.stack(tiles), columns=3)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def render_report(s: dict[str, Any]) -> str:
    """The Markdown report of a case study (figures from ``case_study.json``)."""
    c = s["config"]
    lines = [
        "# Memorization case study", "",
        f"{c['n_train']} distinct training images, LDM preset `{c['preset']}` "
        f"({s['ldm_config']['image_size']} x {s['ldm_config']['image_size']}), {c['n_samples']} DDIM samples "
        f"per level, training matched by {c['match']}, seed {c['seed']}.",
        f"VAE: {s['vae']['steps']} steps, reconstruction SSIM median {s['vae']['recon_ssim']['median']:.3f} "
        f"(10th percentile {s['vae']['recon_ssim']['p10']:.3f}): a perfect copy scores about this much.", "",
        "## Memorization rate (oracle: aligned SSIM > 0.85 to the nearest training image)", "",
        "| level | records | steps | train min | copies / samples | rate | 95% CI | similar | median nearest SSIM "
        "| distinct images copied | x first level (conservative) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lv, v in s["levels"].items():
        o = v["oracle"]
        r = s["rate_ratio_vs_first_level"][lv]
        ratio = ("—" if r["estimate"] is None else f"{r['estimate']:.1f}x") + f" (≥ {r['conservative']:.1f}x)"
        lines.append(f"| {lv} | {v['records']} | {v['steps']} | {v['train_seconds'] / 60:.1f} | {o['copies']} / {o['samples']} "
                     f"| {_pct(o['rate'])} | {_pct(o['rate_ci95'][0])}–{_pct(o['rate_ci95'][1])} | {o['similar']} "
                     f"| {o['median_nearest_ssim']:.3f} "
                     f"| {o['distinct_images_copied']} | {ratio} |")
    for lv, v in s["levels"].items():
        rows = v["oracle"]["by_copies"]
        if len(rows) < 2:
            continue
        lines += ["", f"### `{lv}`: memorization by number of copies of a training image", "",
                  "| copies | images | images copied | share copied | copying samples | samples per image |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['copies']} | {r['images']} | {r['images_copied']} | {_pct(r['share_copied'])} | "
                  f"{r['copying_samples']} | {r['samples_per_image']:.2f} |" for r in rows]
        if "spearman_copies_vs_copying_samples" in v["oracle"]:
            lines.append(f"\nSpearman correlation of copies with copying samples per image: "
                         f"{v['oracle']['spearman_copies_vs_copying_samples']:.2f}.")
    lines += ["", "## DeepSSIM audit against the oracle", "",
              "| level | audit | flagged | oracle copies | precision | recall | top-1 |", "|---|---|---|---|---|---|---|"]
    for lv, v in s["levels"].items():
        for tag, a in v.get("audit", {}).items():
            lines.append(f"| {lv} | {tag} | {a['flagged']} | {a['oracle_copies']} | {_pct(a['precision'])} | "
                         f"{_pct(a['recall'])} | {_pct(a['top1'])} |")
    lines += ["", "## Files (relative to the case-study folder)", ""]
    for lv, v in s["levels"].items():
        lines.append(f"- `{lv}`: samples grid `{v['grid']}`, copies gallery (sample | training | difference) "
                     f"`{v['gallery']}`, audit report `audit-{lv}/report.html`, benchmark `bench-{lv}/`")
    lines.append(f"\nTotal time {s['timings']['total_seconds'] / 60:.1f} min.")
    return "\n".join(lines) + "\n"
