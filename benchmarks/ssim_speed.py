"""Reference-SSIM throughput: scikit-image (1 process, and a pool of all cores) vs deepssim.

All methods score the same pairs of real brain MRI slices (every pair of N "train" x N
"synthetic" images from ../shared/data/brain-tumor-mri) on the same cores, in one run, and the
script prints pairs per second, the ratios to both scikit-image baselines, and the largest
difference to scikit-image. scikit-image gets the z-scored images precomputed (the most
favourable baseline); deepssim starts from the raw pixels.

    python benchmarks/ssim_speed.py                      # 128 and 224 px, 48 x 48 pairs
    python benchmarks/ssim_speed.py --n 64 --sizes 128   # more pairs
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from deepssim import ssim_matrix, ssim_pairs
from deepssim.refssim import SearchGrid, register, zscore

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "brain-tumor-mri"

_Z: list[np.ndarray] = []


def _init_worker(z: list[np.ndarray]) -> None:
    global _Z
    _Z = z


def _skimage_pair(pair: tuple[int, int]) -> float:
    a, b = _Z[pair[0]], _Z[pair[1]]
    return float(structural_similarity(a, b, data_range=a.max() - a.min()))


def load_images(n: int, size: int) -> list[np.ndarray]:
    with open(DATA / "manifest.csv") as fh:
        rows = list(csv.DictReader(fh))
    step = max(1, len(rows) // n)
    paths = [DATA / r["path"] for r in rows[::step][:n]]
    out = []
    for p in paths:
        img = Image.open(p).convert("L")
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        out.append(np.asarray(img, dtype=np.float64))
    return out


def timed(fn, repeat: int):  # type: ignore[no-untyped-def]
    best = float("inf")
    result = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def run(size: int, n: int, repeat: int, cores: int, device: str) -> list[dict[str, object]]:
    images = load_images(2 * n, size)
    train, synth = images[:n], images[n:]
    z = [zscore(im) for im in images]
    pairs = [(i, n + j) for i in range(n) for j in range(n)]
    n_pairs = len(pairs)

    _init_worker(z)
    t_sk, ref = timed(lambda: np.array([_skimage_pair(p) for p in pairs]), 1)
    with mp.get_context("fork").Pool(cores, initializer=_init_worker, initargs=(z,)) as pool:
        pool.map(_skimage_pair, pairs[:cores])  # start the workers before timing
        t_pool, ref_pool = timed(
            lambda: np.array(pool.map(_skimage_pair, pairs, chunksize=max(1, n_pairs // (8 * cores)))),
            1,
        )
    ref = ref.reshape(n, n)

    a_list = [train[i] for i, _ in pairs]
    b_list = [synth[j - n] for _, j in pairs]
    ssim_matrix(train[:2], synth[:2], device="cpu")  # JIT compile (cached on disk) before timing
    t_pairs, got_pairs = timed(lambda: ssim_pairs(a_list, b_list, device="cpu", progress=False), repeat)
    t_mat, got_mat = timed(lambda: ssim_matrix(train, synth, device="cpu", progress=False), repeat)
    rows = [
        ("scikit-image, 1 process", t_sk, ref),
        (f"scikit-image, pool of {cores}", t_pool, ref_pool.reshape(n, n)),
        ("deepssim ssim_pairs (cpu)", t_pairs, got_pairs.reshape(n, n)),
        ("deepssim ssim_matrix (cpu)", t_mat, got_mat),
    ]
    if device == "cuda":
        ssim_matrix(train[:2], synth[:2], device="cuda")
        torch.cuda.synchronize()
        t_gpu, got_gpu = timed(lambda: ssim_matrix(train, synth, device="cuda", progress=False), repeat)
        rows.append(("deepssim ssim_matrix (cuda)", t_gpu, got_gpu))
    out = []
    for name, t, values in rows:
        out.append({
            "size": size,
            "method": name,
            "pairs": n_pairs,
            "seconds": t,
            "pairs_per_s": n_pairs / t,
            "x_single": t_sk / t,
            "x_pool": t_pool / t,
            "max_abs_diff": float(np.abs(np.asarray(values) - ref).max()),
        })
    return out


def registration_cost(size: int, n_pairs: int) -> dict[str, float]:
    """Seconds per registered_ssim call (the oracle's full grid search) on real pairs."""
    images = load_images(2 * n_pairs, size)
    register(images[0], images[1])  # compile before timing
    t0 = time.perf_counter()
    for k in range(n_pairs):
        register(images[2 * k], images[2 * k + 1])
    per_pair = (time.perf_counter() - t0) / n_pairs
    return {"size": size, "ms_per_pair": 1e3 * per_pair, "evaluations": SearchGrid().n_evaluations()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=48, help="images per side (n x n pairs)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    parser.add_argument("--repeat", type=int, default=3, help="best of R runs for deepssim")
    parser.add_argument("--n-registered", type=int, default=10,
                        help="pairs timed for registered_ssim")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="cuda adds a GPU row")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} not found: this benchmark reads ../shared/data in place")
    print(f"# SSIM throughput, {args.n} x {args.n} pairs of real brain MRI per size, "
          f"{args.cores} cores ({os.cpu_count()} seen), torch {torch.__version__}")
    print()
    print("| size | method | pairs | seconds | pairs/s | x 1-process skimage | x skimage pool | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for r in run(size, args.n, args.repeat, args.cores, args.device):
            print(f"| {r['size']} | {r['method']} | {r['pairs']} | {r['seconds']:.3f} | "
                  f"{r['pairs_per_s']:,.0f} | {r['x_single']:.1f} | {r['x_pool']:.1f} | "
                  f"{r['max_abs_diff']:.1e} |", flush=True)
    print()
    print("| size | registered_ssim: SSIM evaluations per pair | ms per pair (cpu) |")
    print("|---|---|---|")
    for size in args.sizes:
        r = registration_cost(size, args.n_registered)
        print(f"| {size} | {r['evaluations']} | {r['ms_per_pair']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
