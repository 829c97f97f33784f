"""The built-in demo end to end, at a tiny size (the full one is the README's first command)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepssim.demo import MARKER, DemoSize, run_demo

TINY = DemoSize(n_subjects=14, slices_per_subject=3, n_train=18, n_synthetic=12,
                n_train_pairs=256, n_val_pairs=64, verify=3)


def test_tiny_demo_runs_end_to_end(tmp_path: Path) -> None:
    lines: list[str] = []
    out = tmp_path / "demo"
    figures = run_demo(out, device="cpu", train_minutes=0.05, size=TINY, progress=False, say=lines.append)
    assert (out / MARKER).is_file()
    for name in ("report.html", "matches.csv", "summary.json", "histogram.png"):
        assert (out / "audit" / name).is_file()
    assert len(list((out / "cohort").glob("sub-*/slice-*.png"))) == 14 * 3
    det = figures["detection"]
    assert det["n_synthetic"] == 12 and figures["summary"]["n_train"] == 18
    assert det["n_copies"] == figures["n_planted_copies"] and det["n_copies"] > 0
    assert any(f"found {det['true_positives']} of the {det['n_copies']} planted copies" in line for line in lines)
    # A rerun replaces the demo's own folder; a foreign folder is refused.
    run_demo(out, device="cpu", train_minutes=0.02, size=TINY, progress=False, say=lines.append)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a deepssim demo folder"):
        run_demo(foreign, size=TINY, progress=False, say=lines.append)
    assert (foreign / "thesis.tex").read_text() == "keep me"
