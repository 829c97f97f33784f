"""``deepssim evaluate`` and ``deepssim baseline train-dar``: a subprocess smoke test of the
real command, and the options and errors in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deepssim.classes import Thresholds
from deepssim.cli import main

FIELDS = {"metric", "condition", "n_pairs", "macro_f1", "macro_f1_ci95", "weighted_f1", "per_class",
          "confusion", "thresholds", "silhouette", "auc_duplicate", "tpr_at_5fpr", "pairs_per_second"}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "deepssim", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def test_cli_one_metric_json_and_all_metrics_table(tiny_bench: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    done = _cli("evaluate", "--pairs", str(tiny_bench / "pairs.csv"), "--root", str(tiny_bench),
                "--metric", "ssim", "--json", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert FIELDS <= set(doc)
    assert doc["metric"] == "ssim" and doc["condition"] == "registered" and doc["macro_f1"] == 1.0
    assert doc["thresholds"] == [0.6, 0.85] and doc["n_pairs"] == sum(doc["class_counts"].values())
    assert sorted(doc["per_class"]) == ["different", "duplicate", "similar"]

    done = _cli("-q", "evaluate", "--pairs", str(tiny_bench), "--all", "--markdown", "--model",
                str(tiny_model_dir), "--limit", "30", "--bootstrap", "50", "--no-progress",
                "--num-threads", "1", "--device", "cpu", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")][1:]
    assert [r.split("|")[1].strip() for r in rows] == [
        "deepssim", "ssim", "ssim-flip", "ms-ssim", "registered-ssim", "audit-ssim", "l2", "correlation",
        "fsim", "dar", "sscd", "clip"]
    skipped = [r.split("|")[1].strip() for r in rows if "| skipped: " in r]
    assert skipped == ["ms-ssim", "dar", "sscd", "clip"]
    assert "needs images of at least 97 px" in done.stdout and "--weights [sscd=]FILE" in done.stdout
    plots = {p.name for p in (tmp_path / "deepssim-evaluation").iterdir()}
    assert plots == {f"hist-{m}.png" for m in
                     ("deepssim", "ssim", "ssim-flip", "registered-ssim", "audit-ssim", "l2", "correlation", "fsim")}


def test_missing_weights_exit_2_with_the_reason(tiny_bench: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--pairs", str(tiny_bench), "--metric", "sscd", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "deepssim evaluate: error: metric 'sscd' needs the SSCD TorchScript file" in err
    assert main(["evaluate", "--pairs", str(tiny_bench), "--metric", "clip", "--weights",
                 str(tiny_bench / "absent.pt"), "--no-progress"]) == 2
    assert f"but {tiny_bench / 'absent.pt'} does not exist" in capsys.readouterr().err
    assert main(["evaluate", "--pairs", str(tiny_bench), "--metric", "dar,sscd", "--weights", "x.pt"]) == 2
    assert "name the metric of each weights file" in capsys.readouterr().err
    assert main(["evaluate", "--pairs", str(tiny_bench / "nope.csv"), "--metric", "ssim"]) == 2
    assert "nope.csv: pairs file not found" in capsys.readouterr().err
    assert main(["evaluate", "--pairs", str(tiny_bench), "--metric", "nope"]) == 2
    assert "unknown metric 'nope'" in capsys.readouterr().err


def test_calibrate_and_save(tiny_bench: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cal = tmp_path / "cal.json"
    assert main(["evaluate", "--pairs", str(tiny_bench), "--metric", "correlation", "--condition",
                 "perturbed", "--calibrate", str(tiny_bench / "pairs.csv"), "--save-calibration",
                 str(cal), "--json", "--no-progress", "--bootstrap", "50"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["condition"] == "perturbed" and doc["thresholds_source"] == "calibration"
    assert Thresholds.from_file(cal).pair == tuple(doc["thresholds"])
    assert doc["calibration"]["thresholds"] == doc["thresholds"]
    folder = tmp_path / "cals"
    assert main(["evaluate", "--pairs", str(tiny_bench), "--metric", "l2,correlation", "--condition",
                 "registered", "--calibrate", str(tiny_bench / "pairs.csv"), "--save-calibration",
                 str(folder), "--no-progress", "--bootstrap", "20"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["correlation-registered.json", "l2-registered.json"]
    assert "| l2 | similarity |" in capsys.readouterr().out


def test_train_dar_then_evaluate_it(tiny_bench: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "dar"
    assert main(["baseline", "train-dar", "--images", str(tiny_bench / "train"), "--out", str(out),
                 "--backbone", "small", "--image-size", "32", "--epochs", "1", "--batch-size", "8",
                 "--device", "cpu", "--no-progress"]) == 0
    assert f"Dar baseline written to {out}" in capsys.readouterr().out
    assert main(["evaluate", "--pairs", str(tiny_bench), "--metric", "dar", "--weights", str(out),
                 "--calibrate", str(tiny_bench), "--json", "--no-progress", "--bootstrap", "20"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["metric"] == "dar" and doc["macro_f1"] is not None and doc["auc_duplicate"] is not None


def test_metric_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--metric", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 12 and lines[0].split()[:2] == ["deepssim", "ssim"]
