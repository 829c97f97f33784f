"""The audit report: one self-contained HTML file.

The HTML holds everything inline (CSS, a few lines of JS, images as ``data:`` URIs) so it can
be mailed or archived as one file and opened offline. It shows the headline numbers of the
summary, how the audit was run (``details.py``), the histogram of best-match scores with the
two thresholds (``plots.py``), and a gallery of the suspicious pairs: synthetic | training |
absolute difference after the best rigid alignment (``gallery.py``). The page's style and
script are the package files ``assets/report.css`` and ``assets/report.js``.

Every string that comes from the summary or from image ids is passed through
``markup.escape`` (quotes included), so a file named ``<script>alert(1)</script>.png`` shows
as text.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..classes import CLASSES, COLOURS
from ..storage import atomic_write_bytes
from .details import details_table, thresholds_of
from .holdout_report import holdout_section
from .gallery import DIFF_VMAX, GalleryPair, pair_cells, scale_bar_uri
from .markup import escape, number, percent
from .patients import leaked_card, patients_section
from .plots import SCORE_LABEL, histogram_png

PAGE_SIZE = 25
"""Gallery rows shown at a time (the page's script pages through the rest)."""
PAGER = ('<nav class=pager hidden><button data-step=-1>‹ prev</button> <span></span> '
         '<button data-step=1>next ›</button></nav>')


@cache
def _asset(name: str) -> str:
    """The text of a package file of ``assets/``."""
    return resources.files(__package__).joinpath("assets", name).read_text(encoding="utf-8")


def _rate(summary: Mapping[str, Any]) -> str:
    text = percent(summary.get("memorization_rate"))
    ci = summary.get("memorization_rate_ci95")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        text += f'<small>95% CI {percent(ci[0])} – {percent(ci[1])}</small>'
    return text


def _most_copied(summary: Mapping[str, Any]) -> str:
    items = summary.get("most_copied") or []
    if not items:
        return "<p class=muted>No training image was copied.</p>"
    body = "".join(
        f"<tr><td class=name>{escape(it.get('train', ''))}</td><td class=num>{number(it.get('n_copies'))}"
        f"</td><td class=num>{number(it.get('max_score'), '{:.3f}')}</td></tr>" for it in items)
    return ("<table class=list><thead><tr><th>Training image</th><th>Copies</th>"
            f"<th>Max score</th></tr></thead><tbody>{body}</tbody></table>")


def _gallery(gallery: Sequence[GalleryPair], progress: bool) -> str:
    if not gallery:
        return "<p class=empty>No suspicious pairs to show.</p>"
    rows = []
    for i, pair in enumerate(tqdm(gallery, desc="report gallery", unit="pair",
                                  disable=not progress, file=sys.stderr)):
        try:
            syn, train, diff, caption = pair_cells(pair)
            images = (f'<td><img src="{syn}" alt="synthetic"></td>'
                      f'<td><img src="{train}" alt="training"></td>'
                      f'<td><img src="{diff}" alt="difference"><div class=cap>{caption}</div></td>')
        except ValueError as exc:  # one odd image must not cost the whole report
            images = f'<td colspan=3 class=muted>cannot show this pair: {escape(exc)}</td>'
        label = str(pair.label)
        colour = f' style="background:{COLOURS[label]}"' if label in COLOURS else ""
        order = CLASSES.index(label) if label in CLASSES else -1
        verified = ("" if pair.verified_ssim is None else
                    f"<div class=cap>verified SSIM {float(pair.verified_ssim):.3f}</div>")
        rows.append(
            f'<tr data-i="{i}" data-score="{float(pair.score):.6f}" data-class="{order}" '
            f'data-synthetic="{escape(pair.synthetic)}" data-train="{escape(pair.train)}">{images}'
            f'<td class=num><b>{float(pair.score):.3f}</b>{verified}</td>'
            f'<td><span class=badge{colour}>{escape(label)}</span></td>'
            f'<td class=num>{number(pair.rank)}</td>'
            f'<td class=name>{escape(pair.synthetic)}</td><td class=name>{escape(pair.train)}</td></tr>')
    return (
        f'<p class=muted>Difference: |z(train) − z(aligned synthetic)| on one scale for all rows '
        f'<span class=scale>0 <img src="{scale_bar_uri()}" alt="colour scale"> ≥ {DIFF_VMAX:g} σ</span> '
        f'over the training image in faint grey. Click a column header to sort.</p>'
        f'{PAGER}'
        f'<table id=gallery class=list data-page={PAGE_SIZE}><thead><tr><th>Synthetic</th><th>Training</th>'
        '<th>Difference after<br>alignment</th><th data-sort=score data-type=num>Score</th>'
        '<th data-sort=class data-type=num>Class</th><th>Rank</th>'
        '<th data-sort=synthetic>Synthetic id</th><th data-sort=train>Training id</th></tr>'
        f'</thead><tbody>{"".join(rows)}</tbody></table>{PAGER}')


def render_report(
    summary: Mapping[str, Any],
    best_scores: np.ndarray,
    gallery: Sequence[GalleryPair],
    *,
    labels: np.ndarray | None = None,
    thresholds: tuple[float, float] | None = None,
    xlabel: str = SCORE_LABEL,
    null_scores: np.ndarray | None = None,
    progress: bool = False,
) -> str:
    """The audit report as one self-contained HTML document.

    No external resources: styles and script are inline and images are ``data:`` PNG URIs.
    Every string from ``summary`` and the pair ids is HTML-escaped. Missing optional summary
    keys are left out (or shown as "—"). The gallery aligns each pair (``register`` of the
    synthetic image onto the training image, both at the training image's shape, shrunk to
    ``ALIGN_MAX_SIDE``), which costs ~0.3 s a pair; a pair whose images cannot be shown gets a
    message instead of failing the report.

    Args:
        summary: The audit summary (keys as written by ``deepssim audit``).
        best_scores: The best-match score of every synthetic image, 1-D.
        gallery: The suspicious pairs, shown in this order (sortable in the browser).
        labels, thresholds, xlabel: The histogram's classes (default: from the scores and
            the summary's thresholds), threshold lines and axis label, e.g. for verified SSIMs.
        null_scores: A holdout's null, overlaid on the histogram; the summary's ``holdout``
            entries are then stated in a paragraph below it.
        progress: Show a tqdm bar on stderr over the gallery.

    Returns:
        The HTML text.
    """
    lo, hi = thresholds if thresholds is not None else thresholds_of(summary)[:2]
    hist = base64.b64encode(
        histogram_png(best_scores, (lo, hi), "", labels, xlabel, null_scores)  # the section heading is its title
    ).decode("ascii")
    counts = summary.get("counts") or {}
    cards = [
        ("Synthetic images", number(summary.get("n_synthetic")), "#3b6fb6"),
        ("Training images", number(summary.get("n_train")), "#3b6fb6"),
        *((k, number(counts.get(k)), COLOURS[k]) for k in reversed(CLASSES)),
        ("Memorization rate", _rate(summary), COLOURS["duplicate"]),
        ("Train images copied", number(summary.get("n_train_copied")), "#d0d5dc"),
        *((("Patients leaked", leaked_card(summary), COLOURS["duplicate"]),) if summary.get("patients") else ()),
        ("Byte-identical copies", number(summary.get("exact_copies")), "#d0d5dc"),
    ]
    card_html = "".join(f'<div class=card style="border-top-color:{c}"><span>{escape(k)}</span>'
                        f"<b>{v}</b></div>" for k, v, c in cards)
    meta = " · ".join(escape(v) for v in (
        f"deepssim {summary['deepssim_version']}" if summary.get("deepssim_version") else None,
        summary.get("created")) if v)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>deepssim audit report</title><style>{_asset('report.css')}</style></head>
<body><main>
<h1>deepssim audit report</h1><p class=muted>{meta}</p>
<div class=cards>{card_html}</div>
<h2>Run</h2>{details_table(summary)}
<h2>Most-copied training images</h2>{_most_copied(summary)}
{'<h2>Leaked patients</h2>' + patients_section(summary) if summary.get("patients") else ""}
<h2>Best-match scores</h2>
<img class=hist alt="histogram of best-match scores" src="data:image/png;base64,{hist}">
{holdout_section(summary)}
<h2>Suspicious pairs ({len(gallery)})</h2>{_gallery(gallery, progress)}
</main><script>{_asset('report.js')}</script></body></html>
"""


def write_report(
    path: str | Path,
    summary: Mapping[str, Any],
    best_scores: np.ndarray,
    gallery: Sequence[GalleryPair],
    *,
    progress: bool = False,
    **histogram: Any,
) -> Path:
    """Render the report (see ``render_report``, which takes the ``histogram`` keywords
    ``labels``, ``thresholds``, ``xlabel``, ``null_scores``) and write it atomically as UTF-8 to ``path``.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    text = render_report(summary, best_scores, gallery, progress=progress, **histogram)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path
