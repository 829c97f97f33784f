"""``deepssim benchmark build | from-samples``: a memorization benchmark folder from real images,
or from a real generator's samples."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from .model import MIN_SIZE
from .types import at_least, non_negative_int, positive_int, probability, seed, similarity

if TYPE_CHECKING:  # the builder loads on use: ``deepssim --help`` stays fast
    from ..benchmark import BenchmarkInfo


def _families(parts: list[str] | None) -> tuple[str, ...] | None:
    """``--families noise blur`` and ``--families noise,blur`` alike."""
    if parts is None:
        return None
    return tuple(f.strip() for part in parts for f in part.split(",") if f.strip())


OFF = "off"


def _near_duplicates(text: str) -> float | str:
    """``--near-duplicates 0.97`` or ``--near-duplicates off`` (``OFF``)."""
    if text.strip().lower() in ("off", "none", "no"):
        return OFF
    try:
        return similarity(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be {similarity.rule()} or 'off', got {text}") from None


def _cmd_build(args: argparse.Namespace) -> int:
    from ..benchmark import build_benchmark
    from ..storage import check_output_folder

    check_output_folder(args.out, inputs=args.images)
    options = {
        "n_train": args.n_train,
        "n_synthetic": args.n_synthetic,
        "size": args.size,
        "group_by": args.group_by,
        "near_duplicates": args.near_duplicates,
        "families": _families(args.families),
        "memorized_fraction": args.memorized_fraction,
        "seed": args.seed,
        "n_hard": args.n_hard,
        "n_random": args.n_random,
        "n_holdout": args.n_holdout,
    }
    options = {k: v for k, v in options.items() if v is not None}  # unset: the builder's default
    if options.get("near_duplicates") == OFF:
        options["near_duplicates"] = None
    info = build_benchmark(args.images, args.out, overwrite=args.overwrite, progress=not args.no_progress,
                           **options)
    return _print(info, args)


def _cmd_from_samples(args: argparse.Namespace) -> int:
    from ..benchmark import build_from_samples
    from ..storage import check_output_folder

    check_output_folder(args.out, inputs=[args.train, args.synthetic])
    info = build_from_samples(args.train, args.synthetic, args.out, size=args.size, seed=args.seed,
                              n_hard=args.n_hard, n_random=args.n_random, overwrite=args.overwrite,
                              progress=not args.no_progress)
    return _print(info, args)


def _print(info: BenchmarkInfo, args: argparse.Namespace) -> int:
    print(json.dumps(info.to_dict(), indent=2) if args.json else info.summary())
    return 0


def _interrupted(args: argparse.Namespace) -> str:
    """What an interrupted build kept: nothing in --out (the folder is renamed into place whole)."""
    return (f"{args.out} was not written (a benchmark folder is moved into place only when complete): "
            "run the same command again")


def _common(p: argparse.ArgumentParser) -> None:
    """The options both commands share: where the folder goes and how the result is shown."""
    p.add_argument("--overwrite", action="store_true", help="replace an existing benchmark folder")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(on_interrupt=_interrupted)


def add_commands(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser(
        "benchmark",
        help="build memorization benchmarks (docs/benchmark.md)",
        description="Memorization benchmarks: training set, synthetic images, labelled pairs, audit truth.",
    )
    bench_sub = group.add_subparsers(dest="benchmark_command", required=True, metavar="SUBCOMMAND")
    p = bench_sub.add_parser(
        "build",
        help="build a benchmark folder from real images",
        description=(
            "Split real images (by group) into a training set and non-members, make synthetic "
            "images from both (memorized near-copies of calibrated strength, non-members with a "
            "mild change), perturb them, and write train/, synthetic_clean/, synthetic/, "
            "pairs.csv, audit.csv, synthetic.csv, train.csv and benchmark.json. Labels are the "
            "reference SSIM classes of the written files (> 0.85 duplicate, > 0.60 similar)."
        ),
    )
    p.add_argument("--images", nargs="+", required=True, metavar="DIR", help="folders or files of real images")
    p.add_argument("--out", required=True, metavar="BENCH_DIR", help="benchmark folder to create")
    p.add_argument("--n-train", type=positive_int, help="training images (default 1000)")
    p.add_argument("--n-synthetic", type=positive_int, help="synthetic images (default 500)")
    p.add_argument("--size", type=at_least(MIN_SIZE), help="images are resized to S x S (default 128)")
    p.add_argument("--group-by", metavar="REGEX",
                   help="regular expression searched in each image id (relative path); its first "
                        "group (or the match) names the subject; subjects are never split")
    p.add_argument("--near-duplicates", type=_near_duplicates, metavar="T|off",
                   help="also keep near-duplicate images (same image up to flips, rotation and "
                        "contrast; proxy similarity > T) in one group, so that no non-member has a "
                        "twin in train (default 0.97; 'off': only pixel-identical images)")
    p.add_argument("--families", nargs="+", metavar="FAMILY",
                   help="near-copy generators (default: noise blur elastic intensity resample mix texture; "
                        "also kspace ghost blocks sharpen median posterize)")
    p.add_argument("--memorized-fraction", type=probability,
                   help="share of synthetic images made from training images (default 0.5)")
    p.add_argument("--n-hard", type=non_negative_int, help="hard-negative pairs per synthetic image (default 2)")
    p.add_argument("--n-random", type=non_negative_int, help="random pairs per synthetic image (default 2)")
    p.add_argument("--n-holdout", type=non_negative_int,
                   help="real non-members that made no synthetic image, written to holdout/ for "
                        "'deepssim audit --holdout' (default 200)")
    p.add_argument("--seed", type=seed, help="random seed (default 0)")
    _common(p)
    p.set_defaults(func=_cmd_build)

    p = bench_sub.add_parser(
        "from-samples",
        help="a benchmark folder from a real generator's samples (labels by the oracle)",
        description=(
            "Every image under --train is a training image, every image under --synthetic a "
            "sample of a generative model (for example `deepssim ldm sample`). Writes the "
            "benchmark folder (docs/benchmark.md): pairs labelled by reference SSIM in the clean "
            "frame, audit.csv with each sample's nearest training image, and synthetic/ with "
            "the samples perturbed, so that `deepssim evaluate` runs on real generated images."
        ),
    )
    p.add_argument("--train", required=True, metavar="DIR", help="the generator's training images")
    p.add_argument("--synthetic", required=True, metavar="DIR", help="the generator's samples")
    p.add_argument("--out", required=True, metavar="BENCH_DIR", help="benchmark folder to create")
    p.add_argument("--size", type=at_least(MIN_SIZE), help="resize every image to S x S (default: keep; sizes must match)")
    p.add_argument("--n-hard", type=non_negative_int, default=2, help="hard-negative pairs per sample (default 2)")
    p.add_argument("--n-random", type=non_negative_int, default=2, help="random pairs per sample (default 2)")
    p.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    _common(p)
    p.set_defaults(func=_cmd_from_samples)
