"""``deepssim evaluate`` and ``deepssim baseline train-dar``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .model import MIN_SIZE, allow_outside_root_option
from .types import at_least, positive_float, positive_int, precision, seed, thresholds

DEFAULT_OUT = "deepssim-evaluation"


def _weights(items: list[str] | None, names: list[str]) -> dict[str, str]:
    """``--weights PATH`` (one metric that takes weights) or ``--weights NAME=PATH`` (repeatable)."""
    from ..evaluation.metrics import metric_class, metric_names

    takers = [n for n in metric_names() if metric_class(n).takes_weights]
    out: dict[str, str] = {}
    plain: list[str] = []
    for item in items or []:
        name, sep, path = item.partition("=")
        if sep and name in takers:
            out[name] = path
        else:
            plain.append(item)
    if plain:
        chosen = [n for n in names if n in takers]
        if not chosen:
            raise ValueError(f"--weights is for the metrics {', '.join(takers)}")
        if len(plain) > 1 or len(chosen) > 1:
            raise ValueError("with several metrics, name the metric of each weights file: "
                             "--weights sscd=FILE --weights dar=MODEL_DIR ...")
        out[chosen[0]] = plain[0]
    return out


def _metrics(args: argparse.Namespace) -> list[str]:
    from ..evaluation import metric_names

    if args.all:
        return list(metric_names())
    if not args.metric:
        raise ValueError(f"give --metric NAME (one of {', '.join(metric_names())}) or --all")
    return [m.strip() for part in args.metric for m in part.split(",") if m.strip()]


def _print_one(result: dict[str, Any]) -> None:
    def num(value: Any) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    print(f"{result['metric']} ({result['condition']}, {result['n_pairs']} pairs)")
    ci = result["macro_f1_ci95"]
    print(f"  macro F1     {num(result['macro_f1'])}" + (f"  (95% CI {ci[0]:.4f}-{ci[1]:.4f})" if ci else ""))
    print(f"  weighted F1  {num(result['weighted_f1'])}")
    if result["per_class"]:
        for name, fig in result["per_class"].items():
            print(f"  {name:<10} precision {fig['precision']:.4f}  recall {fig['recall']:.4f}  "
                  f"f1 {fig['f1']:.4f}  support {fig['support']}")
    if result["thresholds"] is None:
        print("  thresholds   none (not on the SSIM scale: use --calibrate or --thresholds)")
    else:
        lo, hi = result["thresholds"]
        print(f"  thresholds   {lo:.4g} / {hi:.4g} ({result['thresholds_source']})")
    print(f"  silhouette   {num(result['silhouette'])}")
    print(f"  AUC dup.     {num(result['auc_duplicate'])}")
    print(f"  TPR@5%FPR    {num(result['tpr_at_5fpr'])}")
    print(f"  pairs/s      {result['pairs_per_second']:.1f}")


def _limit_threads(n: int | None) -> None:
    """At most ``n`` CPU threads for torch and the numba SSIM kernels (this process)."""
    if n is None:
        return
    if n < 1:
        raise ValueError(f"--num-threads must be >= 1, got {n}")
    import numba
    import torch

    torch.set_num_threads(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def _list_metrics() -> int:
    from ..evaluation.metrics import metric_class, metric_names

    for name in metric_names():
        cls = metric_class(name)
        print(f"{name:<16} {cls.scale:<11} {cls.summary}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation import CONDITIONS, MetricOptions, RunSettings, compare, markdown_table, write_histograms

    if args.metric == ["list"]:
        return _list_metrics()
    if args.pairs is None:
        raise ValueError("--pairs PAIRS.csv is required")
    _limit_threads(args.num_threads)
    names = _metrics(args)
    options = MetricOptions(
        model=args.model, clip_arch=args.clip_arch, trust_torchscript=args.trust_torchscript,
        device=args.device, batch_size=args.batch_size, num_threads=args.num_threads,
        progress=not args.no_progress,
    )
    single = len(names) == 1 and not args.all
    conditions = [args.condition] if args.condition else (["registered"] if single else list(CONDITIONS))
    settings = RunSettings(
        root=args.root, calibrate=args.calibrate, calibrate_root=args.calibrate_root,
        thresholds=args.thresholds,
        target_precision=args.target_precision, limit=args.limit, n_bootstrap=args.bootstrap,
        seed=args.seed, progress=not args.no_progress, allow_outside_root=args.allow_outside_root,
    )
    several = len(names) * len(conditions) > 1
    _check_outputs(args, several)
    comparison = compare(args.pairs, names, conditions=conditions, options=options,
                         weights=_weights(args.weights, names), settings=settings)
    if single and comparison.skipped:
        raise ValueError(next(iter(comparison.skipped.values())))
    if args.save_calibration:
        _save_calibrations(comparison, Path(args.save_calibration), several)
    if args.all or args.markdown or args.plots:
        folder = Path(args.plots or DEFAULT_OUT)
        written = write_histograms(comparison, folder)
        if written:
            print(f"histograms written to {folder}/ ({len(written)} PNG)", file=sys.stderr)
    if args.json:
        doc = comparison.evaluations[0].to_dict() if single and len(conditions) == 1 else comparison.to_dict()
        print(json.dumps(doc, indent=2))
    elif args.markdown or not single:
        print(markdown_table(comparison), end="")
    else:
        for e in comparison.evaluations:
            _print_one(e.to_dict())
    return 0


def _check_outputs(args: argparse.Namespace, several: bool) -> None:
    """Every file and folder the evaluation writes, checked before any work: the calibration
    file (a folder when ``several`` metrics or conditions are calibrated), the plots folder."""
    from ..storage import check_output_file, check_output_folder

    if args.save_calibration:
        if not args.calibrate:
            raise ValueError("--save-calibration needs --calibrate VAL_PAIRS.csv")
        if several:
            check_output_folder(args.save_calibration)
        else:
            check_output_file(args.save_calibration, inputs=[p for p in (args.pairs, args.calibrate)
                                                             if p and Path(p).is_file()])
    if args.all or args.markdown or args.plots:
        check_output_folder(args.plots or DEFAULT_OUT)


def _save_calibrations(comparison: Any, path: Path, several: bool) -> None:
    """One calibration file, or, when ``several`` metrics or conditions were asked for, one
    per metric and condition calibrated (NAME-CONDITION.json) in the folder ``path``."""
    calibrated = [e for e in comparison.evaluations if e.calibration is not None]
    if not calibrated:
        raise ValueError("--save-calibration needs --calibrate VAL_PAIRS.csv")
    if not several:
        calibrated[0].calibration.save(path)
        print(f"calibration written to {path}", file=sys.stderr)
        return
    for e in calibrated:
        e.calibration.save(path / f"{e.metric}-{e.condition}.json")
    print(f"{len(calibrated)} calibration files written to {path}/", file=sys.stderr)


def _cmd_train_dar(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..evaluation.dar import DarConfig, train_dar
    from ..storage import check_output_folder

    check_output_folder(args.out, inputs=args.images)
    _limit_threads(args.num_threads)
    config = DarConfig()
    overrides = {"epochs": args.epochs, "max_minutes": args.max_minutes, "batch_size": args.batch_size,
                 "lr": args.lr, "seed": args.seed, "size": args.image_size}
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    pretrained = None if args.pretrained in (None, "none") else args.pretrained
    model = replace(config.model, backbone=args.backbone or config.model.backbone, pretrained=pretrained)
    config = replace(config, model=model)
    out = train_dar(args.images, args.out, config, device=args.device, progress=not args.no_progress)
    print(f"Dar baseline written to {out} (use: deepssim evaluate --metric dar --weights {out})")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score labelled pairs with a metric and report F1, AUC, calibration, speed",
        description=(
            "Score the labelled pairs of a benchmark pairs.csv (real,synthetic,label) or of a "
            "reference-code pair file (real_key,synth_key,label) with one metric, several, or "
            "all (--all), and report the benchmark protocol's figures ('--metric list' lists the metrics). "
            "SSIM-scale metrics use 0.60 / 0.85 unless --thresholds or --calibrate; the "
            "others need one of the two for their F1 figures."
        ),
    )
    p.add_argument("--pairs", help="pairs CSV (or a benchmark folder)")
    p.add_argument("--root", help="folder the image paths are relative to (default: the CSV's folder)")
    p.add_argument("--metric", action="append", metavar="NAME[,NAME...]",
                   help="metric(s) to evaluate; 'list' lists them")
    p.add_argument("--all", action="store_true", help="every metric, both conditions, as a table")
    p.add_argument("--condition", choices=["registered", "perturbed"],
                   help="default: registered for one metric, both for several")
    p.add_argument("--model", help="DeepSSIM model folder for the deepssim metric")
    p.add_argument("--weights", action="append", metavar="[NAME=]PATH",
                   help="weights of dar (folder from 'baseline train-dar'), sscd (TorchScript) or "
                        "clip (open_clip checkpoint); NAME=PATH when several metrics run")
    p.add_argument("--clip-arch", default="ViT-B-16", help="open_clip architecture of the clip weights")
    p.add_argument("--trust-torchscript", action="store_true",
                   help="allow loading TorchScript files (sscd, the authors' model); they can run code")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--thresholds", type=thresholds, metavar="LOW,HIGH", help="thresholds for every metric")
    group.add_argument("--calibrate", metavar="VAL_PAIRS.csv",
                       help="grid-search the thresholds of best macro F1 on these validation pairs")
    p.add_argument("--calibrate-root", help="folder of the validation image paths (default: its CSV's folder)")
    p.add_argument("--target-precision", type=precision, default=0.95,
                   help="duplicate precision of the calibration's operating point (default 0.95)")
    p.add_argument("--save-calibration", metavar="PATH",
                   help="write the calibrated thresholds as JSON (for 'deepssim audit --calibration'); "
                        "a folder of NAME-CONDITION.json files when several were calibrated")
    p.add_argument("--limit", type=positive_int, help="use only the first N pairs of each file")
    allow_outside_root_option(p)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--markdown", action="store_true", help="print the comparison table (markdown)")
    p.add_argument("--plots", metavar="DIR",
                   help=f"write the score histograms here (with --all or --markdown: default {DEFAULT_OUT}/)")
    p.add_argument("--bootstrap", type=positive_int, default=1000, help="resamples of the macro F1 interval")
    p.add_argument("--seed", type=seed, default=0, help="bootstrap and perturbation seed")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--num-threads", type=positive_int, help="CPU threads (default: all cores)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_evaluate)

    group_p = sub.add_parser("baseline", help="train the baselines of the comparison",
                             description="Baselines of 'deepssim evaluate' that are trained on the data.")
    base_sub = group_p.add_subparsers(dest="baseline_command", required=True, metavar="SUBCOMMAND")
    p = base_sub.add_parser(
        "train-dar",
        help="train the contrastive ResNet of Dar et al. on training images",
        description="Train the Dar et al. baseline (ResNet-18, SimCLR loss on perturbed views) on "
                    "the training images, within a time budget; the folder is the --weights of "
                    "the dar metric.",
    )
    p.add_argument("--images", nargs="+", required=True, metavar="DIR", help="training images (e.g. BENCH/train)")
    p.add_argument("--out", required=True, metavar="MODEL_DIR", help="model folder to write")
    p.add_argument("--max-minutes", type=positive_float, help="stop after M minutes (default 10)")
    p.add_argument("--epochs", type=positive_int, help="passes over the images (default 50)")
    p.add_argument("--batch-size", type=positive_int, help="images per step (default 32)")
    p.add_argument("--lr", type=positive_float)
    p.add_argument("--image-size", type=at_least(MIN_SIZE), help="images are resized to S x S (default 128)")
    p.add_argument("--backbone", choices=["resnet18", "resnet50", "small"], help="default resnet18")
    p.add_argument("--pretrained", help="imagenet (torchvision weights API), a weights file, or none (default)")
    p.add_argument("--seed", type=seed)
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--num-threads", type=positive_int, help="CPU threads (default: all cores)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_train_dar)
