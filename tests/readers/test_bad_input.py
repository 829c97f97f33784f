"""Every kind of bad input gives a ReadError that names the file and the problem."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepssim.readers import ImageRef, ReadError, SliceSpec, load_ref, read_image, read_slices, read_volume, resolve_id, scan


def _png(path: Path) -> Path:
    Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)).save(path)
    return path


def _jpeg(path: Path) -> Path:
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)).save(path)
    return path


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def test_read_error_is_value_error_with_path_and_reason() -> None:
    error = ReadError(Path("a/b.png"), "broken")
    assert isinstance(error, ValueError) and str(error) == "a/b.png: broken"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.reason, str(copy)) == (error.path, error.reason, str(error))


@pytest.mark.parametrize("reader", [read_image, read_volume, read_slices])
def test_missing_file(tmp_path: Path, reader) -> None:
    with pytest.raises(ReadError, match=r"nope\.nii\.gz: file not found"):
        reader(tmp_path / "nope.nii.gz")


def test_missing_scan_root(tmp_path: Path) -> None:
    with pytest.raises(ReadError, match="not found"):
        scan(tmp_path / "absent")


def test_unsupported_suffix(tmp_path: Path) -> None:
    (tmp_path / "a.gif").write_bytes(b"GIF89a")
    with pytest.raises(ReadError, match=r"a\.gif: unsupported suffix '\.gif'; supported: \.png"):
        read_image(tmp_path / "a.gif")


@pytest.mark.parametrize("make", [_png, _jpeg])
def test_truncated_image(tmp_path: Path, make) -> None:
    path = _truncate(make(tmp_path / ("x.png" if make is _png else "x.jpg")))
    with pytest.raises(ReadError, match="corrupt or truncated image") as info:
        read_image(path)
    assert info.value.path == path


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("hello, I am text")
    with pytest.raises(ReadError, match=r"notes\.png: not an image file Pillow can identify"):
        read_image(path)


def test_truncated_nifti(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(20, 20, 20)), np.eye(4)), path)
    _truncate(path)
    with pytest.raises(ReadError, match=r"v\.nii\.gz: corrupt or truncated NIfTI data"):
        read_volume(path)


@pytest.mark.parametrize(
    ("array", "reason"),
    [
        (np.zeros((0,)), r"empty array \(shape \(0,\)\)"),
        (np.zeros((5, 0)), r"empty array \(shape \(5, 0\)\)"),
        (np.zeros(5), r"1D array"),
        (np.zeros((2, 1, 4, 4)), r"4D data"),
        (np.zeros((3, 3), dtype=complex), r"unsupported array dtype complex128"),
    ],
)
def test_bad_npy(tmp_path: Path, array: np.ndarray, reason: str) -> None:
    path = tmp_path / "a.npy"
    np.save(path, array)
    with pytest.raises(ReadError, match=r"a\.npy: " + reason):
        read_image(path)
    assert scan(tmp_path).errors[0].path == path  # the header alone tells


def test_pickled_npy_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ReadError, match="obj.npy"):
        read_image(tmp_path / "obj.npy")


def test_truncated_npy_found_by_scan(tmp_path: Path) -> None:
    np.save(tmp_path / "big.npy", np.ones((50, 50)))
    _truncate(tmp_path / "big.npy")
    [error] = scan(tmp_path).errors
    assert "truncated .npy" in error.reason


def test_slice_index_out_of_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    np.save(tmp_path / "vol.npy", np.ones((4, 5, 6)))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ReadError, match=r"slice index 4 out of range: axis 0 has 4 slices"):
        read_image("vol.npy#axis0:4")
    with pytest.raises(ReadError, match=r"vol\.npy#axis2:9: slice index 9 out of range: axis 2 has 6 slices"):
        resolve_id(tmp_path, "vol.npy#axis2:9")
    with pytest.raises(ReadError, match=r"slice index 7 out of range for 6 slices along axis 2"):
        read_slices("vol.npy", SliceSpec.parse("7", axis=2))
    with pytest.raises(ReadError, match=r"selection '10:20' picks no slice of 4 along axis 0"):
        read_slices("vol.npy", SliceSpec.parse("10:20"))


def test_bad_ids(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    np.save(tmp_path / "vol.npy", np.ones((4, 5, 6)))
    with pytest.raises(ReadError, match=r"bad slice fragment '#slice3'"):
        resolve_id(tmp_path, "vol.npy#slice3")
    with pytest.raises(ReadError, match=r"is a 3D volume of shape \(4, 5, 6\); name a slice as '#axis0:N'"):
        resolve_id(tmp_path, "vol.npy")
    with pytest.raises(ReadError, match=r"is 2D .*no slices"):
        resolve_id(tmp_path, "a.png#axis0:1")
    with pytest.raises(ReadError, match="file not found"):
        resolve_id(tmp_path, "b.png")


def test_file_changed_after_scan(tmp_path: Path) -> None:
    path = _png(tmp_path / "a.png")
    [ref] = scan(tmp_path).refs
    path.write_text("overwritten")
    with pytest.raises(ReadError, match=r"a\.png: not an image file"):
        load_ref(ref)


def test_missing_numeric_name_is_not_a_series(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ReadError, match=r"12\.5: file not found"):
        read_image("12.5")


def test_axis_above_2_is_a_read_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nib = pytest.importorskip("nibabel")
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6), dtype=np.float32), np.eye(4)), tmp_path / "v.nii.gz")
    monkeypatch.chdir(tmp_path)
    has_3_axes = r"v\.nii\.gz#axis5:1: no axis 5: the volume has 3 axes"
    with pytest.raises(ReadError, match=has_3_axes):
        read_image("v.nii.gz#axis5:1")
    with pytest.raises(ReadError, match=has_3_axes):
        resolve_id(tmp_path, "v.nii.gz#axis5:1")
    with pytest.raises(ReadError, match="the volume has 3 axes"):
        load_ref(ImageRef("v.nii.gz#axis5:1", tmp_path / "v.nii.gz", None, 5, 1))


def test_folder_without_dicom_where_an_image_is_expected(tmp_path: Path) -> None:
    (tmp_path / "pngs").mkdir()
    _png(tmp_path / "pngs" / "a.png")
    expected = r"pngs: is a folder without DICOM files; expected an image file or a DICOM series folder"
    for reader in (read_image, read_volume, read_slices):
        with pytest.raises(ReadError, match=expected):
            reader(tmp_path / "pngs")
