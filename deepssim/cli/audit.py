"""``deepssim audit`` and ``deepssim demo``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..auditing.nearest import BACKENDS, INDEXES
from ..auditing.options import (
    DEFAULT_FPR, DEPTH_PER_TOP, MIN_BATCH_SIZE, MIN_GRID_SIZE, MIN_MAX_SHIFT, MIN_TOP_K, MIN_VERIFY_TOP, ReadOptions,
    SearchOptions, VerifyGrid, VerifyOptions,
)
from ..auditing.result import REPORT_PAIRS
from ..readers import SliceSpec
from .model import PRESET_NAMES, workers_option
from .types import at_least, axis, non_negative_int, open_probability, positive_float, seed, thresholds

# The defaults of the flags below: the option objects' own.
SEARCH, VERIFY, READ = SearchOptions(), VerifyOptions(), ReadOptions()


def _print_summary(summary: dict[str, Any], files: dict[str, Any]) -> None:
    c = summary["counts"]
    lo, hi = summary["memorization_rate_ci95"]
    t = summary["thresholds"]
    print(f"audited {summary['n_synthetic']} synthetic images against {summary['n_train']} training images")
    v = (summary.get("verify") or {}).get("thresholds")
    decide = (f"verified SSIM thresholds {v['different_max']:.3f} / {v['duplicate_min']:.3f}, from {v['source']}; "
              f"DeepSSIM {t['different_max']:.2f} / {t['duplicate_min']:.2f} from {t['source']} choose what is "
              "verified" if v else f"thresholds {t['different_max']:.2f} / {t['duplicate_min']:.2f}, from {t['source']}")
    print(f"  duplicate {c['duplicate']}, similar {c['similar']}, different {c['different']} ({decide})")
    print(f"  memorization rate {summary['memorization_rate']:.1%} (95% CI {lo:.1%}-{hi:.1%}); "
          f"{summary['n_train_copied']} distinct training images copied; "
          f"{summary['exact_copies']} byte-identical copies")
    for entry in summary["most_copied"][:3]:
        print(f"  most copied: {entry['train']} ({entry['n_copies']}x, best score {entry['max_score']:.3f})")
    if summary.get("patients"):
        p = summary["patients"]
        lo, hi = p["n_leaked_ci95"]
        risk = p.get("patients_at_risk_ci95") or [None, None]
        print(f"  patients leaked: {p['n_leaked']} of {p['n_train_patients']} ({p['leaked_fraction']:.1%}; "
              f"expected in a release of this size: 95% CI {lo}-{hi}; at risk: about "
              f"{p.get('patients_at_risk', 0):.0f}, 95% CI {risk[0]}-{risk[1]}), patients by rule "
              f"'{p['rule']}'; every patient in {files.get('patients')}")
    _print_holdout(summary)
    if summary["skipped_unreadable"]:
        print(f"  skipped {len(summary['skipped_unreadable'])} unreadable file(s), listed in summary.json")
    print(f"  report: {files['report']}")


def _print_holdout(summary: dict[str, Any]) -> None:
    """The holdout's lines of the printed summary; its warnings go to stderr."""
    held, cal = summary.get("holdout"), (summary.get("thresholds") or {}).get("holdout")
    if not held or not cal:
        return
    lo, hi = held["excess_memorization_rate_ci95"]
    low, high = cal["thresholds"]
    used = "used" if cal["used"] else "not used: thresholds were given"
    print(f"  holdout: {cal['n']} images in the null ({cal['n_flagged']} flagged as training copies, left out); "
          f"at fpr {cal['fpr']:g}: thresholds {low:.3f} / {high:.3f} ({used})")
    print(f"  excess memorization rate {held['excess_memorization_rate']:.1%} (95% CI {lo:.1%}-{hi:.1%}) "
          f"over the holdout's {held['holdout_rate']:.1%}")
    for warning in cal.get("warnings") or []:
        print(f"deepssim audit: warning: {warning}", file=sys.stderr)


