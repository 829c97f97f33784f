"""The default audit on a memorization benchmark: `deepssim audit --train --synthetic --out`
and nothing else, judged against the oracle's `audit.csv` (docs/benchmark.md).

Without `--model` the audit trains the `fast` model on `train/` (10 CPU minutes) and keeps it in
the cache, as a user's first audit does; the training time is reported apart. Prints precision
and recall of the flagged copies, top-1 source (the oracle's nearest file, and its group of
near-identical training images), the memorization rate the summary reports beside the true copy
rate, non-members and near-copies flagged, each stage's time and the peak memory. With
`--every-candidate` the audit runs again verifying every candidate above the gate, not the
cascade's blocks (``deepssim.auditing.rerank``): what the cascade gives up, and what it saves.

    deepssim benchmark build --images brain-tumor-mri/Training --out bench/brain128nd --seed 0
    python benchmarks/default_audit.py --bench bench/brain128nd --cache cache --every-candidate
"""

from __future__ import annotations

import argparse
import json
import resource
from pathlib import Path

from deepssim.auditing import audit, rerank
from deepssim.benchmark import read_audit_csv
from deepssim.benchmark.judge import judge_with_members


def _run(bench: Path, model: str | None, cache: str) -> dict:  # type: ignore[type-arg]
    result = audit(bench / "train", bench / "synthetic", model, cache_dir=cache, progress=True)
    truth = read_audit_csv(bench)
    judged = judge_with_members([(m.synthetic, m.train, m.label) for m in result.matches if m.rank == 1],
                                truth, bench)
    s = result.summary
    verify = s.get("verify") or {}
    return {**judged, "memorization_rate": s["memorization_rate"], "timings": s["timings"],
            "peak_memory_mb": s.get("peak_memory_mb"), "verified_pairs": verify.get("pairs"),
            "correction": verify.get("correction"),
            "model": (s.get("model") or {}).get("origin")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", type=Path, required=True, help="benchmark folder")
    parser.add_argument("--model", help="model folder (default: the audit trains the fast model and caches it)")
    parser.add_argument("--cache", default="default", help="cache folder (embeddings, trained models)")
    parser.add_argument("--every-candidate", action="store_true",
                        help="run again verifying every candidate above the gate, for comparison")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runs = {"default": _run(args.bench, args.model, args.cache)}
    if args.every_candidate:
        rerank.BLOCK = 1 << 30  # one block of K: the verification before the cascade
        runs["every candidate"] = _run(args.bench, args.model, args.cache)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        print(json.dumps({"bench": str(args.bench), "runs": runs, "process_peak_mb": round(peak)}, indent=2))
        return
    for name, r in runs.items():
        t = r["timings"]
        print(f"{args.bench} ({name}): precision {r['precision']:.3f}, recall {r['recall']:.3f}, "
              f"top-1 {r['top1_accuracy']:.3f} (group {r['top1_group_accuracy']:.3f}); "
              f"memorization rate {r['memorization_rate']:.1%} vs true {r['true_copy_rate']:.1%}; "
              f"non-members flagged {r['non_members_flagged']}/{r['n_non_members']}, "
              f"near-copies flagged {r['near_copies_flagged']}; {r['verified_pairs']} pairs verified")
        print("  seconds: " + ", ".join(f"{k[:-2]} {v:.1f}" for k, v in t.items()))
    print(f"process peak memory {peak:.0f} MB")


if __name__ == "__main__":
    main()
