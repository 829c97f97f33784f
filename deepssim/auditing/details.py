"""The report's run details: how the audit was run, one row of plain sentences per step.

Each row is written from the summary's fields (``summary.py``) as text a reader can follow;
missing fields leave their row, or their part of it, out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..classes import REFERENCE_THRESHOLDS
from .markup import escape, joined, number

SKIPPED_SHOWN = 200
"""Unreadable files listed in the report; summary.json lists them all."""
TIMING_NAMES = {"cache_s": "cache", "scan_s": "scan", "embed_s": "embedding", "search_s": "search", "verify_s": "verification",
                "report_s": "report", "total_s": "total"}
RESCORE_RULES = {"cross_fit": "the cross-fitted flip score"}
RULES = {
    "cosine": "the cosine of the two embeddings",
    "best-flip": "the best cosine over the synthetic image's four flips",
    "cross-fit": "the mean cosine over the four flips of both images, at the cross-fitted relative flip",
}
"""A model's scoring rule (``deepssim.model.scoring``) in words."""


def thresholds_of(summary: Mapping[str, Any]) -> tuple[float, float, str]:
    """The summary's (low, high, source) thresholds; the reference ones where it has none."""
    t = summary.get("thresholds") or {}
    lo = t.get("different_max", REFERENCE_THRESHOLDS.different_max)
    hi = t.get("duplicate_min", REFERENCE_THRESHOLDS.duplicate_min)
    return float(lo), float(hi), str(t.get("source") or "default")


def details_table(summary: Mapping[str, Any]) -> str:
    """The run-details table (HTML) of an audit summary."""
    rows = [("Thresholds", _thresholds(summary))]
    for name, part in (("Verification", _verification), ("Model", _model), ("Search", _search)):
        text = part(summary)
        if text:
            rows.append((name, text))
    for key, name in (("train_sources", "Training sources"), ("synthetic_sources", "Synthetic sources")):
        if key in summary:
            rows.append((name, joined(summary[key])))
    for name, part in (("Embedding cache", _cache), ("Timings", _timings), ("Versions", _versions),
                       ("Skipped", _skipped)):
        text = part(summary)
        if text:
            rows.append((name, text))
    return "<table class=kv>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _thresholds(summary: Mapping[str, Any]) -> str:
    lo, hi, source = thresholds_of(summary)
    file = (summary.get("thresholds") or {}).get("file")
    origin = escape(source) + (f" <code>{escape(file)}</code>" if file else "")
    return (f"<b>{lo:.3g}</b> / <b>{hi:.3g}</b> <span class=muted>(from {origin})</span>: "
            f"score ≤ {lo:.3g} different, &gt; {hi:.3g} duplicate, between them similar")


def _verification(summary: Mapping[str, Any]) -> str:
    verify = summary.get("verify") or {}
    if not verify:
        return ""
    lo, hi, _ = thresholds_of(summary)
    vt = verify.get("thresholds") or {}
    text = (f"the best {_count(verify.get('top'), 'candidate')} of each of "
            f"{_count(verify.get('synthetic_images'), 'suspicious image')} (score above {lo:.3g}) "
            f"re-scored by the reference SSIM ({_count(verify.get('pairs'), 'pair')}")
    if verify.get("extended"):
        text += (f"; up to {number(verify.get('max'))} candidates where all verified as duplicates: "
                 f"{number(verify.get('extended'))} image(s)")
    text += ")" + _undone(verify.get("grid") or {})
    text += (f"; the verified SSIM decides: ≤ {float(vt.get('different_max', lo)):.3g} different, "
             f"&gt; {float(vt.get('duplicate_min', hi)):.3g} duplicate")
    if vt.get("source"):
        text += f" <span class=muted>(from {escape(vt['source'])})</span>"
    return text


def _count(n: Any, noun: str) -> str:
    """``n`` and the noun, plural unless ``n`` is 1."""
    return f"{number(n)} {noun}{'' if n == 1 else 's'}"


