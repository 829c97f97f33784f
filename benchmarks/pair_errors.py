"""A model's score against the reference SSIM on every (synthetic, training) pair of a benchmark.

The labelled pairs of ``pairs.csv`` (about 2,500 on ``brain128nd``) give a macro F1 that moves
by 0.005-0.01 between two training runs of one preset; every pair of the benchmark (500 x 1,000
there) gives error figures where 0.002 shows. For each model and condition (registered: the
clean synthetic images; perturbed: the perturbed ones), against the reference SSIM of the
clean pair taken over the four flips of the synthetic image (the score undoes flips, so a
mirrored look-alike is judged at its flip-aligned SSIM):

- MAE over all pairs;
- the look-alikes, each synthetic image's ``--top`` training images of highest SSIM: mean
  error (bias), error SD, and the SD of a synthetic image's mean error over them (how much of
  the error is per image);
- MAE over the pairs whose SSIM is above 0.35.

The reference SSIM matrices (four, one per flip) are computed once per run (about a minute
for 500 x 1,000 pairs of 128 px on two cores).

    python benchmarks/pair_errors.py --bench runs/bench/brain128nd --model M1 [--model M2 ...]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from deepssim import load_model, read_image, ssim_matrix
from deepssim.benchmark.layout import SYNTHETIC_CSV, TRAIN_CSV, clean_twin
from deepssim.model.flips import FLIPS, flip_image


def _column(path: Path, name: str) -> list[str]:
    with path.open(newline="") as f:
        return [row[name] for row in csv.DictReader(f)]


def score_matrix(model_dir: Path, train: list[np.ndarray], synthetic: list[np.ndarray]) -> np.ndarray:
    """(synthetic, training) scores of every pair by the model's own rule."""
    model = load_model(model_dir)
    real = model.embed_real(train)
    syn = model.embed_synthetic(synthetic)
    return np.stack([model.pair_scores(real, np.broadcast_to(syn[i], (len(real), *syn.shape[1:])))
                     for i in range(len(syn))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", type=Path, required=True, help="benchmark folder (deepssim benchmark build)")
    parser.add_argument("--model", type=Path, action="append", required=True, help="model folder (repeatable)")
    parser.add_argument("--top", type=int, default=20, help="look-alikes per synthetic image (default 20)")
    args = parser.parse_args()
    train_names = _column(args.bench / TRAIN_CSV, "train")
    syn_names = _column(args.bench / SYNTHETIC_CSV, "synthetic")
    train = [read_image(args.bench / name) for name in train_names]
    clean = [read_image(args.bench / clean_twin(name)) for name in syn_names]
    perturbed = [read_image(args.bench / name) for name in syn_names]
    # SSIM(real, synthetic) takes the real image's data range, as the labels do.
    truth = np.max([ssim_matrix(train, [flip_image(x, code) for x in clean]) for code in range(len(FLIPS))],
                   axis=0).T
    top = np.argsort(-truth, axis=1)[:, : args.top]
    high = truth > 0.35
    print(f"# {args.bench}: {len(syn_names)} synthetic x {len(train_names)} training images; "
          f"look-alikes: the top {args.top} by SSIM over the synthetic image's flips")
    print()
    print("| model | condition | MAE, all pairs | look-alikes: bias | look-alikes: error SD | "
          "SD of an image's mean error | MAE, SSIM > 0.35 |")
    print("|---|---|---|---|---|---|---|")
    for model_dir in args.model:
        for condition, images in (("registered", clean), ("perturbed", perturbed)):
            err = score_matrix(model_dir, train, images) - truth
            near = np.take_along_axis(err, top, axis=1)
            print(f"| {model_dir} | {condition} | {np.abs(err).mean():.4f} | {near.mean():+.4f} | "
                  f"{near.std():.4f} | {near.mean(axis=1).std():.4f} | {np.abs(err[high]).mean():.4f} |",
                  flush=True)


if __name__ == "__main__":
    main()
