"""Where an audit's thresholds come from: the caller, a calibration file, the model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepssim.auditing.decide import resolve_thresholds


def test_threshold_sources_and_precedence(tmp_path: Path) -> None:
    calib = tmp_path / "calibration.json"
    calib.write_text(json.dumps({"metric": "deepssim", "thresholds": [0.55, 0.8]}))
    model_config = {"thresholds": [0.5, 0.9]}
    assert resolve_thresholds(None, None, model_config).pair == (0.5, 0.9)
    assert resolve_thresholds(None, None, model_config).source == "model"
    from_file = resolve_thresholds(None, calib, model_config)
    assert from_file.pair == (0.55, 0.8) and from_file.source == "calibration" and from_file.file == str(calib)
    assert resolve_thresholds("0.4, 0.7", None, model_config).pair == (0.4, 0.7)
    assert resolve_thresholds((0.3, 0.6), None, model_config).source == "given"
    with pytest.raises(ValueError, match="not both"):
        resolve_thresholds((0.3, 0.6), calib, model_config)
