"""How far the verified SSIM is from the clean-frame SSIM, by band, before and after the
correction the audit applies (``deepssim.auditing.correction``).

For every synthetic image of a benchmark made from a training image (``synthetic.csv``), the
pair (source, perturbed synthetic) is verified as the audit does (``verify.py``) and compared
with the reference SSIM of (source, clean synthetic), the benchmark's ``origin_ssim``. The
correction is fitted on the benchmark's own training images, as an audit of ``train/`` fits it.
Prints bias (mean of estimate - truth) and spread (standard deviation) per band of the truth,
and the pairs the duplicate line (0.85) puts on the wrong side, raw and corrected.

    python benchmarks/verify_bias.py --bench bench/brain128nd
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from deepssim import read_image
from deepssim.auditing.correction import obtain_correction
from deepssim.auditing.options import VerifyGrid
from deepssim.auditing.verify import verify_pairs

BANDS = [(0.3, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.85), (0.85, 0.9), (0.9, 1.0001)]
LINE = 0.85


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", type=Path, required=True)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with open(args.bench / "synthetic.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["member"] == "1"]
    grid = VerifyGrid()
    train_files = sorted(p for p in (args.bench / "train").rglob("*") if p.is_file())
    t0 = time.perf_counter()
    # As an audit of train/ fits it (the same images drawn), without its cache.
    correction, _ = obtain_correction(lambda i: read_image(train_files[i]), len(train_files), [], grid, None, None)
    fit_s = time.perf_counter() - t0
    images = {p: read_image(args.bench / p) for p in {r["source"] for r in rows} | {r["synthetic"] for r in rows}}
    t0 = time.perf_counter()
    raw = verify_pairs([(images[r["source"]], images[r["synthetic"]]) for r in rows], grid)
    verify_s = time.perf_counter() - t0
    truth = np.array([float(r["origin_ssim"]) for r in rows])
    estimates = {"raw": raw, "corrected": correction(raw)}
    report = {"bench": str(args.bench), "pairs": len(rows), "fit_s": round(fit_s, 1),
              "verify_ms_per_pair": round(1000 * verify_s / len(rows), 1), "correction": correction.summary(),
              "bands": [], "wrong_side": {}}
    for lo, hi in BANDS:
        inside = (truth >= lo) & (truth < hi)
        band = {"band": f"{lo:.2f}-{min(hi, 1):.2f}", "n": int(inside.sum())}
        for name, est in estimates.items():
            err = est[inside] - truth[inside]
            band[name] = [round(float(err.mean()), 3), round(float(err.std()), 3)] if inside.any() else None
        report["bands"].append(band)
    for name, est in estimates.items():
        report["wrong_side"][name] = {"above_line_truth_below": int(((est > LINE) & (truth <= LINE)).sum()),
                                      "below_line_truth_above": int(((est <= LINE) & (truth > LINE)).sum())}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.bench}: {len(rows)} pairs made from training images; correction fitted in {fit_s:.0f} s, "
          f"verification {report['verify_ms_per_pair']} ms a pair")
    print("| clean SSIM | pairs | raw: bias, sd | corrected: bias, sd |")
    print("|---|---|---|---|")
    for b in report["bands"]:
        cells = [f"{v[0]:+.3f}, {v[1]:.3f}" if v else "" for v in (b["raw"], b["corrected"])]
        print(f"| {b['band']} | {b['n']} | {cells[0]} | {cells[1]} |")
    for name, w in report["wrong_side"].items():
        print(f"{name}: {w['above_line_truth_below']} pairs above {LINE} with truth below, "
              f"{w['below_line_truth_above']} below with truth above")


if __name__ == "__main__":
    main()
