"""The case study's scale: 2,195 training images and 30 synthetic images per training image
(65,850) at 112 x 136, audited by the default `deepssim audit --train --synthetic --out`.

The workload (``build``, written once into ``WORK/data``, reused by later runs):
- 2,195 training images from the brain-tumor-mri folder, split from the non-members by group of
  near-identical images (``benchmark.split``), stretched to 112 x 136 and written as 16-bit PNG;
- ``--copy-share`` (2%) of the synthetic images are planted copies of distinct training images,
  each changed by a generator-like near-copy family (``--families``; smooth warps, intensity
  non-uniformity, noise, blur, resampling, contrast) at a strength uniform in ``--strength``, so
  that their clean-frame SSIM spreads across the duplicate threshold;
- the rest are novel images: non-members changed by the same families;
- every synthetic image is then perturbed as the paper does (flips, rotation up to 10 degrees,
  gamma 0.5-1.5, each at p 0.33).

Truth: each synthetic image's clean-frame SSIM (before the paper's perturbation) to its nearest
training image, found among its planted source and its ``SHORTLIST`` nearest training images in
pixel space (z-scored, 4 x 4 block means); a copy is a clean-frame SSIM above 0.85, its source
that nearest image (or one of its group of near-identical training images).

The audit runs as a user runs it, in a subprocess (its peak memory is its own): first on the
training images against 32 synthetic images, which trains the `fast` model and keeps it in the
cache (reported apart), then the whole audit, which reuses it. Prints each stage's time and peak
memory, precision, recall and top-1 source of the copies, and the memorization rate beside the
true one; the audit's time over the 10-minute target is the ratio to read.

    python benchmarks/paper_scale.py --work scale
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from deepssim.benchmark.neardup import DEFAULT_THRESHOLD as NEAR_DUPLICATE_THRESHOLD
from deepssim.benchmark.split import group_images, split_groups
from deepssim.benchmark.write import to_uint16
from deepssim.classes import DUPLICATE_THRESHOLD
from deepssim.readers import load_stack
from deepssim.refssim import ssim_pairs
from deepssim.transforms.nearcopy import FAMILIES
from deepssim.transforms.perturb import PAPER_PERTURB, perturb_image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brain-tumor-mri" / "Training"
SHAPE = (112, 136)
N_TRAIN = 2195
SHORTLIST = 8
"""Training images nearest in pixel space whose clean-frame SSIM is computed (besides a copy's
planted source)."""
CHUNK = 512

_STATE: dict = {}  # each worker process's copy of the stacks (``_init``)


def _init(state: dict) -> None:
    import torch

    torch.set_num_threads(1)
    _STATE.update(state)


def _stretch(image: np.ndarray) -> np.ndarray:
    x = np.asarray(image, dtype=np.float32)
    if x.ndim == 3:
        x = x.mean(axis=-1)
    lo, hi = float(x.min()), float(x.max())
    x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    return np.asarray(Image.fromarray(x).resize(SHAPE[::-1], Image.BILINEAR), dtype=np.float32)


def _quantised(image: np.ndarray) -> np.ndarray:
    """The image as a 16-bit PNG reads back, scaled to [0, 1]."""
    return to_uint16(image).astype(np.float32) / 65535.0


def _descriptor(stack: np.ndarray) -> np.ndarray:
    n, h, w = stack.shape
    small = stack[:, : h // 4 * 4, : w // 4 * 4].reshape(n, h // 4, 4, w // 4, 4).mean(axis=(2, 4)).reshape(n, -1)
    small = small - small.mean(axis=1, keepdims=True)
    return (small / (np.linalg.norm(small, axis=1, keepdims=True) + 1e-12)).astype(np.float32)


def _make(job: tuple[int, tuple[np.ndarray, ...]]) -> list[dict]:
    """Synthetic images ``start .. start + len(plan)``: made, judged in the clean frame,
    perturbed and written."""
    start, plan = job
    s = _STATE
    train, pool, desc, out = s["train"], s["pool"], s["desc"], s["out"]
    names = list(s["families"])
    clean, rows = [], []
    for k, (planted, origin, fam, strength) in enumerate(zip(*plan)):
        idx = start + k
        rng = np.random.default_rng([s["seed"], idx])
        base = train[int(origin)] if planted else pool[int(origin)]
        partner = pool[rng.integers(len(pool))]
        made = _quantised(FAMILIES[names[int(fam)]](base, float(strength), rng, partner=partner))
        clean.append(made)
        final = perturb_image(made, PAPER_PERTURB, rng)
        name = f"s{idx:06d}.png"
        Image.fromarray(to_uint16(final)).save(out / name)
        rows.append({"synthetic": name, "planted": int(planted), "family": names[int(fam)],
                     "strength": round(float(strength), 4), "source": int(origin) if planted else -1})
    clean_stack = np.stack(clean)
    near = np.argsort(-(_descriptor(clean_stack) @ desc.T), axis=1)[:, :SHORTLIST]
    cands = [list(dict.fromkeys(([r["source"]] if r["planted"] else []) + near[k].tolist()))
             for k, r in enumerate(rows)]
    a = [clean_stack[k] for k, c in enumerate(cands) for _ in c]
    b = [train[t] for c in cands for t in c]
    values = ssim_pairs(a, b, device="cpu", num_threads=1, progress=False)
    at = 0
    for row, c in zip(rows, cands):
        v = values[at:at + len(c)]
        at += len(c)
        best = int(np.argmax(v))
        row["nearest"], row["clean_ssim"] = int(c[best]), round(float(v[best]), 6)
        row["source_ssim"] = round(float(v[0]), 6) if row["planted"] else ""
    return rows


def build(work: Path, per_train: int, copy_share: float, families: list[str], strength: tuple[float, float],
          seed: int, workers: int) -> Path:
    """The workload's folder ``work/data`` (train/, synthetic/, truth.csv, groups.json), built
    once for these parameters."""
    data = work / "data"
    params = {"per_train": per_train, "copy_share": copy_share, "families": families,
              "strength": list(strength), "seed": seed, "shape": list(SHAPE), "n_train": N_TRAIN}
    done = data / "workload.json"
    if done.exists() and {k: v for k, v in json.loads(done.read_text()).items() if k != "build_s"} == params:
        return data
    if data.exists():
        raise SystemExit(f"{data} holds another workload: remove it or choose another --work")
    t0 = time.perf_counter()
    stack, ids = load_stack([DATA], _stretch, progress=True)
    group = group_images(ids, list(stack), None, near_duplicates=NEAR_DUPLICATE_THRESHOLD, progress=True)
    rng = np.random.default_rng(seed)
    train_idx, pool_idx = split_groups(group, N_TRAIN, rng)
    train, pool = _quantised_stack(stack[train_idx]), stack[pool_idx]
    (data / "train").mkdir(parents=True)
    (data / "synthetic").mkdir()
    train_names = [f"t{k:05d}.png" for k in range(len(train))]
    for name, image in zip(train_names, train):
        Image.fromarray(to_uint16(image)).save(data / "train" / name)
    n_synth = per_train * len(train)
    n_planted = round(copy_share * n_synth)
    planted = np.zeros(n_synth, bool)
    planted[rng.choice(n_synth, n_planted, replace=False)] = True
    origin = np.where(planted, 0, rng.integers(len(pool), size=n_synth))
    origin[planted] = rng.choice(len(train), n_planted, replace=False)
    plan = (planted, origin, rng.integers(len(families), size=n_synth), rng.uniform(*strength, size=n_synth))
    state = dict(train=train, pool=pool, desc=_descriptor(train), out=data / "synthetic", families=families, seed=seed)
    jobs = [(start, tuple(p[start:start + CHUNK] for p in plan)) for start in range(0, n_synth, CHUNK)]
    rows: list[dict] = []
    # Spawned workers: a fork after torch has run its thread pool can hang.
    with mp.get_context("spawn").Pool(workers, _init, (state,)) as pool_of_workers:
        for k, part in enumerate(pool_of_workers.imap(_make, jobs)):
            rows += part
            print(f"\rsynthetic {min((k + 1) * CHUNK, n_synth)}/{n_synth}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    train_group = group[train_idx]
    with open(data / "truth.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*rows[0], "nearest_group"])
        writer.writeheader()
        for r in rows:
            writer.writerow(r | {"source": train_names[r["source"]] if r["planted"] else "",
                                 "nearest": train_names[r["nearest"]], "nearest_group": int(train_group[r["nearest"]])})
    (data / "groups.json").write_text(json.dumps(dict(zip(train_names, train_group.tolist()))))
    params["build_s"] = round(time.perf_counter() - t0, 1)
    done.write_text(json.dumps(params))
    return data


def _quantised_stack(stack: np.ndarray) -> np.ndarray:
    return np.stack([_quantised(x) for x in stack])


def _audit(data: Path, synthetic: Path, out: Path, cache: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "deepssim", "audit", "--train", str(data / "train"), "--synthetic",
           str(synthetic), "--out", str(out), "--cache", str(cache), *extra]
    print("$", " ".join(cmd), file=sys.stderr)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    summary = json.loads((out / "summary.json").read_text())
    summary["wall_s"] = time.perf_counter() - t0
    return summary


def _links(data: Path, folder: Path, names: list[str]) -> Path:
    """A folder of links to the synthetic images ``names``."""
    if not folder.exists():
        folder.mkdir()
        for name in names:
            (folder / name).symlink_to((data / "synthetic" / name).resolve())
    return folder


def judge(data: Path, out: Path) -> dict:
    """Precision and recall of the flagged copies, top-1 source, the memorization rate."""
    audited = {r["synthetic"] for r in csv.DictReader(open(out / "matches.csv"))}
    truth = {r["synthetic"]: r for r in csv.DictReader(open(data / "truth.csv")) if r["synthetic"] in audited}
    groups = json.loads((data / "groups.json").read_text())
    flagged, named = {}, {}
    for r in csv.DictReader(open(out / "matches.csv")):
        if r["rank"] == "1":
            key = Path(r["synthetic"]).name
            flagged[key] = r["class"] == "duplicate"
            named[key] = Path(r["train"]).name
    copies = {k for k, r in truth.items() if float(r["clean_ssim"]) > DUPLICATE_THRESHOLD}
    hits = {k for k, f in flagged.items() if f}
    tp = len(hits & copies)
    right = sum(named.get(k) == truth[k]["nearest"] or groups.get(named.get(k, "")) == int(truth[k]["nearest_group"])
                for k in copies)
    planted = [k for k, r in truth.items() if r["planted"] == "1"]
    return {"synthetic": len(truth), "copies": len(copies), "planted": len(planted),
            "copies_not_planted": len(copies - set(planted)), "flagged": len(hits),
            "precision": tp / max(len(hits), 1), "recall": tp / max(len(copies), 1),
            "top1_group": right / max(len(copies), 1), "true_rate": len(copies) / len(truth),
            "missed_not_scored": len(copies - set(flagged))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the workload, cache and outputs")
    parser.add_argument("--per-train", type=int, default=30, help="synthetic images per training image")
    parser.add_argument("--copy-share", type=float, default=0.02, help="share of planted copies")
    parser.add_argument("--families", nargs="+", default=["elastic", "bias", "intensity", "noise", "blur", "resample"])
    parser.add_argument("--strength", type=float, nargs=2, default=(0.0, 0.6))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="processes that build the workload")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--sample", type=int, default=0,
                        help="audit this many synthetic images drawn at random (seeded) instead of all")
    parser.add_argument("--audit-args", default="", help="extra arguments for `deepssim audit`, as one string")
    args = parser.parse_args()
    data = build(args.work, args.per_train, args.copy_share, args.families, tuple(args.strength), args.seed,
                 args.workers)
    print(json.dumps(json.loads((data / "workload.json").read_text())))
    if args.build_only:
        return
    cache = args.work / "cache"
    names = sorted(p.name for p in (data / "synthetic").iterdir())
    # The first audit of this training set trains the model and caches it.
    trained = _audit(data, _links(data, args.work / "first", names[:32]), args.work / "out-first", cache, [])
    synthetic, out = data / "synthetic", args.work / "out"
    if args.sample:
        drawn = np.random.default_rng(args.seed).choice(len(names), args.sample, replace=False)
        synthetic = _links(data, args.work / f"sample-{args.sample}", [names[k] for k in sorted(drawn)])
        out = args.work / f"out-sample-{args.sample}"
    shutil.rmtree(cache / "verified", ignore_errors=True)  # timed: every pair verified, none read back
    full = _audit(data, synthetic, out, cache, args.audit_args.split())
    judged = judge(data, out)
    t = full["timings"]
    audit_s = t["total_s"] - t.get("train_s", 0.0)
    report = {"training_s": trained["timings"].get("train_s"), "model": full.get("model", {}).get("origin"),
              "audit_s": round(audit_s, 1), "audit_over_target": round(audit_s / 600, 2),
              "stages_s": {k: round(v, 1) for k, v in t.items()}, "peak_memory_mb": full.get("peak_memory_mb"),
              "memorization_rate": full["memorization_rate"], "verified_pairs": (full.get("verify") or {}).get("pairs"),
              "pairs_kept_before": (full.get("verify") or {}).get("pairs_kept_before"),
              **judged}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
