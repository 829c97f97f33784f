"""Memorization benchmarks (docs/benchmark.md): build one from real images, read its files."""

from .build import PERTURBATION, BenchmarkInfo, build_benchmark, build_from_samples
from .layout import (
    DUPLICATE_THRESHOLD,
    LABELS,
    SIMILAR_THRESHOLD,
    AuditTruth,
    Pair,
    classify,
    clean_twin,
    load_benchmark_info,
    read_audit_csv,
    read_pairs_csv,
)

__all__ = [
    "DUPLICATE_THRESHOLD",
    "LABELS",
    "PERTURBATION",
    "SIMILAR_THRESHOLD",
    "AuditTruth",
    "BenchmarkInfo",
    "Pair",
    "build_benchmark",
    "build_from_samples",
    "classify",
    "clean_twin",
    "load_benchmark_info",
    "read_audit_csv",
    "read_pairs_csv",
]
