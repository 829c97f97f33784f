"""The built-in example: the whole audit on a brain MRI cohort made from packaged data.

1. A cohort of "subjects" from nilearn's MNI152 template (``deepssim.cohort``).
2. A memorization benchmark from it (``deepssim.benchmark``): a training set, and a synthetic
   set with planted copies of training images (generator-like changes, then flipped, rotated,
   re-contrasted as in docs/benchmark.md) and novel images of unseen subjects; the oracle
   (reference SSIM) says which synthetic images are copies.
3. The ``fast`` DeepSSIM model trained on the training set only, for a few minutes.
4. The audit, its report, and how many of the planted copies it found.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = ".deepssim-demo"
"""File that marks a folder as the demo's own, so a rerun may replace its contents."""


@dataclass(frozen=True)
class DemoSize:
    """How big the demo's cohort, benchmark and training are."""

    n_subjects: int = 160
    slices_per_subject: int = 3
    n_train: int = 240
    n_synthetic: int = 160
    verify: int = 20
    """Candidates verified per suspicious synthetic image (``audit(verify=...)``)."""
    n_train_pairs: int = 20_000
    n_val_pairs: int = 1_000


def _prepare(out: Path) -> None:
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise FileExistsError(f"{out}: exists and is not a deepssim demo folder; give another --out")
    for part in ("cohort", "benchmark", "model", "audit", "cache"):
        shutil.rmtree(out / part, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by 'deepssim demo'; its contents are replaced on a rerun\n")


def run_demo(
    out: str | Path = "deepssim-demo",
    *,
    device: str = "auto",
    train_minutes: float = 4.0,
    seed: int = 0,
    size: DemoSize = DemoSize(),
    progress: bool = True,
    say: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Run the example end to end, print what it finds, and return the figures."""
    from .auditing import SearchOptions, audit
    from .benchmark import build_benchmark, read_audit_csv
    from .benchmark.judge import judge_audit
    from .cohort import SUBJECT_GROUP, make_cohort
    from .training import get_preset, train

    out = Path(out)
    _prepare(out)
    t0 = time.perf_counter()
    cohort = make_cohort(out / "cohort", size.n_subjects, size.slices_per_subject, seed)
    say(f"[1/4] cohort: {size.n_subjects} subjects x {size.slices_per_subject} axial slices from "
        f"the MNI152 template (nilearn), in {cohort}")
    bench = out / "benchmark"
    build_benchmark([cohort], bench, n_train=size.n_train, n_synthetic=size.n_synthetic, size=128,
                    group_by=SUBJECT_GROUP, near_duplicates=None, seed=seed, progress=progress)
    truth = read_audit_csv(bench)
    n_planted = sum(row.is_copy for row in truth)
    say(f"[2/4] benchmark: {size.n_train} training images, {len(truth)} synthetic images of which "
        f"{n_planted} are copies by the oracle (reference SSIM > 0.85), flipped / rotated / "
        f"re-contrasted, in {bench}")

    # No torch.compile: on a fresh machine its first compilation would add about a minute of
    # wall time to a demo that trains for a few.
    config = get_preset("fast").with_overrides(
        max_minutes=train_minutes, n_train_pairs=size.n_train_pairs, n_val_pairs=size.n_val_pairs, seed=seed,
        compile=False)
    trained = train([bench / "train"], out / "model", config, device=device, progress=progress)
    say(f"[3/4] model: 'fast' preset trained {train_minutes:g} min on the training images only "
        f"(validation MAE {trained.best['val_perturbed_mae']:.3f}, r {trained.best['val_perturbed_r']:.3f})")

    result = audit(bench / "train", bench / "synthetic", out / "model", device=device,
                   search=SearchOptions(top_k=max(5, size.verify)), cache_dir=out / "cache", progress=progress,
                   verify=size.verify)
    files = result.save(out / "audit", progress=progress)
    found = judge_audit(((m.synthetic, m.train, m.label) for m in result.matches if m.rank == 1), truth, bench)
    s = result.summary
    say(f"[4/4] audit: {s['counts']['duplicate']} of {s['n_synthetic']} synthetic images flagged as "
        f"duplicates (memorization rate {s['memorization_rate']:.1%}), {s['counts']['similar']} similar")
    say(f"found {found.true_positives} of the {found.n_copies} planted copies "
        f"(recall {found.recall:.0%}, precision {found.precision:.0%}; the source named correctly "
        f"for {found.top1_correct} of {found.n_copies})")
    say(f"report: {files['report']}   (matches.csv and summary.json beside it)")
    elapsed = time.perf_counter() - t0
    say(f"demo finished in {elapsed / 60:.1f} min")
    return {"out": str(out), "report": str(files["report"]), "n_planted_copies": n_planted,
            "detection": found.to_dict(), "summary": s, "validation": trained.best,
            "seconds": round(elapsed, 1)}
