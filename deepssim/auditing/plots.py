"""The histogram of best-match scores, coloured by class, with the two thresholds, and a
holdout's null overlaid when there is one (PNG)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..classes import CLASSES, COLOURS
from ..storage import atomic_write_bytes

SCORE_LABEL = "best-match DeepSSIM score"
"""The x axis of a histogram of DeepSSIM scores."""
NULL_COLOUR = "#1f4e9c"
"""The outline of the holdout's null."""


def histogram_png(
    best_scores: np.ndarray, thresholds: tuple[float, float], title: str,
    labels: np.ndarray | None = None, xlabel: str = SCORE_LABEL, null_scores: np.ndarray | None = None,
) -> bytes:
    """The PNG bytes of ``write_histogram_png``'s figure (no title when ``title`` is empty)."""
    # A Figure on an explicit Agg canvas needs no display and no backend switch: the
    # process-wide backend (matplotlib.use) and pyplot's figure list stay as the caller set them.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lo, hi = float(thresholds[0]), float(thresholds[1])
    scores = np.asarray(best_scores, dtype=np.float64).ravel()
    if labels is not None:  # the classes as decided (e.g. by verification), not re-derived
        classes = np.asarray(labels).ravel()
        keep = np.isfinite(scores)
        scores, classes = scores[keep], classes[keep]
        parts = {k: scores[classes == k] for k in CLASSES}
    else:
        scores = scores[np.isfinite(scores)]
        parts = {
            "different": scores[scores <= lo],
            "similar": scores[(scores > lo) & (scores <= hi)],
            "duplicate": scores[scores > hi],
        }
    fig = Figure(figsize=(8, 3.4), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    null = None if null_scores is None else np.asarray(null_scores, dtype=np.float64).ravel()
    null = None if null is None else null[np.isfinite(null)]
    every = scores if null is None else np.concatenate([scores, null])
    left = min(0.0, float(every.min()) if every.size else 0.0, lo)
    right = max(1.0, float(every.max()) if every.size else 1.0, hi)
    edges = np.linspace(left, right, int(round((right - left) / 0.02)) + 1)
    # Stacked on shared edges: a bin that straddles a threshold shows both colours.
    counts, _, _ = ax.hist(
        [parts[k] for k in CLASSES], bins=edges, stacked=True,
        color=[COLOURS[k] for k in CLASSES],
        label=[f"{k} (n={len(parts[k])})" for k in CLASSES],
    )
    if null is not None and null.size:
        # Scaled to the synthetic set's size, so the two shapes compare where a copy would show.
        ax.hist(null, bins=edges, weights=np.full(null.size, max(scores.size, 1) / null.size),
                histtype="step", color=NULL_COLOUR, linewidth=1.5,
                label=f"holdout null (n={null.size}, scaled to {max(scores.size, 1)})")
    top = np.asarray(counts)[-1] if scores.size else np.zeros(1)
    nonzero = top[top > 0]
    log = nonzero.size > 0 and nonzero.max() > 50 * nonzero.min()
    if log:  # so that a handful of duplicates stays visible next to thousands of "different"
        ax.set_yscale("log")
    # The low label ends at its line and the high one starts at its own: close thresholds
    # put them side by side, never on top of each other.
    for x, name, dx, align in ((lo, "different | similar", -2, "right"), (hi, "similar | duplicate", 2, "left")):
        ax.axvline(x, color="#222", linestyle="--", linewidth=1)
        ax.annotate(f"{name}\n{x:.3g}", (x, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(dx, 3), textcoords="offset points", ha=align, va="bottom",
                    fontsize=8)
    if not scores.size:
        ax.text(0.5, 0.5, "no scores", transform=ax.transAxes, ha="center", color="#666")
    ax.set_xlim(left, right)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("synthetic images" + (" (log)" if log else ""))
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10, y=0.995)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_histogram_png(
    best_scores: np.ndarray,
    thresholds: tuple[float, float],
    path: str | Path,
    *,
    title: str = "Best-match scores of the synthetic images",
    labels: np.ndarray | None = None,
    xlabel: str = SCORE_LABEL,
    null_scores: np.ndarray | None = None,
) -> Path:
    """Write a PNG histogram of best-match scores with both thresholds marked.

    Bars are coloured by class (``labels`` when given, else score <= ``thresholds[0]``:
    different, > ``thresholds[1]``: duplicate, else similar) and the legend gives each class's
    count. Non-finite scores are left out. The y axis turns logarithmic when the bar heights
    span more than 50x.

    Args:
        best_scores: The best-match score of every synthetic image, 1-D.
        thresholds: (different_max, duplicate_min).
        path: Where to write; replaced atomically, parent folders created.
        title: Figure title.
        null_scores: A holdout's null (its best-match scores), drawn as an outline scaled to
            the number of synthetic images.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    atomic_write_bytes(path, histogram_png(best_scores, thresholds, title, labels, xlabel, null_scores))
    return path
