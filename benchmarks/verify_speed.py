"""Verification throughput: the K candidates of a synthetic image verified together versus
one pair at a time.

``audit --verify K`` re-scores the K best training candidates of each suspicious synthetic
image with the reference SSIM under ~125 flips, rotations, shifts and contrast curves each.
"one at a time" is ``verified_ssim`` per pair (three engine calls of ~100, 15 and 9 SSIMs);
"together" is ``verify_candidates``: the same SSIMs for all K
candidates in three calls, with the synthetic image's contrast curves computed once. Same
images, same process; the two must agree exactly.

    python benchmarks/verify_speed.py                 # 12 synthetic images x 10 candidates
    python benchmarks/verify_speed.py --k 20 --repeat 3
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

from deepssim.auditing.verify import VerifyGrid, verified_ssim, verify_candidates
from deepssim.readers import read_image
from deepssim.transforms.perturb import BENCHMARK_PERTURB, perturb_image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "brain-tumor-mri"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=12, help="synthetic images")
    parser.add_argument("--k", type=int, default=10, help="candidates per synthetic image")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} not found: this benchmark reads ../shared/data in place")
    with open(DATA / "manifest.csv") as fh:
        rows = list(csv.DictReader(fh))
    rng = np.random.default_rng(0)
    picked = rng.choice(len(rows), size=args.n * args.k, replace=False)
    train = [read_image(DATA / rows[i]["path"]) for i in picked]
    # Synthetic image s: a perturbed copy of its first candidate; the others are unrelated.
    synthetic = [perturb_image(train[s * args.k], BENCHMARK_PERTURB, rng) for s in range(args.n)]
    candidates = [train[s * args.k : (s + 1) * args.k] for s in range(args.n)]
    grid = VerifyGrid()
    verify_candidates(candidates[0][:2], synthetic[0], grid)  # warm-up (JIT caches, threads)

    t_one = t_all = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        one = np.array([[verified_ssim(t, s, grid) for t in c] for c, s in zip(candidates, synthetic)])
        t_one = min(t_one, time.perf_counter() - t0)
        t0 = time.perf_counter()
        together = np.array([verify_candidates(c, s, grid) for c, s in zip(candidates, synthetic)])
        t_all = min(t_all, time.perf_counter() - t0)
    pairs = args.n * args.k
    print(f"# {args.n} synthetic images x {args.k} candidates = {pairs} pairs at {grid.size} px, "
          f"best of {args.repeat}; largest difference {np.abs(one - together).max():.1e}")
    print(f"# copies recovered (verified SSIM of the source, mean): {together[:, 0].mean():.3f}; "
          f"best unrelated candidate, mean: {together[:, 1:].max(axis=1).mean():.3f}")
    print("| verification | pairs/s | ms per pair |")
    print("|---|---|---|")
    print(f"| one pair at a time | {pairs / t_one:.1f} | {1000 * t_one / pairs:.1f} |")
    print(f"| K candidates together | {pairs / t_all:.1f} | {1000 * t_all / pairs:.1f} |")
    print(f"speed-up: {t_one / t_all:.2f}x")


if __name__ == "__main__":
    main()
