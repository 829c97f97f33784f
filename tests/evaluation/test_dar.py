"""The Dar et al. baseline: its loss, a tiny training run, and the dar metric on its folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from deepssim import read_image
from deepssim.evaluation import MetricOptions, create_metric
from deepssim.evaluation.dar import DarConfig, nt_xent, train_dar
from deepssim.model.network import ModelConfig

TINY = DarConfig(model=ModelConfig(backbone="small", width=8, embedding_dim=16, hidden_dim=32, dropout=0.0),
                 size=32, batch_size=8, epochs=2, max_minutes=None, seed=1)


def test_nt_xent_known_values() -> None:
    eye = torch.eye(4)
    # Twins identical, others orthogonal: each row sees e^(1/T) for its twin, e^0 for 6 others.
    t = 0.5
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 6))
    assert float(nt_xent(eye, eye, t)) == pytest.approx(expected, rel=1e-6)
    # Twins opposite: the worst case, the twin has the lowest logit.
    assert float(nt_xent(eye, -eye, t)) > float(nt_xent(eye, eye, t)) + 2


def test_train_dar_writes_a_folder_the_dar_metric_reads(tiny_bench: Path, tmp_path: Path) -> None:
    out = train_dar([tiny_bench / "train"], tmp_path / "dar", TINY, device="cpu", progress=False)
    config = json.loads((out / "config.json").read_text())
    assert config["baseline"] == "dar" and config["training_data"]["n_images"] == 30
    assert config["training"]["steps"] == 2 * (30 // 8) and config["training"]["stopped_by"] == "epochs"
    assert config["dar"]["temperature"] == 0.1 and math.isfinite(config["training"]["final_loss"])
    metric = create_metric("dar", MetricOptions(weights=out, device="cpu"))
    assert metric.scale == "cosine" and metric.default_thresholds is None
    a = read_image(next((tiny_bench / "train").rglob("*.png")))
    b = read_image(next((tiny_bench / "synthetic").rglob("*.png")))
    values = metric.score([a, a], [a, b])
    assert values[0] == pytest.approx(1.0, abs=1e-6) and -1 <= values[1] < 1
    # Deterministic given the seed.
    again = train_dar([tiny_bench / "train"], tmp_path / "dar2", TINY, device="cpu", progress=False)
    np.testing.assert_allclose(create_metric("dar", MetricOptions(weights=again, device="cpu")).score([a], [b]),
                               values[1:], atol=1e-6)


def test_dar_config_checks(tiny_bench: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_size >= 2"):
        DarConfig(batch_size=1)
    with pytest.raises(ValueError, match="max_minutes must be > 0"):
        DarConfig(max_minutes=0)
    big = DarConfig(model=TINY.model, size=32, batch_size=64)
    with pytest.raises(ValueError, match="30 images found; the Dar baseline needs at least batch_size"):
        train_dar([tiny_bench / "train"], tmp_path / "x", big, device="cpu", progress=False)