def _undone(grid: Mapping[str, Any]) -> str:
    """What verification undid, from the summary's grid."""
    if not grid:
        return " after undoing flips, rotations, shifts and contrast changes"
    gamma = float(grid.get("max_gamma", 1.0))
    return (f" after undoing flips, rotations up to ±{number(grid.get('max_angle'), '{:g}')}°, "
            f"shifts up to ±{number(grid.get('max_shift'))} px and contrast changes "
            f"(gamma {1 / gamma:.3g} to {gamma:.3g}), both images at "
            f"{number(grid.get('size'))} x {number(grid.get('size'))} px")


def _model(summary: Mapping[str, Any]) -> str:
    model = summary.get("model") or {}
    if not model:
        return ""
    sha = str(model.get("sha256") or "")
    parts = [f"<code>{escape(model.get('path', '—'))}</code>"
             + (f' · sha256 <code title="{escape(sha)}">{escape(sha[:12])}</code>' if sha else "")
             + (f" · preset {escape(model['preset'])}" if model.get("preset") else "")]
    if model.get("scoring") in RULES:
        parts.append("scored by " + RULES[model["scoring"]])
    if model.get("device"):
        parts.append("run on " + _device(model["device"]))
    return " · ".join(parts)


def _device(device: Any) -> str:
    text = str(device)
    if text == "cpu":
        return "the CPU"
    return f"the GPU ({escape(text)})" if text.startswith("cuda") else escape(text)


def _search(summary: Mapping[str, Any]) -> str:
    search = summary.get("search") or {}
    if not search:
        return ""
    backend, index = search.get("backend"), search.get("index") or "flat"
    k = number(search.get("top_k"))
    if backend == "faiss":
        kind = "exact" if index == "flat" else "approximate"
        text = f"{kind} search with a FAISS {escape(index)} index"
    else:
        text = "exact search"
    if search.get("device"):
        text += " on " + _device(search["device"])
    text += f", top {k}"
    if search.get("recall") is not None:
        text += f" (measured recall@{k} {number(search['recall'], '{:.3f}')})"
    rescored = search.get("rescored") or {}
    if rescored:
        rule = RESCORE_RULES.get(rescored.get("rule"), f"the {escape(rescored.get('rule'))} score")
        text += (f" · re-ranked by {rule}: the first match is certainly the best for "
                 f"{number(rescored.get('top1_certain'))} of {number(rescored.get('synthetic_images'))} images")
    if search.get("missing_slots"):
        text += f" · {_count(search['missing_slots'], 'candidate slot')} left empty by the approximate index"
    return text


def _cache(summary: Mapping[str, Any]) -> str:
    cache = summary.get("cache") or {}
    if not cache:
        return ""
    text = (f"{_count(cache.get('hits'), 'image')} found in the cache, {number(cache.get('misses'))} embedded"
            f" · <code>{escape(cache.get('folder', ''))}</code>")
    if cache.get("corrupt_shards"):
        text += f" · {_count(cache['corrupt_shards'], 'corrupt shard')} left out"
    if cache.get("untrusted_shards"):
        text += f" · {_count(cache['untrusted_shards'], 'untrusted shard')} (another key, edited, or an older format) left out"
    return text


def _timings(summary: Mapping[str, Any]) -> str:
    timings = summary.get("timings") or {}
    return " · ".join(f"{escape(TIMING_NAMES.get(k, str(k).removesuffix('_s')))} {number(v, '{:.1f}')} s"
                      for k, v in timings.items())


def _versions(summary: Mapping[str, Any]) -> str:
    versions = summary.get("versions") or {}
    return " · ".join(f"{escape(k)} {escape(v)}" for k, v in versions.items())


def _skipped(summary: Mapping[str, Any]) -> str:
    skipped = list(summary.get("skipped_unreadable") or [])
    if not skipped:
        return ""
    items = "".join(f"<li>{escape(s)}</li>" for s in skipped[:SKIPPED_SHOWN])
    more = f"<li>… and {len(skipped) - SKIPPED_SHOWN} more</li>" if len(skipped) > SKIPPED_SHOWN else ""
    return f"<details><summary>{len(skipped)} unreadable file(s)</summary><ul>{items}{more}</ul></details>"
