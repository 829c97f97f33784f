"""How well the audit finds copies on a memorization benchmark (../shared/BENCHMARK.md).

The `fast` model is trained on the benchmark's `train/` only (10 CPU minutes by default);
the audit runs `train/` against `synthetic/` (the perturbed synthetic images), and its
decisions are judged against the oracle's `audit.csv`: precision and recall of the flagged
copies, and top-1 source accuracy for the copies. Thresholds: the model's recorded ones
(0.60 / 0.85, fixed), and a duplicate threshold calibrated for copy F1 on a second,
independently built benchmark (`--val-bench`), audited with the same model.

    deepssim benchmark build --images ../shared/data/brain-tumor-mri/Training \
        --out /tmp/deepssim-bench/brain128 --n-train 1000 --n-synthetic 500 --seed 0
    deepssim benchmark build --images ../shared/data/brain-tumor-mri/Training \
        --out /tmp/deepssim-bench/brain128-val --n-train 1000 --n-synthetic 500 --seed 1
    python benchmarks/audit_quality.py --bench /tmp/deepssim-bench/brain128 \
        --val-bench /tmp/deepssim-bench/brain128-val
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from deepssim.auditing import Thresholds, audit
from deepssim.benchmark import read_audit_csv
from deepssim.benchmark.judge import best_duplicate_threshold, folder_id, judge_audit
from deepssim.model import load_model
from deepssim.training import get_preset, train


def _audit_and_judge(bench: Path, model, thresholds: Thresholds | None, cache: Path):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    result = audit(bench / "train", bench / "synthetic", model, thresholds=thresholds, cache_dir=cache)
    seconds = time.perf_counter() - t0
    truth = read_audit_csv(bench)
    found = judge_audit(((m.synthetic, m.train, m.label) for m in result.matches if m.rank == 1), truth, bench)
    return result, truth, found, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", type=Path, default=Path("/tmp/deepssim-bench/brain128"))
    parser.add_argument("--val-bench", type=Path, help="second benchmark to calibrate the threshold on")
    parser.add_argument("--model", type=Path, help="model folder (default: train one into --out/model)")
    parser.add_argument("--out", type=Path, default=Path("runs/audit_quality"))
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of the fast model")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override a fast-preset field for training, e.g. lr=0.001")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model_dir = args.model
    train_note = "given"
    if model_dir is None:
        model_dir = args.out / "model"
        overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
        config = get_preset("fast").with_overrides(max_minutes=args.minutes, **overrides)
        t0 = time.perf_counter()
        trained = train([args.bench / "train"], model_dir, config)
        train_note = (f"fast preset, {args.minutes:g}-minute budget, {int(trained.history[-1]['step'])} steps, "
                      f"wall {(time.perf_counter() - t0) / 60:.1f} min, validation MAE "
                      f"{trained.best['val_perturbed_mae']:.3f}")
    model = load_model(model_dir)
    cache = args.out / "cache"
    rows = []
    result, truth, found, seconds = _audit_and_judge(args.bench, model, None, cache)
    rows.append(("model's (fixed)", result.thresholds, found, seconds))
    if args.val_bench is not None:
        v_result, v_truth, _, _ = _audit_and_judge(args.val_bench, model, None, cache)
        copy = {folder_id(t.synthetic): t.is_copy for t in v_truth}
        labels = [copy[s] for s in v_result.synthetic_ids]
        hi, f1 = best_duplicate_threshold(v_result.best_scores, labels)
        calibrated = Thresholds(min(0.60, hi), hi, source="calibration", file=str(args.val_bench))
        result, truth, found, seconds = _audit_and_judge(args.bench, model, calibrated, cache)
        rows.append((f"calibrated on {args.val_bench.name} (val copy F1 {f1:.3f})", calibrated, found, seconds))
    n_copy = sum(t.is_copy for t in truth)
    print()
    print(f"# audit of {args.bench}: {len(truth)} synthetic images (perturbed), "
          f"{result.summary['n_train']} training images, {n_copy} copies by the oracle")
    print(f"# model: {model_dir} ({train_note})")
    print()
    print("| thresholds | duplicate > | flagged | precision | recall | F1 | top-1 source accuracy | audit seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for name, t, f, sec in rows:
        print(f"| {name} | {t.duplicate_min:.3f} | {f.n_flagged} | {f.precision:.3f} | {f.recall:.3f} | "
              f"{f.f1:.3f} | {f.top1_accuracy:.3f} ({f.top1_correct}/{f.n_copies}) | {sec:.1f} |")
    best = result.best_scores
    is_copy = {folder_id(t.synthetic): t.is_copy for t in truth}
    copies = np.array([is_copy[s] for s in result.synthetic_ids])
    print()
    print(f"best-match score, oracle copies: mean {best[copies].mean():.3f}, min {best[copies].min():.3f}; "
          f"others: mean {best[~copies].mean():.3f}, max {best[~copies].max():.3f}")


if __name__ == "__main__":
    main()
