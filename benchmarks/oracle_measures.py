"""How the choice of alignment measure moves a case study's copy count (docs/case-study.md).

For every sample of a finished ``deepssim case-study`` level, takes the oracle's nearest
training image and scores the pair with several "SSIM as if aligned" measures that differ in
one choice each: which image the rigid search moves, the resolution it compares at, whether
whole-pixel shifts and contrast curves are searched. Prints, per measure, the mean difference
to the oracle's measure and how many samples it would call copies (> 0.85), so that the
sensitivity of a memorization count to such choices is measured, not guessed.

    python benchmarks/oracle_measures.py /path/to/case-study --level high
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deepssim.auditing.verify import VerifyGrid, verified_ssim
from deepssim.ldm.store import load_folder
from deepssim.refssim import registered_ssim, ssim

THRESHOLD = 0.85
ORACLE = "verification at 128 px, shifts +-2 (the audit's default and the oracle)"


def measures(size: int) -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
    return {
        "plain SSIM": lambda t, s: ssim(t, s),
        "rigid, sample moved (refssim.registered_ssim)": lambda t, s: registered_ssim(t, s, device="cpu"),
        "rigid, training image moved": lambda t, s: registered_ssim(s, t, device="cpu"),
        "the oracle's measure without shifts (128 px)": lambda t, s: verified_ssim(
            t, s, VerifyGrid(size=128, max_shift=0)),
        f"verification at {size} px, no shifts": lambda t, s: verified_ssim(t, s, VerifyGrid(size=size, max_shift=0)),
        f"verification at {size} px, shifts +-2": lambda t, s: verified_ssim(t, s, VerifyGrid(size=size)),
        ORACLE: lambda t, s: verified_ssim(t, s, VerifyGrid()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("study", type=Path, help="a finished case-study folder")
    parser.add_argument("--level", default="high")
    args = parser.parse_args()
    with open(args.study / f"oracle-{args.level}.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    size = json.loads((args.study / "case_study.json").read_text())["ldm_config"]["image_size"]
    train, train_ids = load_folder([args.study / "train"], size)
    samples, sample_ids = load_folder([args.study / f"samples-{args.level}"], size)
    by_train = {Path(t).name: k for k, t in enumerate(train_ids)}
    by_sample = {Path(t).stem: k for k, t in enumerate(sample_ids)}
    pairs = [(by_train[r["nearest_train"]], by_sample[r["sample"]]) for r in rows]
    results = {}
    for name, fn in measures(size).items():
        results[name] = np.array([fn(train[j], samples[i]) for j, i in tqdm(pairs, desc=name[:40], leave=False)])
    ref = results[ORACLE]
    print(f"\n{len(rows)} samples of level {args.level!r}, each with the oracle's nearest training image "
          f"({size} x {size}):\n")
    print("| measure | copies (> 0.85) | mean | mean difference to the oracle's measure | |difference| > 0.01 |")
    print("|---|---|---|---|---|")
    for name, v in results.items():
        d = v - ref
        print(f"| {name} | {int((v > THRESHOLD).sum())} | {v.mean():.3f} | {d.mean():+.4f} | "
              f"{int((np.abs(d) > 0.01).sum())} |")


if __name__ == "__main__":
    main()
