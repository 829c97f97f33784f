"""Presenting a comparison: the markdown table and the paper-style score histograms."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..classes import CLASSES, COLOURS
from ..storage import atomic_write_bytes
from .harness import Comparison, Evaluation

NA = "n/a"


def _f1_cell(e: Evaluation | None) -> str:
    if e is None:
        return "—"
    if e.macro_f1 is None:
        return NA
    lo, hi = e.macro_f1_ci95 or (np.nan, np.nan)
    return f"{e.macro_f1:.3f} ({lo:.3f}–{hi:.3f})"


def _pr_cell(e: Evaluation | None) -> str:
    if e is None:
        return "—"
    if e.per_class is None:
        return NA
    dup = e.per_class["duplicate"]
    return f"{dup.precision:.3f} / {dup.recall:.3f}"


def _num(value: float | None, fmt: str = "{:.3f}") -> str:
    return NA if value is None else fmt.format(value)


def _speed(evaluations: list[Evaluation]) -> str:
    pairs = sum(e.n_pairs for e in evaluations)
    seconds = sum(e.seconds for e in evaluations)
    if not pairs:
        return "—"
    rate = pairs / seconds if seconds > 0 else float("inf")
    return f"{rate:,.0f}" if rate >= 10 else f"{rate:.2g}"


def _thresholds(e: Evaluation | None) -> str:
    if e is None:
        return "—"
    if e.thresholds is None:
        return "none"
    lo, hi = e.thresholds.pair
    return f"{lo:.3g} / {hi:.3g}"


def markdown_table(comparison: Comparison) -> str:
    """The comparison table: one row per metric (skipped ones with their reason), then notes."""
    cols = ("registered", "perturbed")
    header = ["metric", "scale", *(f"macro F1 {c}" for c in cols),
              *(f"duplicate P / R {c}" for c in cols), *(f"AUC duplicate {c}" for c in cols),
              "pairs/s", *(f"thresholds {c}" for c in cols)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in comparison.metrics():
        if name in comparison.skipped:
            reason = comparison.skipped[name].replace("|", "\\|")
            lines.append(f"| {name} | skipped: {reason} |" + " |" * (len(header) - 2))
            continue
        ev = {c: comparison.get(name, c) for c in cols}
        done = [e for e in ev.values() if e is not None]
        row = [name, done[0].scale, *(_f1_cell(ev[c]) for c in cols), *(_pr_cell(ev[c]) for c in cols),
               *("—" if ev[c] is None else _num(ev[c].auc_duplicate) for c in cols),
               _speed(done), *(_thresholds(ev[c]) for c in cols)]
        lines.append("| " + " | ".join(row) + " |")
    notes = [
        "",
        f"{comparison.n_pairs} pairs of `{comparison.pairs_file}`. Macro F1 with its 95% bootstrap "
        "interval; duplicate precision / recall; duplicate-vs-rest ROC-AUC; pairs/s over both "
        "conditions (the metric's scoring only, after a warm-up pair).",
    ]
    if any(e.thresholds is None for e in comparison.evaluations):
        notes.append(f"{NA}: the metric is not on the SSIM scale, so the fixed 0.60 / 0.85 thresholds "
                     "do not apply; run with --calibrate VAL_PAIRS.csv (or --thresholds).")
    return "\n".join(lines + notes) + "\n"


def _histogram_png(evaluations: list[Evaluation], title: str) -> bytes:
    # A Figure on an explicit Agg canvas: no display needed and pyplot's state is untouched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(evaluations), 3.4), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(evaluations), squeeze=False)[0]
    for ax, e in zip(axes, evaluations):
        assert e.scored is not None
        scores, labels = e.scored.scores, e.scored.labels
        lo, hi = float(scores.min()), float(scores.max())
        if e.thresholds is not None:
            lo, hi = min(lo, e.thresholds.pair[0]), max(hi, e.thresholds.pair[1])
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, 41)
        for k, name in enumerate(CLASSES):
            part = scores[labels == k]
            if part.size:
                ax.hist(part, bins=edges, density=True, alpha=0.45, color=COLOURS[name],
                        label=f"{name} (n={part.size})")
        if e.thresholds is not None:
            for x in e.thresholds.pair:
                ax.axvline(x, color="#222", linestyle="--", linewidth=1)
        f1 = "" if e.macro_f1 is None else f", macro F1 {e.macro_f1:.3f}"
        ax.set_title(f"{e.condition}{f1}", fontsize=9)
        ax.set_xlabel(f"{e.metric} score")
        ax.set_ylabel("density")
        ax.legend(fontsize=7, frameon=False)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_histograms(comparison: Comparison, folder: str | Path) -> list[Path]:
    """One PNG per evaluated metric (``hist-METRIC.png``): the score distribution of each
    true class, one panel per condition, thresholds as dashed lines. Returns the paths."""
    folder = Path(folder)
    written = []
    for name in comparison.metrics():
        evaluations = [e for e in comparison.evaluations if e.metric == name and e.scored is not None]
        if not evaluations:
            continue
        path = folder / f"hist-{name}.png"
        atomic_write_bytes(path, _histogram_png(evaluations, f"{name}: scores by true class"))
        written.append(path)
    return written
