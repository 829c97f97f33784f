"""The audit report: one self-contained HTML file and a histogram PNG.

The HTML holds everything inline (CSS, a few lines of JS, images as ``data:`` URIs) so it can
be mailed or archived as one file and opened offline. It shows the headline numbers of the
summary, the histogram of best-match scores with the two thresholds, and a gallery of the
suspicious pairs: synthetic | training | absolute difference after the best rigid alignment.

Every string that comes from the summary or from image ids is passed through ``html.escape``
(quotes included), so a file named ``<script>alert(1)</script>.png`` shows as text.
"""

from __future__ import annotations

import base64
import html
import io
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..classes import CLASSES, COLOURS, REFERENCE_THRESHOLDS
from ..storage import atomic_write_bytes
from ..refssim import apply_alignment, register, zscore

THUMB = 144
"""Longest side of a gallery thumbnail, in pixels."""
ALIGN_MAX_SIDE = 192
"""Pairs are aligned at the training image's shape, shrunk to this longest side if larger:
the grid search costs ~0.3 s a pair at this size but ~2.5 s at 512 x 512."""
DIFF_VMAX = 2.0
"""Top of the fixed colour scale of |z(train) - z(aligned synthetic)|, in standard deviations;
one scale for every row so that differences compare between rows."""
PAGE_SIZE = 25
DIFF_CMAP = "magma"


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no truth value, compare by identity
class GalleryPair:
    """One suspicious pair of the gallery.

    Attributes:
        synthetic: Id of the synthetic image (e.g. "gen/sample-17.png", "vol.nii.gz#axis2:40").
        train: Id of its matched training image.
        score: DeepSSIM score of the pair.
        label: "duplicate", "similar" or "different".
        synthetic_image: The synthetic image as read, 2D, any size and intensity range.
        train_image: The training image as read, 2D; may differ in size from the synthetic one.
        rank: Rank of ``train`` among the synthetic image's matches (1 = best match).
        verified_ssim: The pair's verified reference SSIM when it was verified, else None.
    """

    synthetic: str
    train: str
    score: float
    label: str
    synthetic_image: np.ndarray = field(repr=False)
    train_image: np.ndarray = field(repr=False)
    rank: int = 1
    verified_ssim: float | None = None


# -- histogram -------------------------------------------------------------------------------


def _histogram_png(
    best_scores: np.ndarray, thresholds: tuple[float, float], title: str,
    labels: np.ndarray | None = None, xlabel: str = "best-match DeepSSIM score",
) -> bytes:
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
    left = min(0.0, float(scores.min()) if scores.size else 0.0, lo)
    right = max(1.0, float(scores.max()) if scores.size else 1.0, hi)
    edges = np.linspace(left, right, int(round((right - left) / 0.02)) + 1)
    # Stacked on shared edges: a bin that straddles a threshold shows both colours.
    counts, _, _ = ax.hist(
        [parts[k] for k in CLASSES], bins=edges, stacked=True,
        color=[COLOURS[k] for k in CLASSES],
        label=[f"{k} (n={len(parts[k])})" for k in CLASSES],
    )
    top = np.asarray(counts)[-1] if scores.size else np.zeros(1)
    nonzero = top[top > 0]
    log = nonzero.size > 0 and nonzero.max() > 50 * nonzero.min()
    if log:  # so that a handful of duplicates stays visible next to thousands of "different"
        ax.set_yscale("log")
    for x, name in ((lo, "different | similar"), (hi, "similar | duplicate")):
        ax.axvline(x, color="#222", linestyle="--", linewidth=1)
        ax.annotate(f"{name}\n{x:.3g}", (x, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(0, 3), textcoords="offset points", ha="center", va="bottom",
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
    xlabel: str = "best-match DeepSSIM score",
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

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    atomic_write_bytes(path, _histogram_png(best_scores, thresholds, title, labels, xlabel))
    return path


# -- images ----------------------------------------------------------------------------------


def _as_2d(image: np.ndarray) -> np.ndarray:
    """A finite float64 2D image: channels averaged, NaN/inf set to the finite median."""
    arr = np.squeeze(np.asarray(image, dtype=np.float64))
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3].mean(axis=-1)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"expected a 2D image, got shape {np.shape(image)}")
    bad = ~np.isfinite(arr)
    if bad.any():
        arr = np.where(bad, np.median(arr[~bad]) if (~bad).any() else 0.0, arr)
    return arr


