"""The ``deepssim`` command, run as a subprocess the way users run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepssim import ssim


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deepssim", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def two_pngs(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    a = (rng.random((40, 48)) * 255).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    pa, pb = tmp_path / "a.png", tmp_path / "b b.png"
    Image.fromarray(a).save(pa)
    Image.fromarray(b).save(pb)
    return pa, pb


def test_ssim_prints_the_value(two_pngs: tuple[Path, Path]) -> None:
    pa, pb = two_pngs
    want = ssim(np.asarray(Image.open(pa)), np.asarray(Image.open(pb)))
    done = run_cli("ssim", str(pa), str(pb))
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip()) == pytest.approx(want, abs=1e-6)


def test_ssim_json_and_registered(two_pngs: tuple[Path, Path], tmp_path: Path) -> None:
    pa, _ = two_pngs
    flipped = tmp_path / "flipped.png"
    Image.fromarray(np.asarray(Image.open(pa))[::-1].copy()).save(flipped)
    done = run_cli("ssim", str(pa), str(flipped), "--registered", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["shape"] == [40, 48]
    assert result["ssim"] < 0.5
    assert result["registered_ssim"] == pytest.approx(1.0, abs=1e-9)
    assert result["alignment"] == {
        "flip_axis0": True, "flip_axis1": False, "angle_deg": 0.0, "shift_px": [0, 0]
    }


def test_ssim_on_volume_slice_ids(tmp_path: Path) -> None:
    volume = np.random.default_rng(1).random((20, 24, 10)).astype(np.float32)
    np.save(tmp_path / "vol.npy", volume)
    a, b = f"{tmp_path}/vol.npy#axis2:3", f"{tmp_path}/vol.npy#axis2:4"
    done = run_cli("ssim", a, b, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ssim"] == pytest.approx(
        ssim(volume[:, :, 3], volume[:, :, 4]), abs=1e-6
    )


def test_errors_name_the_file_and_exit_2(two_pngs: tuple[Path, Path], tmp_path: Path) -> None:
    pa, _ = two_pngs
    missing = tmp_path / "missing.png"
    done = run_cli("ssim", str(pa), str(missing))
    assert done.returncode == 2
    assert "missing.png" in done.stderr
    assert done.stdout == ""
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(small)
    done = run_cli("ssim", str(pa), str(small))
    assert done.returncode == 2
    assert "one size" in done.stderr and "small.png" in done.stderr
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tiny)
    done = run_cli("ssim", str(tiny), str(tiny))
    assert done.returncode == 2
    assert f"{tiny}: image of shape (5, 5) is smaller than the 7x7 SSIM window" in done.stderr


def test_demo_command_is_there() -> None:
    done = run_cli("demo", "--help")
    assert done.returncode == 0 and "--train-minutes" in done.stdout
