"""HTML text for the report: escaping, numbers and lists as a reader sees them.

Every string that comes from a summary or from image ids goes through ``escape`` (quotes
included), so a file named ``<script>alert(1)</script>.png`` shows as text.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

DASH = "—"
"""Shown for a missing value."""


def escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def number(value: Any, fmt: str = "{:,}") -> str:
    """Formatted number, escaped text for anything else, a dash for None."""
    if value is None:
        return DASH
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return escape(fmt.format(value))
    return escape(value)


def percent(value: Any) -> str:
    """A fraction as a percentage with one decimal."""
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return number(float(value) * 100, "{:.1f}%")
    return number(value)


def joined(value: Any) -> str:
    """A list as comma-separated escaped items (a dash when empty)."""
    if isinstance(value, (list, tuple)):
        return ", ".join(escape(v) for v in value) or DASH
    return number(value)
