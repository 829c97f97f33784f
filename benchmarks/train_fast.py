"""Train the ``fast`` preset for 10 minutes on real brain MRI; measure it on unseen data.

The validation images are held out from training (split by image, byte-identical images kept
together) and their near-copies are made by generator families that training never saw, so
the figures measure generalisation, not memorisation. Reported: MSE, MAE and Pearson r of the
score against the reference SSIM of the clean pair, on clean validation pairs, on pairs
perturbed as in training, and on pairs perturbed as in docs/benchmark.md (flips,
rotation +-10 deg, gamma 0.5..1.5, each with p = 0.8).

    python benchmarks/train_fast.py                     # 10 minutes, model in runs/train_fast
    python benchmarks/train_fast.py --minutes 2 --out /tmp/quick
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from deepssim.model import load_network
from deepssim.refssim import resolve_device
from deepssim.training import evaluate, get_preset, train
from deepssim.transforms.perturb import BENCHMARK_PERTURB, Perturb
from deepssim.training.validation import embed_pairs

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "brain-tumor-mri" / "Training"
HELD_OUT = ("resample", "mix")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--out", default="runs/train_fast")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--held-out", default=",".join(HELD_OUT),
                        help="generator families used only for validation pairs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override a preset field, e.g. model__width=48 or lr=0.001")
    parser.add_argument("--data", type=Path, default=DATA, help="image folder (default: ../shared/data's)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.data.is_dir():
        raise SystemExit(f"{args.data} not found: this benchmark reads ../shared/data in place")
    held_out = tuple(args.held_out.split(","))
    base = get_preset("fast")
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    settings = {"max_minutes": args.minutes, "preprocess__size": args.size,
                "families": tuple(f for f in base.families if f not in held_out), "val_families": held_out}
    config = base.with_overrides(**{**settings, **overrides})
    if set(config.families) & set(held_out):
        raise SystemExit(f"--set families includes a held-out family ({', '.join(held_out)})")
    t0 = time.perf_counter()
    result = train([args.data], args.out, config, device=args.device, progress=not args.no_progress)
    wall = time.perf_counter() - t0
    network, preprocess, _ = load_network(result.model_dir)
    device = resolve_device(args.device)
    network.to(device)
    assert result.val_pairs is not None
    rows = {
        "clean": evaluate(network, preprocess, result.val_pairs, None, device),
        "perturbed (training p)": evaluate(network, preprocess, result.val_pairs,
                                           Perturb(config.perturb), device),
        "perturbed (benchmark, p = 0.8)": evaluate(network, preprocess, result.val_pairs,
                                                   Perturb(BENCHMARK_PERTURB), device),
    }
    steps = int(result.history[-1]["step"]) if result.history else 0
    where = f"cuda ({torch.cuda.get_device_name()})" if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print()
    print(f"# fast preset, {args.size} px, {args.minutes:g}-minute budget "
          f"(wall {wall / 60:.1f} min incl. data and pairs; {steps} steps, "
          f"stopped by {result.stopped_by}), torch {torch.__version__}, {where}")
    print(f"# validation: {len(result.val_pairs)} pairs of held-out images; "
          f"near-copies by held-out families {', '.join(held_out)}; best at step {int(result.best['step'])}")
    print()
    print("| validation pairs | MSE | MAE | Pearson r |")
    print("|---|---|---|---|")
    for name, m in rows.items():
        print(f"| {name} | {m['mse']:.4f} | {m['mae']:.4f} | {m['r']:.3f} |")
    print()
    print("Benchmark-perturbed validation pairs by how the second image was made:")
    print()
    print("| pairs | n | MAE | mean error (score - SSIM) |")
    print("|---|---|---|---|")
    for name, n, mae, bias in by_family(network, preprocess, result.val_pairs, device):
        print(f"| {name} | {n} | {mae:.4f} | {bias:+.4f} |")


@torch.no_grad()
def by_family(network, preprocess, pairs, device):  # type: ignore[no-untyped-def]
    """MAE and mean signed error per generator family (benchmark perturbation, fixed seed)."""
    network.eval()
    generator = torch.Generator().manual_seed(0)
    scores = torch.cat([
        embed_pairs(network, preprocess, pairs.images, pairs.a[s : s + 256], pairs.b[s : s + 256],
                    Perturb(BENCHMARK_PERTURB), generator, device).float().cpu()
        for s in range(0, len(pairs), 256)
    ]).numpy()
    err = scores - pairs.target
    # "blur", "cross:blur" and "blur+noise" count under the family that made the copy.
    family = [f if f == "random" else f.split(":")[-1].split("+")[0] for f in pairs.family]
    out = []
    for name in sorted(set(family)):
        mask = [f == name for f in family]
        out.append((name, int(sum(mask)), float(abs(err[mask]).mean()), float(err[mask].mean())))
    return out


if __name__ == "__main__":
    main()
