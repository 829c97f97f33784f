"""The audit on a folder of good and hostile files: with --skip-unreadable the hostile ones
(a decompression bomb, NaN pixels, a broken link) are skipped and named, the others audited,
and images behind a linked folder are found."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepssim.auditing import ReadOptions, audit
from deepssim.readers import ReadError

from .conftest import png_header_bomb


@pytest.fixture
def sets(tmp_path: Path) -> tuple[Path, Path]:
    """6 training images (2 behind a linked folder) and 4 good synthetic ones, plus hostile
    synthetic files: a 12,000 x 12,000 PNG bomb, a NaN .npy, a broken link."""
    rng = np.random.default_rng(0)
    train, synth, shelf = tmp_path / "train", tmp_path / "synthetic", tmp_path / "shelf"
    for folder in (train, synth, shelf):
        folder.mkdir()
    for k in range(4):
        Image.fromarray(rng.integers(0, 256, size=(36, 36), dtype=np.uint8)).save(train / f"t{k}.png")
    for k in range(2):
        Image.fromarray(rng.integers(0, 256, size=(36, 36), dtype=np.uint8)).save(shelf / f"l{k}.png")
    (train / "linked").symlink_to(shelf, target_is_directory=True)
    (train / "loop").symlink_to(".", target_is_directory=True)
    shutil.copy(shelf / "l1.png", synth / "copy_of_linked.png")
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, size=(36, 36), dtype=np.uint8)).save(synth / f"s{k}.png")
    png_header_bomb(synth / "bomb.png", 12_000, 12_000)
    nan = rng.random((36, 36)).astype(np.float32)
    nan[4, 4] = np.nan
    np.save(synth / "nan.npy", nan)
    (synth / "gone.png").symlink_to(tmp_path / "nowhere.png")
    return train, synth


def test_hostile_files_are_skipped_and_named(sets: tuple[Path, Path], tiny_model_dir: Path) -> None:
    train, synth = sets
    with pytest.raises(ReadError, match=r"2 unreadable file\(s\): .*bomb\.png: 12000 x 12000 = 144,000,000 pixels"):
        audit(train, synth, tiny_model_dir, device="cpu", cache_dir=None)
    for workers in (1, 3):
        result = audit(train, synth, tiny_model_dir, device="cpu", cache_dir=None,
                       reading=ReadOptions(skip_unreadable=True, workers=workers))
        assert sorted(result.train_ids) == ["linked/l0.png", "linked/l1.png", "t0.png", "t1.png", "t2.png", "t3.png"]
        assert result.synthetic_ids == ["copy_of_linked.png", "s0.png", "s1.png", "s2.png"]
        skipped = result.summary["skipped_unreadable"]
        assert [entry.split(":")[0] for entry in skipped] == [
            str(synth / "bomb.png"), str(synth / "gone.png"), str(synth / "nan.npy")]
        assert "over the limit of 134,217,728" in skipped[0] and "NaN" in skipped[2]
        best = {m.synthetic: m for m in result.matches if m.rank == 1}
        assert best["copy_of_linked.png"].train == "linked/l1.png"
        assert best["copy_of_linked.png"].score == pytest.approx(1.0, abs=1e-5)


def test_audit_command_with_a_lowered_limit(sets: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path) -> None:
    train, synth = sets
    for name in ("bomb.png", "nan.npy", "gone.png"):
        os.remove(synth / name)
    Image.fromarray(np.zeros((50, 50), dtype=np.uint8)).save(synth / "big.png")  # 2,500 pixels
    out = tmp_path / "out"
    command = [sys.executable, "-m", "deepssim", "--max-pixels", "2000", "audit", "--train", str(train),
               "--synthetic", str(synth), "--model", str(tiny_model_dir), "--out", str(out), "--device", "cpu",
               "--no-cache", "--no-progress", "--verify", "0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{synth / 'big.png'}: 50 x 50 = 2,500 pixels is over the limit of 2,000" in done.stderr
    done = subprocess.run([*command, "--skip-unreadable"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_synthetic"] == 4 and len(summary["skipped_unreadable"]) == 1
    assert summary["skipped_unreadable"][0].startswith(f"{synth / 'big.png'}: 50 x 50 = 2,500 pixels")