def _group_by(text: str) -> str:
    """``--group-by``: a regular expression with a group, or ``none`` (``patients.check_group_by``)."""
    from ..auditing.patients import check_group_by

    try:
        check_group_by(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--group-by: ")) from None
    return text


def _cmd_audit(args: argparse.Namespace) -> int:
    from ..auditing.cache import default_cache_dir
    from ..auditing.result import check_audit_folder

    if args.model is not None and (args.preset is not None or args.train_minutes is not None):
        raise ValueError("--preset and --train-minutes choose the model an audit trains when it is given "
                         "none; with --model it uses that model")
    check_audit_folder(args.out, [*args.train, *args.synthetic, *(args.holdout or [])],
                       cache=None if args.no_cache else (args.cache or default_cache_dir()))
    try:
        result = _audit(args)
    except KeyboardInterrupt as exc:
        args.kept = str(exc) or None  # what an interrupted training kept (TrainingInterrupted)
        raise
    files = result.save(args.out, max_pairs=args.report_pairs, progress=not args.no_progress)
    if args.json:
        print(json.dumps(result.summary, indent=2))
    else:
        _print_summary(result.summary, files)
    return 0


def _audit(args: argparse.Namespace) -> Any:
    from ..auditing import audit

    preset = None
    if args.model is None and (args.preset is not None or args.train_minutes is not None):
        from ..training import get_preset

        preset = get_preset(args.preset or "fast")
        if args.train_minutes is not None:
            preset = preset.with_overrides(max_minutes=args.train_minutes)
    return audit(
        args.train, args.synthetic, args.model,
        search=SearchOptions(top_k=args.top_k, backend=args.backend, index=args.index),
        thresholds=args.thresholds, calibration=args.calibration,
        verify=VerifyOptions(top=args.verify, max=args.verify_max, thresholds=args.verify_thresholds,
                             grid=VerifyGrid(size=args.verify_size, max_shift=args.verify_max_shift),
                             correct=not args.raw_verified),
        reading=ReadOptions(slices=SliceSpec.parse(args.slices, axis=args.axis, skip_empty=args.skip_empty),
                            skip_unreadable=args.skip_unreadable, batch_size=args.batch_size,
                            workers=args.workers),
        cache_dir=None if args.no_cache else (args.cache or "default"), device=args.device,
        trust_torchscript=args.trust_torchscript, progress=not args.no_progress,
        holdout=args.holdout, fpr=args.fpr, preset=preset, group_by=args.group_by,
        say=lambda line: print(line, file=sys.stderr),
    )


def _audit_interrupted(args: argparse.Namespace) -> str:
    """What an interrupted audit kept, and how to go on."""
    if getattr(args, "kept", None):
        return args.kept
    if args.no_cache:
        return "nothing was kept (--no-cache): run the same command again to start it over"
    return ("the cache keeps the images embedded and the pairs verified so far: run the same command "
            "again to continue from them")


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo
    from ..storage import check_output_folder

    check_output_folder(args.out)
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
                    "duplicate / similar / different, and count the training patients copied "
                    "(--group-by). Writes matches.csv, summary.json, report.html, histogram.png "
                    "and patients.csv into --out.",
    )
    p.add_argument("--train", nargs="+", required=True, metavar="DIR", help="training images (folders or files)")
    p.add_argument("--synthetic", nargs="+", required=True, metavar="DIR", help="synthetic images (folders or files)")
    p.add_argument("--model", help="model folder written by 'deepssim train' (default: the --preset model "
                                   "trained on --train once, kept in the cache and reused by later audits "
                                   "of the same training images)")
    p.add_argument("--preset", choices=PRESET_NAMES,
                   help="without --model: the preset trained (default fast, a 10-minute budget)")
    p.add_argument("--train-minutes", type=positive_float, metavar="M",
                   help="without --model: the training's time budget instead of the preset's "
                        "(a model per budget is kept)")
    p.add_argument("--out", required=True,
                   help="output folder: new, empty, or an earlier audit's (replaced whole when this one is done)")
    p.add_argument("--top-k", type=at_least(MIN_TOP_K), default=SEARCH.top_k,
                   help=f"training matches kept per synthetic image (default {SEARCH.top_k})")
    p.add_argument("--thresholds", type=thresholds, help="LOW,HIGH: score <= LOW different, > HIGH duplicate "
                                        "(default: the calibration file, else the holdout's at --fpr, "
                                        "else the model's)")
    p.add_argument("--calibration", help="thresholds from a JSON file written by 'deepssim evaluate --calibrate' "
                                         "or by an audit with --holdout (its thresholds.json)")
    p.add_argument("--holdout", nargs="+", metavar="DIR",
                   help="real images of the same source NOT in the training set (the test split), scored "
                        "like the synthetic ones: their best matches are the null that sets the thresholds "
                        "at --fpr (unless thresholds are given), each synthetic image's p-value and the "
                        "excess memorization rate; writes thresholds.json")
    p.add_argument("--fpr", type=open_probability, metavar="RATE",
                   help="false-alarm rate of the holdout's duplicate threshold, in (0, 1) "
                        f"(default {DEFAULT_FPR} with --holdout; needs at least 1/RATE - 1 holdout images)")
    p.add_argument("--backend", default=SEARCH.backend, choices=BACKENDS,
                   help=f"search: exact (torch), faiss, or auto by size (default {SEARCH.backend})")
    p.add_argument("--index", default=SEARCH.index, choices=INDEXES,
                   help="FAISS index; ivf and hnsw are approximate (their recall is measured and reported) "
                        f"(default {SEARCH.index})")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--batch-size", type=at_least(MIN_BATCH_SIZE), default=READ.batch_size,
                   help=f"images per network batch (default {READ.batch_size})")
    workers_option(p)
    p.add_argument("--cache", help="cache folder of embeddings and of the models audits train (default $DEEPSSIM_CACHE_DIR, else $XDG_CACHE_HOME/deepssim, else ~/.cache/deepssim); "
                                   "its entries are signed with a key of yours kept outside it "
                                   "($DEEPSSIM_KEY_FILE, default ~/.config/deepssim/cache.key)")
    p.add_argument("--no-cache", action="store_true",
                   help="do not read or write the cache (a model trained without --model is then "
                        "written into --out/model)")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="audit the readable images and list the others instead of stopping")
    p.add_argument("--slices", default=READ.slices.select,
                   help=f"for volumes: center, all, START:STOP[:STEP] (default {READ.slices.select})")
    p.add_argument("--axis", type=axis, help="slicing axis (default: the format's)")
    p.add_argument("--skip-empty", action="store_true", help="drop all-background slices")
    p.add_argument("--verify", type=at_least(MIN_VERIFY_TOP), default=VERIFY.top, metavar="K",
                   help="re-score up to K best candidates of each suspicious synthetic image with the "
                        "reference SSIM after undoing shifts, flips, rotations and contrast (~15 ms a "
                        "pair at 128 px), by blocks of 5 until a copy is found; the verified SSIM, less "
                        "its lean measured on the training images, then decides the class "
                        f"(default {VERIFY.top}; 0: off)")
    p.add_argument("--verify-max", type=at_least(MIN_VERIFY_TOP), default=VERIFY.max, metavar="N",
                   help="where every candidate verified is a duplicate (a cluster of near-identical "
                        f"training images), go on past K, up to N in all (default {DEPTH_PER_TOP}K; K: off)")
    p.add_argument("--verify-size", type=at_least(MIN_GRID_SIZE), default=VERIFY.grid.size, metavar="S",
                   help=f"side both images are resized to for verification (default {VERIFY.grid.size}). "
                        "At the images' own resolution the search's interpolation blurs the sharp training "
                        "image and can raise its SSIM against blurry samples (docs/case-study.md)")
    p.add_argument("--verify-max-shift", type=at_least(MIN_MAX_SHIFT), default=VERIFY.grid.max_shift, metavar="PX",
                   help="whole-pixel shifts searched by verification, in pixels at --verify-size "
                        f"(default {VERIFY.grid.max_shift})")
    p.add_argument("--raw-verified", action="store_true",
                   help="decide on the best SSIM over the verification grid as it is, an upper bound of "
                        "the clean-frame SSIM, instead of that SSIM less its lean measured on near-copies "
                        "of the training images (docs/quality.md)")
    p.add_argument("--verify-thresholds", type=thresholds, metavar="LO,HI",
                   help="thresholds for the verified SSIMs (default: a --calibration file's fitted on "
                        "verified SSIMs, else the holdout's at --fpr, else the reference "
                        f"{VERIFY.decision_thresholds.different_max:.2f},"
                        f"{VERIFY.decision_thresholds.duplicate_min:.2f})")
    p.add_argument("--group-by", type=_group_by, metavar="REGEX|none",
                   help="who the training images' patients are, for the leaked-patient count: a regular "
                        "expression searched in each training id whose first group names the patient "
                        "(e.g. '^([^/]+)/': the top folder); 'none': one per image (default: the DICOM "
                        "PatientID, else the BIDS sub-<label>, else one per scan)")
    p.add_argument("--report-pairs", type=non_negative_int, default=REPORT_PAIRS,
                   help=f"pairs shown in the report's gallery (default {REPORT_PAIRS})")
    p.add_argument("--trust-torchscript", action="store_true",
                   help="allow loading the authors' TorchScript checkpoint (it can run code)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_audit, on_interrupt=_audit_interrupted)

    p = sub.add_parser(
        "demo",
        help="the whole job on a built-in brain MRI cohort (no data needed, about 8 minutes on a 2-core CPU)",
        description="Builds a small brain MRI cohort from the MNI152 template shipped with "
                    "nilearn, plants memorized copies in a synthetic set, trains the fast "
                    "model, audits, and says how many planted copies it found.",
    )
    p.add_argument("--out", default="deepssim-demo", help="output folder (default ./deepssim-demo)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--train-minutes", type=positive_float, default=4.0, help="training budget (default 4)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the demo's figures as JSON")
    p.set_defaults(func=_cmd_demo)
