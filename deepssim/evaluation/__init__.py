"""Measuring detection: metrics under one interface, the benchmark protocol's figures, calibration.

The flow of a run: pair file (``pairs.py``) -> images, read once (``images.py``) -> a metric's
scores (``metrics/``) -> decisions and figures (``classification.py``, ``separation.py``) ->
thresholds calibrated on validation pairs (``calibrate.py``) -> the comparison table and
histograms (``report.py``). ``harness.py`` ties them together; ``dar.py`` trains the Dar et al.
baseline.

```python
from deepssim.evaluation import RunSettings, compare, evaluate

result = evaluate("bench/pairs.csv", "ssim-flip", condition="perturbed")
result.macro_f1, result.auc_duplicate
table = compare("bench/pairs.csv", ["ssim", "ssim-flip"],
                settings=RunSettings(calibrate="val/pairs.csv"))
```
"""

from .calibrate import Calibration, OperatingPoint, calibrate
from .classification import (
    ClassFigures,
    bootstrap_macro_f1,
    confusion_matrix,
    macro_f1_of,
    per_class,
    predict,
    weighted_f1_of,
)
from .harness import (
    Comparison,
    Evaluation,
    EvaluationRun,
    RunSettings,
    ScoredPairs,
    compare,
    evaluate,
    evaluate_scores,
    score_pair_file,
)
from .images import ImageCache
from .metrics import (
    Metric,
    MetricOptions,
    MetricUnavailable,
    MissingDependencyError,
    MissingWeightsError,
    create_metric,
    metric_names,
    register_metric,
)
from .pairs import CONDITIONS, PairFile, detect_format, read_pair_file, reference_key_path
from .report import markdown_table, write_histograms
from .separation import roc_auc, silhouette_1d, tpr_at_fpr

__all__ = [
    "CONDITIONS",
    "Calibration",
    "ClassFigures",
    "Comparison",
    "Evaluation",
    "EvaluationRun",
    "ImageCache",
    "Metric",
    "MetricOptions",
    "MetricUnavailable",
    "MissingDependencyError",
    "MissingWeightsError",
    "OperatingPoint",
    "PairFile",
    "RunSettings",
    "ScoredPairs",
    "bootstrap_macro_f1",
    "calibrate",
    "compare",
    "confusion_matrix",
    "create_metric",
    "detect_format",
    "evaluate",
    "evaluate_scores",
    "macro_f1_of",
    "markdown_table",
    "metric_names",
    "per_class",
    "predict",
    "read_pair_file",
    "reference_key_path",
    "register_metric",
    "roc_auc",
    "score_pair_file",
    "silhouette_1d",
    "tpr_at_fpr",
    "weighted_f1_of",
    "write_histograms",
]
