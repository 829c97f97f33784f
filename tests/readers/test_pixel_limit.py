"""The pixel limit: every reader refuses an image or volume over it from the header, before
decoding, in words that name the file, its size, the limit and how to raise it."""

from __future__ import annotations

import resource
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepssim.readers import ReadError, SliceSpec, read_image, read_slices, read_volume, resolve_id, scan
from deepssim.readers import limits
from deepssim.readers.limits import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV, check_pixels, max_pixels, set_max_pixels

from .conftest import png_header_bomb

nib = pytest.importorskip("nibabel")


@pytest.fixture(autouse=True)
def _default_limit(monkeypatch: pytest.MonkeyPatch):
    """Each test starts from the default limit and leaves it so."""
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    set_max_pixels(None)
    yield
    set_max_pixels(None)


def npy_header_bomb(path: Path, shape: tuple[int, ...]) -> Path:
    """A .npy file whose header declares ``shape`` (float32) over a few bytes of data."""
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": shape})
        fh.write(b"\0" * 64)
    return path


def nifti_header_only(path: Path, shape: tuple[int, ...]) -> Path:
    """A .nii file whose header declares ``shape`` (uint8) over a few bytes of data."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    header["vox_offset"] = 352
    path.write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 64)
    return path


def _limit_message(path: Path, size: str, count: str, limit: str = "134,217,728") -> str:
    return (f"{path}: {size} = {count} pixels is over the limit of {limit} (a guard against decompression "
            f"bombs); if the file is trusted, raise the limit with 'deepssim --max-pixels N ...' or "
            f"{MAX_PIXELS_ENV}=N")


def test_default_refuses_12000_square_and_accepts_a_512_cube() -> None:
    assert DEFAULT_MAX_PIXELS == 2**27 == max_pixels()
    check_pixels((512, 512, 512), "cube.nii")
    with pytest.raises(ReadError) as info:
        check_pixels((12_000, 12_000), "big.png")
    assert str(info.value) == _limit_message(Path("big.png"), "12000 x 12000", "144,000,000")


def test_png_bomb_is_refused_from_its_header_without_pillow_warning(tmp_path: Path) -> None:
    bomb = png_header_bomb(tmp_path / "bomb.png", 12_000, 12_000)
    assert bomb.stat().st_size < 200_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would raise here
        for read in (read_image, read_slices, lambda p: resolve_id(tmp_path, p.name)):
            with pytest.raises(ReadError) as info:
                read(bomb)
            assert str(info.value) == _limit_message(bomb, "12000 x 12000", "144,000,000")
        result = scan(tmp_path)
    assert result.refs == [] and [str(e) for e in result.errors] == [_limit_message(bomb, "12000 x 12000", "144,000,000")]
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # Linux: KiB
    assert grown_kib < 100_000  # decoding would take 144 MB of pixels (576 MB as float32)


def test_an_image_over_pillows_own_limit_but_within_ours_opens_without_warning(tmp_path: Path) -> None:
    # 9,500 x 9,500 = 90.25 M pixels: over Pillow's default 89.5 M, under 2**27.
    png_header_bomb(tmp_path / "big.png", 9_500, 9_500)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = scan(tmp_path)
    assert [ref.id for ref in result.refs] == ["big.png"] and result.errors == []


def test_npy_and_nifti_header_bombs_are_refused_before_loading(tmp_path: Path) -> None:
    npy = npy_header_bomb(tmp_path / "bomb.npy", (20_000, 20_000))
    nii = nifti_header_only(tmp_path / "bomb.nii", (1024, 1024, 1024))
    cube = nifti_header_only(tmp_path / "cube.nii", (512, 512, 512))  # within the limit: only truncated
    with pytest.raises(ReadError) as info:
        read_image(npy)
    assert str(info.value) == _limit_message(npy, "20000 x 20000", "400,000,000")
    with pytest.raises(ReadError) as info:
        read_volume(nii)
    assert str(info.value) == _limit_message(nii, "1024 x 1024 x 1024", "1,073,741,824")
    result = scan(tmp_path, SliceSpec.parse("center"))
    assert [ref.id for ref in result.refs] == ["cube.nii#axis2:256"]
    assert [e.path for e in result.errors] == [nii, npy]
    with pytest.raises(ReadError, match=r"cube\.nii: corrupt or truncated NIfTI data"):
        read_volume(cube)


def _formats(folder: Path) -> dict[str, Path]:
    """One 40 x 40 (1,600 pixel) image per format, and a 3 x 20 x 20 (1,200 voxel) stack."""
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, size=(40, 40), dtype=np.uint8)
    files = {name: folder / name for name in ("a.png", "a.jpg", "a.bmp", "a.tif", "a.npy", "a.npz", "a.nii.gz")}
    Image.fromarray(grey).save(files["a.png"])
    Image.fromarray(grey).save(files["a.jpg"])
    Image.fromarray(grey).save(files["a.bmp"])
    Image.fromarray(grey).save(files["a.tif"])
    np.save(files["a.npy"], grey)
    np.savez(files["a.npz"], key=grey)
    nib.save(nib.Nifti1Image(grey[:, :, None].repeat(2, axis=2).astype(np.float32), np.eye(4)), files["a.nii.gz"])
    pages = [Image.fromarray(grey[:20, :20]) for _ in range(3)]
    files["stack.tif"] = folder / "stack.tif"
    pages[0].save(files["stack.tif"], save_all=True, append_images=pages[1:])
    return files


@pytest.mark.parametrize("name", ["a.png", "a.jpg", "a.bmp", "a.tif", "a.npy", "a.npz", "a.nii.gz", "stack.tif"])
def test_every_format_obeys_a_lowered_limit(tmp_path: Path, name: str) -> None:
    path = _formats(tmp_path)[name]
    first = scan(path, SliceSpec.parse("all"))
    assert first.errors == [] and first.refs
    set_max_pixels(1_000)
    with pytest.raises(ReadError, match=r"pixels is over the limit of 1,000") as info:
        read_slices(path, SliceSpec.parse("all"))
    assert str(path) in str(info.value)
    lowered = scan(path, SliceSpec.parse("all"))
    assert lowered.refs == [] and len(lowered.errors) == 1 and "over the limit of 1,000" in lowered.errors[0].reason
    set_max_pixels(1_600 * 2)  # the largest item here has 3,200 elements (the NIfTI: 40 x 40 x 2)
    assert scan(path, SliceSpec.parse("all")).refs == first.refs


def test_dicom_file_and_series_obey_the_limit(tmp_path: Path, write_dicom) -> None:
    pixels = np.arange(30 * 30, dtype=np.uint16).reshape(30, 30)
    single = write_dicom(tmp_path / "one" / "a.dcm", pixels, series_uid="1.2.3.1")
    for k in range(4):  # a series of 4 x 900 = 3,600 voxels, each file 900
        write_dicom(tmp_path / "series" / f"s{k}.dcm", pixels, series_uid="1.2.3.2",
                    position=(0.0, 0.0, float(k)), instance=k + 1)
    set_max_pixels(2_000)
    assert read_image(single).shape == (30, 30)
    with pytest.raises(ReadError, match=r"series: 30 x 30 x 4 = 3,600 pixels is over the limit of 2,000"):
        read_volume(tmp_path / "series")
    result = scan(tmp_path, SliceSpec.parse("all"))
    assert [ref.id for ref in result.refs] == ["one/a.dcm"]
    assert [e.path for e in result.errors] == [tmp_path / "series"]
    set_max_pixels(900)
    assert read_image(single).shape == (30, 30)  # exactly at the limit is allowed
    set_max_pixels(899)
    with pytest.raises(ReadError, match=r"a\.dcm: 30 x 30 = 900 pixels is over the limit of 899"):
        read_image(single)


def test_the_environment_sets_the_limit_and_python_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _formats(tmp_path)["a.png"]
    monkeypatch.setenv(MAX_PIXELS_ENV, "1_000")
    assert max_pixels() == 1_000
    with pytest.raises(ReadError, match="40 x 40 = 1,600 pixels is over the limit of 1,000"):
        read_image(path)
    set_max_pixels(2_000)
    assert read_image(path).shape == (40, 40)
    set_max_pixels(None)
    for bad in ("lots", "0", "-5", "1.5"):
        monkeypatch.setenv(MAX_PIXELS_ENV, bad)
        with pytest.raises(ValueError, match=f"{MAX_PIXELS_ENV}: the pixel limit must be"):
            max_pixels()
    with pytest.raises(ValueError, match="must be >= 1"):
        set_max_pixels(0)
    assert limits.parse_max_pixels("134,217,728") == 2**27


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "deepssim", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def test_cli_max_pixels_option_and_environment(tmp_path: Path) -> None:
    a = _formats(tmp_path)["a.png"]
    done = _cli("--max-pixels", "1000", "ssim", str(a), str(a))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{a}: 40 x 40 = 1,600 pixels is over the limit of 1,000" in done.stderr
    assert "--max-pixels N" in done.stderr
    done = _cli("ssim", str(a), str(a), env={MAX_PIXELS_ENV: "1000"})
    assert done.returncode == 2 and "over the limit of 1,000" in done.stderr
    done = _cli("--max-pixels", "5000", "ssim", str(a), str(a), env={MAX_PIXELS_ENV: "1000"})
    assert done.returncode == 0 and float(done.stdout) == pytest.approx(1.0)
    done = _cli("--max-pixels", "none", "ssim", str(a), str(a))
    assert done.returncode == 2 and "argument --max-pixels: the pixel limit must be a whole number" in done.stderr
    bomb = png_header_bomb(tmp_path / "bomb.png", 12_000, 12_000)
    done = _cli("ssim", str(bomb), str(a))
    assert done.returncode == 2 and "12000 x 12000 = 144,000,000 pixels" in done.stderr
    assert "DecompressionBomb" not in done.stderr and "Traceback" not in done.stderr
