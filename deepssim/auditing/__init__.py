"""The audit: every synthetic image against every training image, a decision, a report.

``deepssim.audit(train, synthetic, model=...)`` is the entry point (``api.py``); the steps
live one per module: the embedding cache (``cache.py``), the top-k search (``nearest.py``),
the decision (``decide.py``), the result and its files (``result.py``), the HTML report
(``report.py``).
"""

from .api import audit
from .cache import EmbeddingCache, default_cache_dir
from ..classes import CLASSES, Thresholds, classify, wilson_interval
from .result import AuditResult, Match
from .nearest import SearchResult, search

__all__ = [
    "CLASSES",
    "AuditResult",
    "EmbeddingCache",
    "Match",
    "SearchResult",
    "Thresholds",
    "audit",
    "classify",
    "default_cache_dir",
    "search",
    "wilson_interval",
]