def _resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if image.shape == shape:
        return image
    # PIL's float mode gives exactly the requested shape (ndimage.zoom may round off by one).
    out = Image.fromarray(image.astype(np.float32), mode="F").resize(
        (shape[1], shape[0]), Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.float64)


def _window(image: np.ndarray) -> np.ndarray:
    """uint8 image with intensities windowed to the 1st-99th percentile."""
    lo, hi = np.percentile(image, (1, 99))
    if hi <= lo:
        lo, hi = float(image.min()), float(image.max())
    if hi <= lo:
        return np.full(image.shape, 128, np.uint8)
    return (np.clip((image - lo) / (hi - lo), 0, 1) * 255 + 0.5).astype(np.uint8)


def _png_uri(pixels: np.ndarray) -> str:
    """``data:`` URI of a uint8 image (2D grey or HxWx3), longest side scaled to THUMB."""
    img = Image.fromarray(pixels)
    scale = THUMB / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    # Downscale smoothly; upscale with nearest so small images show their true pixels.
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST
    buf = io.BytesIO()
    img.resize(size, resample).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _colourmap(values: np.ndarray) -> np.ndarray:
    """uint8 RGB of ``values`` on the fixed 0..DIFF_VMAX scale."""
    import matplotlib

    lut = (matplotlib.colormaps[DIFF_CMAP](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    return lut[(np.clip(values / DIFF_VMAX, 0, 1) * 255).astype(np.intp)]


def _describe(alignment: Any, scale: float) -> str:
    """HTML caption of an alignment (only numbers and fixed words: nothing to escape)."""
    flip = {(False, False): "none", (True, False): "up-down", (False, True): "left-right",
            (True, True): "both"}[tuple(alignment.flip)]
    # Shifts are found at the (possibly shrunk) alignment size; report training-image pixels.
    dy, dx = (round(s * scale) for s in alignment.shift)
    return (f"flip {flip} · rotation {alignment.angle:+g}°<br>shift ({dy:+d}, {dx:+d}) px"
            f"<br>registered SSIM <b>{alignment.score:.3f}</b>")


def _pair_cells(pair: GalleryPair) -> tuple[str, str, str, str]:
    """(synthetic URI, training URI, difference URI, alignment caption) of one pair."""
    syn = _as_2d(pair.synthetic_image)
    train = _as_2d(pair.train_image)
    shrink = min(1.0, ALIGN_MAX_SIDE / max(train.shape))
    shape = (max(1, round(train.shape[0] * shrink)), max(1, round(train.shape[1] * shrink)))
    a = _resize(train, shape)
    b = _resize(syn, shape)
    found = register(a, b)
    aligned = apply_alignment(b, found.flip, found.angle, found.shift)
    diff = _colourmap(np.abs(zscore(a) - zscore(aligned)))
    # A faint grey training image under the colours: an exact copy still shows its outline
    # instead of a black square that looks like a missing image.
    diff = np.maximum(diff, (_window(a) * 0.22).astype(np.uint8)[..., None])
    return (_png_uri(_window(syn)), _png_uri(_window(train)), _png_uri(diff),
            _describe(found, train.shape[0] / shape[0]))


# -- HTML ------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, fmt: str = "{:,}") -> str:
    """Formatted number, escaped text for anything else, an em dash for None."""
    if value is None:
        return "—"
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return _e(fmt.format(value))
    return _e(value)


def _pct(value: Any) -> str:
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return _num(float(value) * 100, "{:.1f}%")
    return _num(value)


def _rate(summary: Mapping[str, Any]) -> str:
    text = _pct(summary.get("memorization_rate"))
    ci = summary.get("memorization_rate_ci95")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        text += f'<small>95% CI {_pct(ci[0])} – {_pct(ci[1])}</small>'
    return text


def _thresholds(summary: Mapping[str, Any]) -> tuple[float, float, str]:
    t = summary.get("thresholds") or {}
    lo = t.get("different_max", REFERENCE_THRESHOLDS.different_max)
    hi = t.get("duplicate_min", REFERENCE_THRESHOLDS.duplicate_min)
    return float(lo), float(hi), str(t.get("source") or "default")


def _join(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_e(v) for v in value) or "—"
    return _num(value)


def _details(summary: Mapping[str, Any]) -> str:
    lo, hi, source = _thresholds(summary)
    rows = [("Thresholds", f"<b>{lo:.3g}</b> / <b>{hi:.3g}</b> <span class=muted>(from "
                           f"{_e(source)})</span>: score ≤ {lo:.3g} different, &gt; {hi:.3g} "
                           "duplicate, between them similar")]
    verify = summary.get("verify") or {}
    if verify:
        vt = verify.get("thresholds") or {}
        rows.append(("Verification", f"top {_num(verify.get('top'))} candidates of "
                     f"{_num(verify.get('synthetic_images'))} suspicious images "
                     f"({_num(verify.get('pairs'))} pairs"
                     + (f"; up to {_num(verify.get('max'))} candidates where all verified as duplicates: "
                        f"{_num(verify.get('extended'))} image(s)" if verify.get("extended") else "")
                     + ") re-scored by the reference SSIM after "
                     "re-applying flips / rotations and undoing contrast; the verified SSIM decides: "
                     f"≤ {float(vt.get('different_max', lo)):.3g} different, "
                     f"&gt; {float(vt.get('duplicate_min', hi)):.3g} duplicate"))
    model = summary.get("model") or {}
    if model:
        sha = str(model.get("sha256") or "")
        rows.append(("Model", f"<code>{_e(model.get('path', '—'))}</code>"
                     + (f' · sha256 <code title="{_e(sha)}">{_e(sha[:12])}</code>' if sha else "")
                     + (f" · preset {_e(model['preset'])}" if model.get("preset") else "")))
    search = summary.get("search") or {}
    if search:
        rows.append(("Search", " · ".join(f"{_e(k)} {_num(v)}" for k, v in search.items())))
    for key, name in (("train_sources", "Training sources"),
                      ("synthetic_sources", "Synthetic sources")):
        if key in summary:
            rows.append((name, _join(summary[key])))
    cache = summary.get("cache") or {}
    if cache:
        rows.append(("Embedding cache", f"{_num(cache.get('hits'))} hits · "
                     f"{_num(cache.get('misses'))} misses · "
                     f"<code>{_e(cache.get('folder', ''))}</code>"))
    timings = summary.get("timings") or {}
    if timings:
        rows.append(("Timings", " · ".join(
            f"{_e(str(k).removesuffix('_s'))} {_num(v, '{:.1f}')} s" for k, v in timings.items())))
    versions = summary.get("versions") or {}
    if versions:
        rows.append(("Versions", " · ".join(f"{_e(k)} {_e(v)}" for k, v in versions.items())))
    skipped = list(summary.get("skipped_unreadable") or [])
    if skipped:
        items = "".join(f"<li>{_e(s)}</li>" for s in skipped[:200])
        more = f"<li>… and {len(skipped) - 200} more</li>" if len(skipped) > 200 else ""
        rows.append(("Skipped", f"<details><summary>{len(skipped)} unreadable file(s)</summary>"
                                f"<ul>{items}{more}</ul></details>"))
    return "<table class=kv>" + "".join(
        f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _most_copied(summary: Mapping[str, Any]) -> str:
    items = summary.get("most_copied") or []
    if not items:
        return "<p class=muted>No training image was copied.</p>"
    body = "".join(
        f"<tr><td class=name>{_e(it.get('train', ''))}</td><td class=num>{_num(it.get('n_copies'))}"
        f"</td><td class=num>{_num(it.get('max_score'), '{:.3f}')}</td></tr>" for it in items)
    return ("<table class=list><thead><tr><th>Training image</th><th>Copies</th>"
            f"<th>Max score</th></tr></thead><tbody>{body}</tbody></table>")


def _gallery(gallery: Sequence[GalleryPair], progress: bool) -> str:
    if not gallery:
        return "<p class=empty>No suspicious pairs to show.</p>"
    from tqdm.auto import tqdm

    rows = []
    for i, pair in enumerate(tqdm(gallery, desc="report gallery", unit="pair",
                                  disable=not progress, file=sys.stderr)):
        try:
            syn, train, diff, caption = _pair_cells(pair)
            images = (f'<td><img src="{syn}" alt="synthetic"></td>'
                      f'<td><img src="{train}" alt="training"></td>'
                      f'<td><img src="{diff}" alt="difference"><div class=cap>{caption}</div></td>')
        except ValueError as exc:  # one odd image must not cost the whole report
            images = f'<td colspan=3 class=muted>cannot show this pair: {_e(exc)}</td>'
        label = str(pair.label)
        colour = f' style="background:{COLOURS[label]}"' if label in COLOURS else ""
        order = CLASSES.index(label) if label in CLASSES else -1
        verified = ("" if pair.verified_ssim is None else
                    f"<div class=cap>verified SSIM {float(pair.verified_ssim):.3f}</div>")
        rows.append(
            f'<tr data-i="{i}" data-score="{float(pair.score):.6f}" data-class="{order}" '
            f'data-synthetic="{_e(pair.synthetic)}" data-train="{_e(pair.train)}">{images}'
            f'<td class=num><b>{float(pair.score):.3f}</b>{verified}</td>'
            f'<td><span class=badge{colour}>{_e(label)}</span></td>'
            f'<td class=num>{_num(pair.rank)}</td>'
            f'<td class=name>{_e(pair.synthetic)}</td><td class=name>{_e(pair.train)}</td></tr>')
    bar = _png_uri(_colourmap(np.tile(np.linspace(0, DIFF_VMAX, 256), (12, 1))))
    return (
        f'<p class=muted>Difference: |z(train) − z(aligned synthetic)| on one scale for all rows '
        f'<span class=scale>0 <img src="{bar}" alt="colour scale"> ≥ {DIFF_VMAX:g} σ</span> '
        f'over the training image in faint grey. Click a column header to sort.</p>'
        f'{PAGER}'
        '<table id=gallery class=list><thead><tr><th>Synthetic</th><th>Training</th>'
        '<th>Difference after<br>alignment</th><th data-sort=score data-type=num>Score</th>'
        '<th data-sort=class data-type=num>Class</th><th>Rank</th>'
        '<th data-sort=synthetic>Synthetic id</th><th data-sort=train>Training id</th></tr>'
        f'</thead><tbody>{"".join(rows)}</tbody></table>{PAGER}')


PAGER = ('<nav class=pager hidden><button data-step=-1>‹ prev</button> <span></span> '
         '<button data-step=1>next ›</button></nav>')

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2430;
 margin:0;background:#f5f6f8}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px}
.muted,.cap{color:#5f6b7a}.cap{font-size:11px;white-space:nowrap;margin-top:2px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(112px,1fr));gap:10px}
.card{background:#fff;border-radius:8px;padding:10px 14px;box-shadow:0 1px 2px #0002;
 border-top:4px solid #d0d5dc}
.card b{display:block;font-size:22px}
.card small{display:block;color:#5f6b7a;font-size:12px;font-weight:400}
.card span{font-size:11px;color:#5f6b7a;text-transform:uppercase;letter-spacing:.04em}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0002;border-radius:8px}
th,td{padding:6px 10px;text-align:left;vertical-align:top}
.list th{background:#eef0f3;font-weight:600;white-space:nowrap}
.list tbody tr:nth-child(even){background:#fafbfc}
.kv th{color:#5f6b7a;font-weight:500;white-space:nowrap}.kv td{word-break:break-word}
.num{text-align:right;font-variant-numeric:tabular-nums}
.name{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;
 overflow-wrap:anywhere;max-width:560px}
#gallery{width:100%}#gallery td{vertical-align:middle}
#gallery .name{min-width:12em}
#gallery img{width:144px;height:144px;object-fit:contain;background:#000;display:block}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;
 font-weight:600;background:#555}
th[data-sort]{cursor:pointer;user-select:none}th[data-sort]:after{content:" ↕";color:#9aa3ae}
th[aria-sort=ascending]:after{content:" ▲";color:#1d2430}
th[aria-sort=descending]:after{content:" ▼";color:#1d2430}
.scale img{height:10px;width:120px;vertical-align:middle}
.pager{margin:8px 0}button{font:inherit;padding:2px 10px;border:1px solid #c5ccd5;
 border-radius:6px;background:#fff;cursor:pointer}button:disabled{opacity:.4;cursor:default}
.hist{max-width:100%;background:#fff;border-radius:8px;box-shadow:0 1px 2px #0002}
.empty{background:#fff;padding:16px;border-radius:8px}code{font-size:12px}
"""

# Sort on click (score/class numeric, ids as text; ties keep the original order) and show
# PAGE rows at a time. Without JS, the pager stays hidden and every row shows.
JS = """
(function(){
var t=document.getElementById("gallery");if(!t)return;
var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows),page=0,PAGE=%d;
var navs=document.querySelectorAll("nav.pager");
function show(){var n=Math.max(1,Math.ceil(rows.length/PAGE));page=Math.max(0,Math.min(page,n-1));
 rows.forEach(function(r,i){r.hidden=Math.floor(i/PAGE)!==page;});
 navs.forEach(function(nav){nav.hidden=n===1&&nav!==navs[0];
  nav.querySelector("span").textContent="page "+(page+1)+" of "+n+" ("+rows.length+" pairs)";
  nav.querySelectorAll("button").forEach(function(b){var to=page+Number(b.dataset.step);
   b.disabled=to<0||to>=n;b.onclick=function(){page=to;show();
    if(nav!==navs[0])navs[0].scrollIntoView();};});});}
t.querySelectorAll("th[data-sort]").forEach(function(th){th.onclick=function(){
 var key=th.dataset.sort,num=th.dataset.type==="num",
  dir=th.getAttribute("aria-sort")==="descending"?1:-1;
 if(!num&&!th.hasAttribute("aria-sort"))dir=1;
 t.querySelectorAll("th[data-sort]").forEach(function(o){o.removeAttribute("aria-sort");});
 th.setAttribute("aria-sort",dir>0?"ascending":"descending");
 rows.sort(function(a,b){var x=a.dataset[key],y=b.dataset[key],
  c=num?parseFloat(x)-parseFloat(y):x.localeCompare(y);
  return c*dir||a.dataset.i-b.dataset.i;});
 rows.forEach(function(r){body.appendChild(r);});page=0;show();};});
show();
})();
""" % PAGE_SIZE


def render_report(
    summary: Mapping[str, Any],
    best_scores: np.ndarray,
    gallery: Sequence[GalleryPair],
    *,
    labels: np.ndarray | None = None,
    thresholds: tuple[float, float] | None = None,
    xlabel: str = "best-match DeepSSIM score",
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
        progress: Show a tqdm bar on stderr over the gallery.

    Returns:
        The HTML text.
    """
    lo, hi = thresholds if thresholds is not None else _thresholds(summary)[:2]
    hist = base64.b64encode(
        _histogram_png(best_scores, (lo, hi), "", labels, xlabel)  # the section heading is its title
    ).decode("ascii")
    counts = summary.get("counts") or {}
    cards = [
        ("Synthetic images", _num(summary.get("n_synthetic")), "#3b6fb6"),
        ("Training images", _num(summary.get("n_train")), "#3b6fb6"),
        *((k, _num(counts.get(k)), COLOURS[k]) for k in reversed(CLASSES)),
        ("Memorization rate", _rate(summary), COLOURS["duplicate"]),
        ("Train images copied", _num(summary.get("n_train_copied")), "#d0d5dc"),
        ("Byte-identical copies", _num(summary.get("exact_copies")), "#d0d5dc"),
    ]
    card_html = "".join(f'<div class=card style="border-top-color:{c}"><span>{_e(k)}</span>'
                        f"<b>{v}</b></div>" for k, v, c in cards)
    meta = " · ".join(_e(v) for v in (
        f"deepssim {summary['deepssim_version']}" if summary.get("deepssim_version") else None,
        summary.get("created")) if v)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>deepssim audit report</title><style>{CSS}</style></head>
<body><main>
<h1>deepssim audit report</h1><p class=muted>{meta}</p>
<div class=cards>{card_html}</div>
<h2>Run</h2>{_details(summary)}
<h2>Most-copied training images</h2>{_most_copied(summary)}
<h2>Best-match scores</h2>
<img class=hist alt="histogram of best-match scores" src="data:image/png;base64,{hist}">
<h2>Suspicious pairs ({len(gallery)})</h2>{_gallery(gallery, progress)}
</main><script>{JS}</script></body></html>
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
    ``labels``, ``thresholds``, ``xlabel``) and write it atomically as UTF-8 to ``path``.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    text = render_report(summary, best_scores, gallery, progress=progress, **histogram)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path
