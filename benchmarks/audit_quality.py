"""How well the audit finds copies on a memorization benchmark (docs/benchmark.md).

The `fast` model is trained on the benchmark's `train/` only (10 CPU minutes by default);
the audit runs `train/` against `synthetic/` (the perturbed synthetic images), and its
decisions are judged against the oracle's `audit.csv`: precision and recall of the flagged
copies, and top-1 source accuracy for the copies. Rows: DeepSSIM scores alone, with the
model's recorded thresholds (0.60 / 0.85, fixed) and with a duplicate threshold calibrated for
copy F1 on a second, independently built benchmark (`--val-bench`); and, per `--verify K`,
the audit that verifies the top K candidates (reference thresholds, and calibrated likewise).

    deepssim benchmark build --images ../shared/data/brain-tumor-mri/Training \
        --out /tmp/deepssim-bench/brain128nd --seed 0
    deepssim benchmark build --images ../shared/data/brain-tumor-mri/Training \
        --out /tmp/deepssim-bench/brain128nd-val --seed 1
    python benchmarks/audit_quality.py --bench /tmp/deepssim-bench/brain128nd \
        --val-bench /tmp/deepssim-bench/brain128nd-val --verify 10
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from deepssim.auditing import SearchOptions, Thresholds, audit
from deepssim.benchmark import read_audit_csv
from deepssim.benchmark.judge import best_duplicate_threshold, folder_id, judge_audit
from deepssim.model import load_model
from deepssim.training import get_preset, train


def _audit(bench: Path, model, thresholds: Thresholds | None, cache: Path, verify: int = 0):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    result = audit(bench / "train", bench / "synthetic", model, search=SearchOptions(top_k=max(5, verify)),
                   thresholds=thresholds, cache_dir=cache, verify=verify, progress=verify > 0)
    return result, time.perf_counter() - t0


def _best(result, verified: bool) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Rank-1 score per synthetic image: the DeepSSIM cosine, or the score that decided
    (the verified SSIM where verified)."""
    return result.decision_scores if verified else result.best_scores


def _judge(result, bench: Path, duplicate_min: float | None = None, verified: bool = False):  # type: ignore[no-untyped-def]
    """Judge rank-1 decisions: the audit's own labels, or ``best > duplicate_min``."""
    truth = read_audit_csv(bench)
    first = [m for m in result.matches if m.rank == 1]
    if duplicate_min is None:
        labels = [m.label for m in first]
    else:
        best = dict(zip(result.synthetic_ids, _best(result, verified)))
        labels = ["duplicate" if best[m.synthetic] > duplicate_min else "other" for m in first]
    return truth, judge_audit(((m.synthetic, m.train, lab) for m, lab in zip(first, labels)), truth, bench)


def _calibrate(result, bench: Path, verified: bool) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """The duplicate threshold of best copy F1 on a validation benchmark's audit."""
    copy = {folder_id(t.synthetic): t.is_copy for t in read_audit_csv(bench)}
    return best_duplicate_threshold(_best(result, verified), [copy[s] for s in result.synthetic_ids])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", type=Path, default=Path("/tmp/deepssim-bench/brain128"))
    parser.add_argument("--val-bench", type=Path, help="second benchmark to calibrate the threshold on")
    parser.add_argument("--model", type=Path, help="model folder (default: train one into --out/model)")
    parser.add_argument("--out", type=Path, default=Path("runs/audit_quality"))
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of the fast model")
    parser.add_argument("--verify", type=int, nargs="*", default=[], metavar="K",
                        help="also audit with verification of the top K candidates (one row per K)")
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
    result, seconds = _audit(args.bench, model, None, cache)
    truth, found = _judge(result, args.bench)
    rows.append(("DeepSSIM, model's (fixed)", result.thresholds.duplicate_min, found, seconds))
    if args.val_bench is not None:
        v_result, _ = _audit(args.val_bench, model, None, cache)
        hi, f1 = _calibrate(v_result, args.val_bench, verified=False)
        rows.append((f"DeepSSIM, calibrated on {args.val_bench.name} (val copy F1 {f1:.3f})", hi,
                     _judge(result, args.bench, hi)[1], seconds))
    for k in args.verify:
        v_run, v_seconds = _audit(args.bench, model, None, cache, verify=k)
        rows.append((f"DeepSSIM top-{k} + verification, reference (0.85)", 0.85, _judge(v_run, args.bench)[1],
                     v_seconds))
        if args.val_bench is not None:
            v_val, _ = _audit(args.val_bench, model, None, cache, verify=k)
            hi, f1 = _calibrate(v_val, args.val_bench, verified=True)
            rows.append((f"DeepSSIM top-{k} + verification, calibrated on {args.val_bench.name} "
                         f"(val copy F1 {f1:.3f})", hi, _judge(v_run, args.bench, hi, verified=True)[1], v_seconds))
    n_copy = sum(t.is_copy for t in truth)
    print()
    print(f"# audit of {args.bench}: {len(truth)} synthetic images (perturbed), "
          f"{result.summary['n_train']} training images, {n_copy} copies by the oracle")
    print(f"# model: {model_dir} ({train_note})")
    print()
    print("| thresholds | duplicate > | flagged | precision | recall | F1 | top-1 source accuracy | "
          "top-1, source's group | audit seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, hi, f, sec in rows:
        print(f"| {name} | {hi:.3f} | {f.n_flagged} | {f.precision:.3f} | {f.recall:.3f} | "
              f"{f.f1:.3f} | {f.top1_accuracy:.3f} ({f.top1_correct}/{f.n_copies}) | "
              f"{f.top1_group_accuracy:.3f} ({f.top1_group_correct}/{f.n_copies}) | {sec:.1f} |")
    best = result.best_scores
    is_copy = {folder_id(t.synthetic): t.is_copy for t in truth}
    copies = np.array([is_copy[s] for s in result.synthetic_ids])
    print()
    print(f"best-match score, oracle copies: mean {best[copies].mean():.3f}, min {best[copies].min():.3f}; "
          f"others: mean {best[~copies].mean():.3f}, max {best[~copies].max():.3f}")


if __name__ == "__main__":
    main()
