"""The audit: every synthetic image against every training image, a decision, a report.

``deepssim.audit(train, synthetic, model=...)`` is the entry point (``api.py``), its options
the small objects of ``options.py``. The steps live one per module: the model an audit trains
when it is given none (``trained.py``), the image sets and their embedding through the cache
(``images.py``, ``cache.py``), the top-k search (``nearest.py``,
``candidates.py``), verification (``verify.py``, ``rerank.py``), the decision (``decide.py``),
the summary (``summary.py``), the result and its files (``result.py``), and the HTML report
(``report.py``, with ``plots.py``, ``gallery.py`` and ``details.py``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..classes import CLASSES, Thresholds, classify, wilson_interval
from .options import ReadOptions, SearchOptions, VerifyGrid, VerifyOptions

if TYPE_CHECKING:
    from .api import audit
    from .cache import EmbeddingCache, default_cache_dir
    from .nearest import SearchResult, search
    from .result import AuditResult, Match

__all__ = [
    "CLASSES",
    "AuditResult",
    "EmbeddingCache",
    "Match",
    "ReadOptions",
    "SearchOptions",
    "SearchResult",
    "Thresholds",
    "VerifyGrid",
    "VerifyOptions",
    "audit",
    "classify",
    "default_cache_dir",
    "search",
    "wilson_interval",
]

_LAZY = {"audit": "api", "EmbeddingCache": "cache", "default_cache_dir": "cache", "SearchResult": "nearest",
         "search": "nearest", "AuditResult": "result", "Match": "result"}


def __getattr__(name: str) -> Any:
    # The audit needs torch (seconds to import): loaded on first use, so that the command
    # line can read the options' defaults at start-up without it.
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
