"""Similarity metrics behind one interface (``Metric.score(real, synthetic)``) and a registry.

``create_metric(name, MetricOptions(...))`` builds one by name; ``metric_names()`` lists them:
``deepssim``, ``ssim``, ``ssim-flip``, ``ms-ssim``, ``registered-ssim``, ``audit-ssim``, ``l2``,
``correlation``, ``fsim``, ``dar``, ``sscd``, ``clip``.
"""

from .base import (
    Metric,
    MetricOptions,
    MetricUnavailable,
    MissingDependencyError,
    MissingWeightsError,
    Scale,
    create_metric,
    metric_class,
    metric_names,
    register_metric,
)
from .embedding import CLIPMetric, DarMetric, DeepSSIMMetric, EmbeddingMetric, SSCDMetric
from .iqa import FSIMMetric, MSSSIMMetric
from .pixel import AuditSSIMMetric, CorrelationMetric, FlipSSIMMetric, L2Metric, RegisteredSSIMMetric, SSIMMetric

# The registry's order is the order of the comparison table: ours, the SSIM family, the
# pixel baselines, the learned baselines.
for _cls in (DeepSSIMMetric, SSIMMetric, FlipSSIMMetric, MSSSIMMetric, RegisteredSSIMMetric, AuditSSIMMetric,
             L2Metric, CorrelationMetric, FSIMMetric, DarMetric, SSCDMetric, CLIPMetric):
    register_metric(_cls)

__all__ = [
    "AuditSSIMMetric",
    "CLIPMetric",
    "CorrelationMetric",
    "DarMetric",
    "DeepSSIMMetric",
    "EmbeddingMetric",
    "FSIMMetric",
    "FlipSSIMMetric",
    "L2Metric",
    "MSSSIMMetric",
    "Metric",
    "MetricOptions",
    "MetricUnavailable",
    "MissingDependencyError",
    "MissingWeightsError",
    "RegisteredSSIMMetric",
    "SSCDMetric",
    "SSIMMetric",
    "Scale",
    "create_metric",
    "metric_class",
    "metric_names",
    "register_metric",
]
