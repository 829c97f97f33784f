"""``deepssim audit`` and ``deepssim demo``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .model import workers_option


def _print_summary(summary: dict[str, Any], files: dict[str, Any]) -> None:
    c = summary["counts"]
    lo, hi = summary["memorization_rate_ci95"]
    t = summary["thresholds"]
    print(f"audited {summary['n_synthetic']} synthetic images against {summary['n_train']} training images")
    print(f"  duplicate {c['duplicate']}, similar {c['similar']}, different {c['different']} "
          f"(thresholds {t['different_max']:.2f} / {t['duplicate_min']:.2f}, from {t['source']})")
    print(f"  memorization rate {summary['memorization_rate']:.1%} (95% CI {lo:.1%}-{hi:.1%}); "
          f"{summary['n_train_copied']} distinct training images copied; "
          f"{summary['exact_copies']} byte-identical copies")
    for entry in summary["most_copied"][:3]:
        print(f"  most copied: {entry['train']} ({entry['n_copies']}x, best score {entry['max_score']:.3f})")
    if summary["skipped_unreadable"]:
        print(f"  skipped {len(summary['skipped_unreadable'])} unreadable file(s), listed in summary.json")
    print(f"  report: {files['report']}")


def _cmd_audit(args: argparse.Namespace) -> int:
    from ..auditing import audit
    from ..auditing.verify import VerifyGrid
    from ..readers import SliceSpec

    spec = SliceSpec.parse(args.slices, axis=args.axis, skip_empty=args.skip_empty)
    result = audit(
        args.train, args.synthetic, args.model, top_k=args.top_k, thresholds=args.thresholds,
        calibration=args.calibration, backend=args.backend, index=args.index, device=args.device,
        slices=spec, cache_dir=None if args.no_cache else (args.cache or "default"),
        skip_unreadable=args.skip_unreadable, batch_size=args.batch_size,
        progress=not args.no_progress, trust_torchscript=args.trust_torchscript, verify=args.verify,
        verify_max=args.verify_max, verify_thresholds=args.verify_thresholds,
        verify_grid=VerifyGrid(size=args.verify_size, max_shift=args.verify_max_shift),
        workers=args.workers,
    )
    files = result.save(args.out, max_pairs=args.report_pairs, progress=not args.no_progress)
    if args.json:
        print(json.dumps(result.summary, indent=2))
    else:
        _print_summary(result.summary, files)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    # With --json, stdout carries only the JSON object; the narrative goes to stderr.
    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    figures = run_demo(args.out, device=args.device, train_minutes=args.train_minutes,
                       seed=args.seed, progress=not args.no_progress, say=say)
    if args.json:
        print(json.dumps(figures, indent=2))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="find the training images that synthetic images copy",
        description="Embed every training and synthetic image (cached by content), find each "
                    "synthetic image's top-k training images by DeepSSIM score, and class it "
                    "duplicate / similar / different. Writes matches.csv, summary.json, "
                    "report.html and histogram.png into --out.",
    )
    p.add_argument("--train", nargs="+", required=True, metavar="DIR", help="training images (folders or files)")
    p.add_argument("--synthetic", nargs="+", required=True, metavar="DIR", help="synthetic images (folders or files)")
    p.add_argument("--model", required=True, help="model folder written by 'deepssim train'")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--top-k", type=int, default=5, help="training matches kept per synthetic image (default 5)")
    p.add_argument("--thresholds", help="LOW,HIGH: score <= LOW different, > HIGH duplicate "
                                        "(default: the calibration file, else the model's)")
    p.add_argument("--calibration", help="thresholds from a JSON file written by 'deepssim evaluate --calibrate'")
    p.add_argument("--backend", default="auto", choices=["auto", "exact", "faiss"])
    p.add_argument("--index", default="flat", choices=["flat", "ivf", "hnsw"],
                   help="FAISS index; ivf and hnsw are approximate (their recall is measured and reported)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--batch-size", type=int, default=64)
    workers_option(p)
    p.add_argument("--cache", help="embedding cache folder (default $DEEPSSIM_CACHE_DIR or ~/.cache/deepssim)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="audit the readable images and list the others instead of stopping")
    p.add_argument("--slices", default="center", help="for volumes: center, all, START:STOP[:STEP]")
    p.add_argument("--axis", type=int, help="slicing axis (default: the format's)")
    p.add_argument("--skip-empty", action="store_true", help="drop all-background slices")
    p.add_argument("--verify", type=int, default=0, metavar="K",
                   help="re-score the K best candidates of each suspicious synthetic image with the "
                        "reference SSIM after undoing shifts, flips, rotations and contrast (~50 ms a "
                        "pair at 128 px); the verified SSIM then decides the class")
    p.add_argument("--verify-max", type=int, metavar="N",
                   help="where all K verified candidates are duplicates (a cluster of near-identical "
                        "training images), verify K more, up to N in all (default 4K; K: off)")
    p.add_argument("--verify-size", type=int, default=128, metavar="S",
                   help="side both images are resized to for verification (default 128). At the images' "
                        "own resolution the search's interpolation blurs the sharp training image and "
                        "can raise its SSIM against blurry samples (docs/case-study.md)")
    p.add_argument("--verify-max-shift", type=int, default=2, metavar="PX",
                   help="whole-pixel shifts searched by verification, in pixels at --verify-size "
                        "(default 2)")
    p.add_argument("--verify-thresholds", metavar="LO,HI",
                   help="thresholds for the verified SSIMs (default 0.60,0.85, the reference ones)")
    p.add_argument("--report-pairs", type=int, default=48, help="pairs shown in the report's gallery")
    p.add_argument("--trust-torchscript", action="store_true",
                   help="allow loading the authors' TorchScript checkpoint (it can run code)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_audit)

    p = sub.add_parser(
        "demo",
        help="the whole job on a built-in brain MRI cohort (no data needed, ~6 minutes on a CPU)",
        description="Builds a small brain MRI cohort from the MNI152 template shipped with "
                    "nilearn, plants memorized copies in a synthetic set, trains the fast "
                    "model, audits, and says how many planted copies it found.",
    )
    p.add_argument("--out", default="deepssim-demo", help="output folder (default ./deepssim-demo)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--train-minutes", type=float, default=4.0, help="training budget (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the demo's figures as JSON")
    p.set_defaults(func=_cmd_demo)
