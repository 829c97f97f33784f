"""NIfTI (real Kirby21 and generated) and NumPy .npy / .npz files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepssim.readers import ReadError, SliceSpec, read_image, read_slices, read_volume, scan

nib = pytest.importorskip("nibabel")

MPRAGE = "volumes/kirby21-113/113-02-MPRAGE.nii.gz"


@pytest.fixture(scope="module")
def mprage(shared_data: Path) -> tuple[Path, np.ndarray]:
    path = shared_data / MPRAGE
    return path, read_volume(path)


def test_kirby_volume_is_closest_canonical(mprage: tuple[Path, np.ndarray]) -> None:
    path, volume = mprage
    img = nib.load(path)
    assert img.shape == (170, 256, 256)
    assert nib.aff2axcodes(img.affine) == ("R", "P", "S")  # stored P->A flipped
    assert volume.shape == (170, 256, 256) and volume.dtype == np.float32
    canonical = nib.as_closest_canonical(img).get_fdata(dtype=np.float32)
    np.testing.assert_array_equal(volume, canonical)
    np.testing.assert_array_equal(volume, img.get_fdata(dtype=np.float32)[:, ::-1, :])


@pytest.mark.parametrize(
    ("select", "indices"),
    [
        ("center", [128]),
        ("all", list(range(256))),
        ("40:120", list(range(40, 120))),
        ("::4", list(range(0, 256, 4))),
        ("10:50:2", list(range(10, 50, 2))),
        ("-3:", [253, 254, 255]),
    ],
)
def test_kirby_slice_selection(mprage: tuple[Path, np.ndarray], select: str, indices: list[int]) -> None:
    path, volume = mprage
    slices = read_slices(path, SliceSpec.parse(select))
    assert [ref.id for ref, _ in slices] == [f"113-02-MPRAGE.nii.gz#axis2:{i}" for i in indices]
    ref, image = slices[len(slices) // 2]
    assert image.shape == (170, 256)
    np.testing.assert_array_equal(image, volume[:, :, ref.index])


def _nonempty_count(volume: np.ndarray, axis: int) -> int:
    """The documented empty-slice rule, written out independently."""
    level = volume.min() + 0.02 * (volume.max() - volume.min())
    moved = np.moveaxis(volume, axis, 0)
    return sum(int((s > level).mean() >= 0.01) for s in moved)


@pytest.mark.parametrize(("axis", "count"), [(0, 105), (1, 167), (2, 126)])
def test_kirby_skip_empty_counts(mprage: tuple[Path, np.ndarray], axis: int, count: int) -> None:
    path, volume = mprage
    assert _nonempty_count(volume, axis) == count
    result = scan(path, SliceSpec(axis=axis, select="all", skip_empty=True))
    assert len(result.refs) == count and not result.errors
    # The skull-stripped volume is background at both ends of every axis.
    assert 0 < result.refs[0].index and result.refs[-1].index < volume.shape[axis] - 1


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def test_nifti_reoriented_and_scaled(tmp_path: Path) -> None:
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    img = nib.Nifti1Image(data, np.diag([-1.0, 1.0, 1.0, 1.0]))  # LAS
    img.header.set_slope_inter(2.0, 10.0)
    nib.save(img, tmp_path / "las.nii")
    np.testing.assert_array_equal(read_volume(tmp_path / "las.nii"), (data[::-1] * 2.0 + 10.0).astype(np.float32))


def test_nifti_trailing_singletons_squeezed_and_2d(tmp_path: Path) -> None:
    data = np.ones((4, 5, 6, 1), dtype=np.float32)
    assert read_volume(_save_nifti(tmp_path / "t1.nii.gz", data)).shape == (4, 5, 6)
    flat = _save_nifti(tmp_path / "flat.nii.gz", np.ones((4, 5, 1), dtype=np.float32))
    assert read_image(flat).shape == (4, 5)
    with pytest.raises(ReadError, match=r"flat\.nii\.gz: is 2D .*a 3D volume is needed"):
        read_volume(flat)


def test_nifti_4d_is_an_error(tmp_path: Path) -> None:
    path = _save_nifti(tmp_path / "bold.nii.gz", np.zeros((4, 5, 6, 3), dtype=np.float32))
    with pytest.raises(ReadError, match=r"bold\.nii\.gz: 4D data \(shape \(4, 5, 6, 3\)\)") as info:
        read_volume(path)
    assert info.value.path == path and "4D" in info.value.reason
    result = scan(tmp_path)
    assert [e.path for e in result.errors] == [path] and not result.refs


def test_npy_2d_and_3d(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = np.arange(12, dtype=np.uint16).reshape(3, 4)
    stack = np.random.default_rng(1).normal(size=(3, 4, 5))
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "stack.npy", stack)
    np.save(tmp_path / "channel.npy", image[:, :, None])  # (H, W, 1) is an image
    assert read_image(tmp_path / "image.npy").dtype == np.float32
    np.testing.assert_array_equal(read_image(tmp_path / "channel.npy"), image)
    np.testing.assert_array_equal(read_volume(tmp_path / "stack.npy"), stack.astype(np.float32))
    [(ref, middle)] = read_slices(tmp_path / "stack.npy")
    assert ref.id == "stack.npy#axis0:1"
    np.testing.assert_array_equal(middle, stack[1].astype(np.float32))
    monkeypatch.chdir(tmp_path)
    np.testing.assert_array_equal(read_image("stack.npy#axis2:4"), stack[:, :, 4].astype(np.float32))
    with pytest.raises(ReadError, match="is 2D"):
        read_volume("image.npy")


def test_npz_members_are_items(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = np.arange(3 * 4 * 5, dtype=np.float64).reshape(3, 4, 5)
    mask = np.eye(4, dtype=bool)
    np.savez(tmp_path / "arrays.npz", real=np.ones((4, 4)), vol=stack, mask=mask)
    result = scan(tmp_path, SliceSpec.parse("all"))
    assert [ref.id for ref in result.refs] == [
        "arrays.npz#real",
        "arrays.npz#vol#axis0:0",
        "arrays.npz#vol#axis0:1",
        "arrays.npz#vol#axis0:2",
        "arrays.npz#mask",
    ]
    monkeypatch.chdir(tmp_path)
    np.testing.assert_array_equal(read_image("arrays.npz#mask"), mask.astype(np.float32))
    np.testing.assert_array_equal(read_image("arrays.npz#vol#axis0:2"), stack[2])
    np.testing.assert_array_equal(read_volume("arrays.npz#vol"), stack)
    with pytest.raises(ReadError, match=r"npz holds 3 arrays"):
        read_volume("arrays.npz")
    with pytest.raises(ReadError, match=r"npz has no array 'nope'"):
        read_image("arrays.npz#nope")


CORONAL = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=float)


@pytest.mark.parametrize(
    ("shape", "affine"),
    [((30, 40), CORONAL), ((30, 40, 1), CORONAL), ((30, 1, 40), np.eye(4)), ((1, 30, 40), np.eye(4))],
)
def test_nifti_plane_with_inner_singleton_is_2d(tmp_path: Path, shape: tuple[int, ...], affine: np.ndarray) -> None:
    data = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    path = _save_nifti(tmp_path / "plane.nii.gz", data, affine)
    # Every case is a plane whose axes already run R and S (or A and S): no flip.
    np.testing.assert_array_equal(read_image(path), data.reshape(30, 40))
    [ref] = scan(tmp_path).refs  # the header-only probe agrees
    assert (ref.id, ref.axis, ref.index) == ("plane.nii.gz", None, None)
    with pytest.raises(ReadError, match=r"plane\.nii\.gz: is 2D \(shape \(30, 40\)\)"):
        read_volume(path)


def test_npy_last_axis_of_3_or_4_is_colour(tmp_path: Path) -> None:
    rgba = np.random.default_rng(4).integers(0, 256, size=(5, 6, 4), dtype=np.uint8)
    rgb = rgba[..., :3].astype(np.float64)
    expected = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]).astype(np.float32)
    np.save(tmp_path / "rgb.npy", rgba[..., :3])
    np.save(tmp_path / "rgba.npy", rgba)  # alpha ignored
    np.savez(tmp_path / "c.npz", rgb=rgba[..., :3])
    np.save(tmp_path / "stack.npy", np.moveaxis(rgba[..., :3], 2, 0))  # 3 slices, saved slices first
    for name in ("rgb.npy", "rgba.npy", "c.npz"):
        np.testing.assert_allclose(read_image(tmp_path / name), expected, rtol=0, atol=1e-4)
    result = scan(tmp_path, SliceSpec.parse("all"))
    assert [ref.id for ref in result.refs] == ["c.npz#rgb", "rgb.npy", "rgba.npy"] + [f"stack.npy#axis0:{i}" for i in range(3)]
    for ref, image in result.load():
        assert image.shape == (5, 6)
