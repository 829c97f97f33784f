"""The report's holdout paragraph: the null, the thresholds fitted on it, the flagged copies
and the excess memorization rate, in plain sentences from the summary (``holdout.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .markup import escape, number, percent

FLAGGED_SHOWN = 50
"""Flagged holdout copies listed in the report; summary.json lists them all."""


def _value(v: Any) -> str:
    return "unbounded" if v is None else number(v, "{:.3f}")


def holdout_section(summary: Mapping[str, Any]) -> str:
    """The holdout paragraph (HTML), or nothing when the audit had no holdout."""
    held = summary.get("holdout") or {}
    cal = (summary.get("thresholds") or {}).get("holdout") or {}
    if not held or not cal:
        return ""
    lo_t, hi_t = cal.get("threshold_ci95") or [None, None]
    lo_f, hi_f = cal.get("false_alarm_ci95") or [None, None]
    low, high = (cal.get("thresholds") or [None, None])[:2]
    text = (
        f"<p>The outline is the null: the best-match scores of {number(cal.get('n'))} holdout images "
        f"(real images not in the training set, scored as the synthetic ones) from "
        f"{escape(', '.join(held.get('sources') or []))}. At a false-alarm rate of "
        f"{percent(cal.get('fpr'))} the duplicate threshold is <b>{number(high, '{:.3f}')}</b> "
        f"(the null's score of rank {number(cal.get('rank'))} from the top; 95% interval of the null's "
        f"{1 - float(cal.get('fpr') or 0):.3g} quantile {_value(lo_t)} – {_value(hi_t)}; its true false-alarm "
        f"rate lies in {percent(lo_f)} – {percent(hi_f)} with 95% confidence) and the similar threshold "
        f"{number(low, '{:.3f}')} (rate {percent(cal.get('similar_fpr'))}), on "
        f"{escape(cal.get('applies_to', 'the scores'))}. "
    )
    text += ("These thresholds decide the classes." if cal.get("used") else
             "Thresholds were given, and they decide the classes; these are stated for comparison.")
    ex, (ex_lo, ex_hi) = held.get("excess_memorization_rate"), held.get("excess_memorization_rate_ci95") or [None, None]
    text += (f" The holdout's own duplicate rate is {percent(held.get('holdout_rate'))}, so the excess "
             f"memorization rate of the synthetic set is <b>{percent(ex)}</b> (95% CI {percent(ex_lo)} – "
             f"{percent(ex_hi)}). Each synthetic image's p-value is in matches.csv.</p>")
    for warning in cal.get("warnings") or []:
        text += f"<p class=muted>Note: {escape(warning)}.</p>"
    flagged = cal.get("flagged_copies") or []
    if flagged:
        rows = "".join(
            f"<tr><td class=name>{escape(f.get('holdout', ''))}</td><td class=name>{escape(f.get('train', ''))}</td>"
            f"<td class=num>{number(f.get('score'), '{:.3f}')}</td><td>{escape(f.get('reason', ''))}</td></tr>"
            for f in flagged[:FLAGGED_SHOWN])
        more = f"<p class=muted>… and {len(flagged) - FLAGGED_SHOWN} more in summary.json.</p>" \
            if len(flagged) > FLAGGED_SHOWN else ""
        text += (f"<p>{len(flagged)} holdout image(s) are copies of training images and were left out of "
                 "the null:</p><table class=list><thead><tr><th>Holdout image</th><th>Training image</th>"
                 f"<th>Score</th><th>Why</th></tr></thead><tbody>{rows}</tbody></table>{more}")
    return "<h2>Holdout calibration</h2>" + text
