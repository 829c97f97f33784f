"""The harness on a tiny benchmark: figures, conditions, calibration, the comparison table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepssim import read_image, ssim_pairs
from deepssim.classes import Thresholds
from deepssim.evaluation import (
    MetricOptions,
    RunSettings,
    compare,
    evaluate,
    markdown_table,
    read_pair_file,
    write_histograms,
)

CPU = MetricOptions(device="cpu", num_threads=1)
FIELDS = {"metric", "condition", "n_pairs", "macro_f1", "macro_f1_ci95", "weighted_f1", "per_class",
          "confusion", "thresholds", "silhouette", "auc_duplicate", "tpr_at_5fpr", "pairs_per_second"}


def test_ssim_recovers_its_own_labels_when_registered(tiny_bench: Path) -> None:
    result = evaluate(tiny_bench / "pairs.csv", "ssim", condition="registered", options=CPU,
                      settings=RunSettings(n_bootstrap=200))
    pairs = read_pair_file(tiny_bench)
    counts = np.bincount(pairs.labels, minlength=3)
    assert result.n_pairs == len(pairs) and result.thresholds.pair == (0.60, 0.85)
    assert result.macro_f1 == 1.0 and result.weighted_f1 == 1.0 and result.macro_f1_ci95 == (1.0, 1.0)
    np.testing.assert_array_equal(result.confusion, np.diag(counts))
    assert result.auc_duplicate == 1.0 and result.tpr_at_5fpr == 1.0
    assert result.per_class["duplicate"].support == counts[2]
    # The scores are the reference SSIM of (real, clean synthetic).
    real = [read_image(tiny_bench / p) for p in pairs.real]
    clean = [read_image(tiny_bench / p) for p in pairs.synthetic]
    np.testing.assert_allclose(result.scored.scores, ssim_pairs(real, clean, device="cpu"), atol=1e-12)
    doc = result.to_dict()
    assert FIELDS <= set(doc) and json.loads(json.dumps(doc)) == doc
    assert doc["per_class"]["similar"]["support"] == counts[1]


def test_perturbed_condition_scores_the_perturbed_files(tiny_bench: Path) -> None:
    result = evaluate(tiny_bench, "ssim", condition="perturbed", options=CPU,
                      settings=RunSettings(n_bootstrap=100, limit=40))
    pairs = read_pair_file(tiny_bench, condition="perturbed").head(40)
    real = [read_image(tiny_bench / p) for p in pairs.real]
    perturbed = [read_image(tiny_bench / p) for p in pairs.synthetic]
    assert result.n_pairs == 40 and result.condition == "perturbed"
    np.testing.assert_allclose(result.scored.scores, ssim_pairs(real, perturbed, device="cpu"), atol=1e-12)
    assert result.macro_f1 < 1.0


def test_thresholds_explicit_calibrated_or_none(tiny_bench: Path) -> None:
    flags = RunSettings(thresholds=Thresholds(0.5, 0.9, source="flags"))
    fixed = evaluate(tiny_bench, "correlation", options=CPU, settings=flags)
    assert fixed.thresholds.pair == (0.5, 0.9) and fixed.macro_f1 is not None
    none = evaluate(tiny_bench, "correlation", options=CPU)
    assert none.thresholds is None and none.macro_f1 is None and none.per_class is None
    assert none.auc_duplicate == fixed.auc_duplicate and none.silhouette is not None
    # Calibrated on the same pairs: at least as good as any fixed thresholds.
    calibrated = evaluate(tiny_bench, "correlation", options=CPU,
                          settings=RunSettings(calibrate=tiny_bench / "pairs.csv"))
    assert calibrated.calibration is not None and calibrated.thresholds.source == "calibration"
    assert calibrated.macro_f1 == pytest.approx(calibrated.calibration.macro_f1)
    assert calibrated.macro_f1 >= fixed.macro_f1
    with pytest.raises(ValueError, match="not both"):
        RunSettings(thresholds=Thresholds(), calibrate=tiny_bench / "pairs.csv")


def test_missing_images_are_named(tiny_bench: Path, tmp_path: Path) -> None:
    text = (tiny_bench / "pairs.csv").read_text().replace("train/", "gone/", 1)
    (tmp_path / "pairs.csv").write_text(text)
    with pytest.raises(ValueError, match=r"1 image\(s\) named in .*pairs.csv not found: gone/"):
        evaluate(tmp_path / "pairs.csv", "ssim", options=CPU, settings=RunSettings(root=tiny_bench))


def test_reference_format_end_to_end(tmp_path: Path) -> None:
    """Images as UID/NAME.png, keys UID___NAME, labels 0/1/2 from the reference SSIM."""
    rng = np.random.default_rng(0)
    from scipy import ndimage

    rows, arrays = [], {}
    for u in range(6):
        base = ndimage.gaussian_filter(rng.standard_normal((32, 32)), 2.0)
        for name, image in (("training", base), ("gen-1", base + rng.normal(0, 0.02 * (u + 1), base.shape))):
            (tmp_path / f"uid{u}").mkdir(exist_ok=True)
            pixels = ((image - image.min()) / (image.max() - image.min()) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / f"uid{u}" / f"{name}.png")
            arrays[f"uid{u}___{name}"] = read_image(tmp_path / f"uid{u}" / f"{name}.png")
    for u in range(6):
        for v in (u, (u + 1) % 6):
            real, synth = f"uid{u}___training", f"uid{v}___gen-1"
            value = float(ssim_pairs([arrays[real]], [arrays[synth]], device="cpu")[0])
            code = 1 if value > 0.85 else 2 if value > 0.60 else 0
            rows.append(f"{real},{synth},{value:.6f},{code}")
    csv_path = tmp_path / "test_set.csv"
    csv_path.write_text("real_key,synth_key,ssim,label\n" + "\n".join(rows) + "\n")
    quick = RunSettings(n_bootstrap=50)
    registered = evaluate(csv_path, "ssim", options=CPU, settings=quick)
    assert registered.n_pairs == 12
    assert (registered.confusion.diagonal().sum(), registered.confusion.sum()) == (12, 12)
    perturbed = evaluate(csv_path, "ssim-flip", condition="perturbed", options=CPU, settings=quick)
    again = evaluate(csv_path, "ssim-flip", condition="perturbed", options=CPU, settings=quick)
    np.testing.assert_array_equal(perturbed.scored.scores, again.scored.scores)  # seeded perturbation
    assert not np.allclose(perturbed.scored.scores, registered.scored.scores)


def test_compare_table_and_histograms(tiny_bench: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    options = MetricOptions(model=tiny_model_dir, device="cpu", num_threads=1)
    comparison = compare(tiny_bench, ["deepssim", "ssim", "ssim-flip", "ms-ssim", "l2", "sscd"],
                         options=options, settings=RunSettings(limit=30, n_bootstrap=50))
    assert set(comparison.skipped) == {"ms-ssim", "sscd"}
    assert "97 px" in comparison.skipped["ms-ssim"] and "--weights" in comparison.skipped["sscd"]
    assert [(e.metric, e.condition) for e in comparison.evaluations] == [
        (m, c) for m in ("deepssim", "ssim", "ssim-flip", "l2") for c in ("registered", "perturbed")]
    table = markdown_table(comparison)
    lines = table.splitlines()
    assert lines[0].startswith("| metric | scale | macro F1 registered | macro F1 perturbed |")
    rows = {line.split("|")[1].strip(): line for line in lines[2:] if line.startswith("| ")}
    assert list(rows) == ["deepssim", "ssim", "ssim-flip", "ms-ssim", "l2", "sscd"]
    assert all(line.count("|") == lines[0].count("|") for line in rows.values())
    assert "| ssim | ssim | 1.000 (1.000–1.000) |" in rows["ssim"]
    assert "skipped: metric 'sscd' needs" in rows["sscd"] and "| n/a |" in rows["l2"]
    written = write_histograms(comparison, tmp_path / "plots")
    assert [p.name for p in written] == ["hist-deepssim.png", "hist-ssim.png", "hist-ssim-flip.png", "hist-l2.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)
    doc = comparison.to_dict()
    assert len(doc["evaluations"]) == 8 and set(doc["skipped"]) == {"ms-ssim", "sscd"}
    with pytest.raises(ValueError, match="unknown metric 'nope'"):
        compare(tiny_bench, ["nope"])
