"""Reference-SSIM throughput: scikit-image (1 process, and a pool of all cores) vs deepssim.

All methods score the same pairs of real brain MRI slices (every pair of N "train" x N
"synthetic" images from ../shared/data/brain-tumor-mri) on the same cores, in one run, and the
script prints pairs per second, the ratios to both scikit-image baselines, and the largest
difference to scikit-image. scikit-image gets the z-scored images precomputed (the most
favourable baseline); deepssim starts from the raw pixels.

    python benchmarks/ssim_speed.py                      # 128 and 224 px, 48 x 48 pairs
    python benchmarks/ssim_speed.py --n 64 --sizes 128   # more pairs
    python benchmarks/ssim_speed.py --3d                 # 64^3 volumes, 8 x 16 pairs

With ``--3d`` the pairs are 3D volumes (crops of the Kirby21 MPRAGE, T2w and FLAIR volumes in
../shared/data/volumes, resampled to the size given) and the baseline is scikit-image's own
``structural_similarity`` on the z-scored volumes, one process.
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
from deepssim.refssim import SearchGrid, register, register3d, zscore

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "brain-tumor-mri"
VOLUMES = DATA.parent / "volumes" / "kirby21-113"

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


def load_volumes(n: int, size: int) -> list[np.ndarray]:
    """``n`` real volumes of ``size``^3: crops of three contrasts of one head, each crop
    moved by a few millimetres from the last, resampled (trilinear)."""
    import nibabel as nib
    from scipy import ndimage

    contrasts = [
        nib.load(VOLUMES / f"113-02-{name}.nii.gz").get_fdata(dtype=np.float32)
        for name in ("MPRAGE", "T2w", "FLAIR")
    ]
    out = []
    for k in range(n):
        volume = contrasts[k % 3]
        o = 3 * (k // 3)  # voxels of offset, growing with the crop
        crop = np.asarray(volume[20 + o : 150 + o, 30 + o : 226 - o, 30 : 226 - o], dtype=np.float64)
        out.append(ndimage.zoom(crop, [size / m for m in crop.shape], order=1))
    return out


def run_3d(size: int, n_a: int, n_b: int, repeat: int, device: str) -> list[dict[str, object]]:
    """Every pair of ``n_a`` x ``n_b`` volumes: scikit-image vs ssim_matrix and ssim_pairs."""
    volumes = load_volumes(n_a + n_b, size)
    a, b = volumes[:n_a], volumes[n_a:]
    z = [zscore(v, ndim=3) for v in volumes]
    pairs = [(i, n_a + j) for i in range(n_a) for j in range(n_b)]
    _init_worker(z)
    t_sk, ref = timed(lambda: np.array([_skimage_pair(p) for p in pairs]), 1)
    ref = ref.reshape(n_a, n_b)
    a_list = [a[i] for i, _ in pairs]
    b_list = [b[j - n_a] for _, j in pairs]
    ssim_matrix(a[:2], b[:2], device="cpu", ndim=3)  # JIT compile (cached on disk) before timing
    t_pairs, got_pairs = timed(
        lambda: ssim_pairs(a_list, b_list, device="cpu", progress=False, ndim=3), repeat
    )
    t_mat, got_mat = timed(lambda: ssim_matrix(a, b, device="cpu", progress=False, ndim=3), repeat)
    rows = [
        ("scikit-image, 1 process", t_sk, ref),
        ("deepssim ssim_pairs (cpu)", t_pairs, got_pairs.reshape(n_a, n_b)),
        ("deepssim ssim_matrix (cpu)", t_mat, got_mat),
    ]
    if device == "cuda":
        ssim_matrix(a[:2], b[:2], device="cuda", ndim=3)
        torch.cuda.synchronize()
        t_gpu, got_gpu = timed(
            lambda: ssim_matrix(a, b, device="cuda", progress=False, ndim=3), repeat
        )
        rows.append(("deepssim ssim_matrix (cuda)", t_gpu, got_gpu))
    return [
        {
            "size": f"{size}^3",
            "method": name,
            "pairs": len(pairs),
            "seconds": t,
            "pairs_per_s": len(pairs) / t,
            "x_single": t_sk / t,
            "max_abs_diff": float(np.abs(np.asarray(values) - ref).max()),
        }
        for name, t, values in rows
    ]


def registration_cost_3d(size: int, n_pairs: int) -> dict[str, float]:
    """Seconds per register3d call (the 3D oracle's search) on pairs of real volumes."""
    volumes = load_volumes(2 * n_pairs, size)
    register3d(volumes[0][:12, :12, :12], volumes[1][:12, :12, :12])  # compile before timing
    t0 = time.perf_counter()
    evaluations = 0
    for k in range(n_pairs):
        evaluations += register3d(volumes[2 * k], volumes[2 * k + 1]).evaluations
    per_pair = (time.perf_counter() - t0) / n_pairs
    return {"size": size, "s_per_pair": per_pair, "evaluations": evaluations / n_pairs}


def main_3d(args: argparse.Namespace) -> None:
    if not VOLUMES.is_dir():
        raise SystemExit(f"{VOLUMES} not found: this benchmark reads ../shared/data in place")
    print(f"# 3D SSIM throughput, {args.n_a} x {args.n_b} pairs of real MRI volumes, "
          f"{os.cpu_count()} cores seen, torch {torch.__version__}")
    print()
    print("| size | method | pairs | seconds | pairs/s | x 1-process skimage | max abs diff |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for r in run_3d(size, args.n_a, args.n_b, args.repeat, args.device):
            print(f"| {r['size']} | {r['method']} | {r['pairs']} | {r['seconds']:.3f} | "
                  f"{r['pairs_per_s']:,.1f} | {r['x_single']:.1f} | {r['max_abs_diff']:.1e} |",
                  flush=True)
    if args.n_registered:
        print()
        print("| size | register3d: SSIM evaluations per pair | s per pair (cpu) |")
        print("|---|---|---|")
        for size in args.sizes:
            r = registration_cost_3d(size, args.n_registered)
            print(f"| {size}^3 | {r['evaluations']:.0f} | {r['s_per_pair']:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=48, help="images per side (n x n pairs)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="image sides (default 128 224; with --3d, volume sides: 64)")
    parser.add_argument("--repeat", type=int, default=3, help="best of R runs for deepssim")
    parser.add_argument("--n-registered", type=int, default=None,
                        help="pairs timed for registered_ssim (default 10; with --3d, 1)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="cuda adds a GPU row")
    parser.add_argument("--3d", dest="three_d", action="store_true",
                        help="volumes instead of images: n-a x n-b pairs of real MRI volumes")
    parser.add_argument("--n-a", type=int, default=8, help="with --3d: volumes on one side")
    parser.add_argument("--n-b", type=int, default=16, help="with --3d: volumes on the other")
    args = parser.parse_args()
    if args.sizes is None:
        args.sizes = [64] if args.three_d else [128, 224]
    if args.n_registered is None:
        args.n_registered = 1 if args.three_d else 10
    if args.three_d:
        main_3d(args)
        return
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
