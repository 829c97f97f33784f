"""The holdout path on a memorization benchmark (docs/holdout.md): does calibrating on
`holdout/` find the copies, and does the excess memorization rate match the truth?

Given a benchmark folder with `holdout/` (`deepssim benchmark build`, `--n-holdout`) and a
trained model, audits `train/` against `synthetic/` twice, with the model's thresholds and
with `--holdout BENCH/holdout --fpr RATE`, and prints for each the precision and recall of the
flagged copies against the oracle's `audit.csv` (``benchmark.judge``), the synthetic images
made from non-members that were flagged (what `--fpr` bounds) and those made from training
images but below the copy line (SSIM <= 0.85) that were flagged (`synthetic.csv`'s `member`),
and for the holdout audit the thresholds, the null's size, the flagged holdout copies and the
excess memorization rate beside the true copy rate (the share of `is_copy` in `audit.csv`).

    deepssim benchmark build --images brain-tumor-mri/Training --out bench/brain128nd --seed 0
    deepssim train bench/brain128nd/train --preset fast --out models/brain128nd
    python benchmarks/holdout_quality.py --bench bench/brain128nd --model models/brain128nd --verify 20
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from deepssim.auditing import SearchOptions, audit
from deepssim.benchmark import read_audit_csv
from deepssim.benchmark.judge import judge_with_members, read_members


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", type=Path, required=True, help="benchmark folder with holdout/")
    parser.add_argument("--model", required=True, help="model folder ('deepssim train')")
    parser.add_argument("--fpr", type=float, default=0.01)
    parser.add_argument("--verify", type=int, default=0, help="verify the top K candidates (default 0: off)")
    parser.add_argument("--cache", default="default", help="embedding cache folder")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (args.bench / "holdout").is_dir():
        parser.error(f"{args.bench}: no holdout/ folder (build the benchmark with --n-holdout N)")
    truth = read_audit_csv(args.bench)
    true_rate = sum(t.is_copy for t in truth) / len(truth)
    members = read_members(args.bench)
    member_rate = sum(members.values()) / len(members)
    runs = {}
    for name, holdout in (("model thresholds", None), (f"holdout, fpr {args.fpr:g}", args.bench / "holdout")):
        t0 = time.perf_counter()
        result = audit(args.bench / "train", args.bench / "synthetic", args.model,
                       search=SearchOptions(top_k=max(5, args.verify)), verify=args.verify, cache_dir=args.cache,
                       holdout=holdout, fpr=args.fpr if holdout else None)
        runs[name] = {"seconds": round(time.perf_counter() - t0, 1), **judge_with_members(
                          [(m.synthetic, m.train, m.label) for m in result.matches if m.rank == 1], truth, args.bench),
                      "thresholds": result.summary["thresholds"], "holdout": result.summary.get("holdout")}
    if args.json:
        print(json.dumps({"true_copy_rate": true_rate, "member_rate": member_rate, "runs": runs}, indent=2))
        return
    print(f"{args.bench}: {len(truth)} synthetic images, true copy rate {true_rate:.1%}, "
          f"made from training images {member_rate:.1%}")
    for name, run in runs.items():
        print(f"  {name}: precision {run['precision']:.3f}, recall {run['recall']:.3f} "
              f"({run['n_flagged']} flagged, {run['true_positives']} of {run['n_copies']} copies; {run['seconds']} s)")
        print(f"    non-members flagged {run['non_members_flagged']} of {run['n_non_members']}, "
              f"near-copies below the copy line flagged {run['near_copies_flagged']}")
        held = run["holdout"]
        if held:
            cal = run["thresholds"]["holdout"]
            lo, hi = held["excess_memorization_rate_ci95"]
            print(f"    thresholds {cal['thresholds'][0]:.3f} / {cal['thresholds'][1]:.3f} on {cal['applies_to']}, "
                  f"null n={cal['n']} ({cal['n_flagged']} holdout copies flagged)")
            print(f"    excess memorization rate {held['excess_memorization_rate']:.1%} "
                  f"(95% CI {lo:.1%}-{hi:.1%}) vs true copy rate {true_rate:.1%}")


if __name__ == "__main__":
    main()
