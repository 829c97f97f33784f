"""Every metric on a memorization benchmark (docs/benchmark.md): the comparison table.

Runs ``deepssim.evaluation.compare`` (what ``deepssim evaluate --all`` runs) under both
conditions, with the fixed thresholds and, given ``--val-bench``, with thresholds calibrated on
that second benchmark; writes the tables (markdown), the figures (JSON) and the paper-style
histograms under ``--out``. The DeepSSIM model is ``--model`` or, without it, the `fast`
preset trained on the benchmark's ``train/`` only; the Dar baseline likewise (``--dar`` or
``deepssim baseline train-dar`` on ``train/``); SSCD and CLIP only with their weight files.

    deepssim benchmark build --images ../shared/data/brain-tumor-mri/Training \
        --out /tmp/deepssim-bench/brain128nd --seed 0
    deepssim benchmark build --images ../shared/data/brain-tumor-mri/Training \
        --out /tmp/deepssim-bench/brain128nd-val --seed 1
    python benchmarks/evaluate_all.py --bench /tmp/deepssim-bench/brain128nd \
        --val-bench /tmp/deepssim-bench/brain128nd-val --out runs/evaluate_all
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

from deepssim.evaluation import (
    MetricOptions,
    RunSettings,
    compare,
    markdown_table,
    metric_names,
    write_histograms,
)
from deepssim.storage import atomic_write_bytes


def _weights(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"--weights takes NAME=PATH, got {item!r}")
        out[name] = path
    return out


def _model(args: argparse.Namespace) -> Path:
    if args.model is not None:
        return args.model
    from deepssim.training import get_preset, train

    out = args.out / "model"
    if not (out / "config.json").is_file():
        train([args.bench / "train"], out, get_preset("fast").with_overrides(max_minutes=args.minutes))
    return out


def _dar(args: argparse.Namespace) -> Path:
    if args.dar is not None:
        return args.dar
    from deepssim.evaluation.dar import DarConfig, train_dar

    out = args.out / "dar"
    if not (out / "config.json").is_file():
        train_dar([args.bench / "train"], out, replace(DarConfig(), max_minutes=args.dar_minutes))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", type=Path, default=Path("/tmp/deepssim-bench/brain128"))
    parser.add_argument("--val-bench", type=Path, help="second benchmark to calibrate thresholds on")
    parser.add_argument("--out", type=Path, default=Path("runs/evaluate_all"))
    parser.add_argument("--metrics", default=",".join(metric_names()), help="comma-separated (default: all)")
    parser.add_argument("--model", type=Path, help="DeepSSIM model (default: train the fast preset on train/)")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of the fast model")
    parser.add_argument("--dar", type=Path, help="Dar baseline folder (default: train one on train/)")
    parser.add_argument("--dar-minutes", type=float, default=10.0, help="training budget of the Dar baseline")
    parser.add_argument("--weights", action="append", default=[], metavar="NAME=PATH",
                        help="weights of sscd (TorchScript, trusted) or clip (open_clip checkpoint)")
    parser.add_argument("--limit", type=int, help="only the first N pairs of each file (smoke runs)")
    parser.add_argument("--num-threads", type=int, help="CPU threads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.num_threads:
        import torch

        torch.set_num_threads(args.num_threads)
    names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    weights = _weights(args.weights)
    if "dar" in names:
        weights["dar"] = str(_dar(args))
    options = MetricOptions(model=_model(args) if "deepssim" in names else None, trust_torchscript=True,
                            num_threads=args.num_threads, progress=True)
    runs = {"fixed": RunSettings(limit=args.limit, progress=True)}
    if args.val_bench is not None:
        runs["calibrated"] = replace(runs["fixed"], calibrate=args.val_bench / "pairs.csv")
    results = {}
    for label, settings in runs.items():
        t0 = time.perf_counter()
        comparison = compare(args.bench / "pairs.csv", names, options=options, weights=weights,
                             settings=settings)
        table = markdown_table(comparison)
        atomic_write_bytes(args.out / f"table-{label}.md", table.encode())
        write_histograms(comparison, args.out / f"plots-{label}")
        results[label] = {**comparison.to_dict(), "wall_seconds": time.perf_counter() - t0}
        print(f"\n## {label} thresholds\n\n{table}")
    results["settings"] = {"bench": str(args.bench), "val_bench": str(args.val_bench), "limit": args.limit,
                           "model": str(options.model), "weights": weights}
    atomic_write_bytes(args.out / "results.json", json.dumps(results, indent=2).encode())
    print(f"tables, figures and histograms in {args.out}/")


if __name__ == "__main__":
    main()
