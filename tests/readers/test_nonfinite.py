"""NaN and infinite pixels: the image (or the volume's slice) is unreadable, named, and a
reading that skips unreadable files skips it and reads the rest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepssim.readers import ReadError, SliceSpec, load_ref, read_image, read_slices, scan
from deepssim.readers.read import read_runs, read_skipping

nib = pytest.importorskip("nibabel")


def _finite(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return (rng.random(shape) + 1).astype(np.float32)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Good and bad files of each format that can hold floats."""
    rng = np.random.default_rng(0)
    Image.fromarray(_finite(rng, (16, 16)), mode="F").save(tmp_path / "good.tif")
    bad = _finite(rng, (16, 16))
    bad[3, 4] = np.nan
    Image.fromarray(bad, mode="F").save(tmp_path / "nan.tif")
    inf = _finite(rng, (16, 16))
    inf[0, :2] = [np.inf, -np.inf]
    np.save(tmp_path / "inf.npy", inf)
    np.savez(tmp_path / "arrays.npz", good=_finite(rng, (8, 8)), bad=inf)
    volume = _finite(rng, (8, 8, 5))
    volume[2, 3, 2] = np.nan  # in the middle slice along axis 2 only
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "vol.nii.gz")
    stack = _finite(rng, (3, 8, 8))
    stack[1, 0, 0] = np.inf
    np.save(tmp_path / "stack.npy", stack)
    return tmp_path


def test_each_format_names_the_file_and_the_count(folder: Path) -> None:
    cases = {
        "nan.tif": "1 of 256 pixel values are NaN",
        "inf.npy": "2 of 256 pixel values are infinite",
        "arrays.npz#bad": "2 of 256 pixel values are infinite",
        "vol.nii.gz#axis2:2": "1 of 64 pixel values are NaN",
        "stack.npy#axis0:1": "1 of 64 pixel values are infinite",
    }
    for name, count in cases.items():
        with pytest.raises(ReadError) as info:
            read_image(folder / name)
        assert str(info.value) == (f"{folder / name}: {count}; an image must hold finite numbers "
                                   "(fix the file, or leave it out with --skip-unreadable)")
    # The volume's other slices read.
    assert read_image(folder / "vol.nii.gz#axis2:1").shape == (8, 8)
    assert read_image(folder / "arrays.npz#good").shape == (8, 8)


def test_read_slices_and_load_ref_refuse_the_slice(folder: Path) -> None:
    with pytest.raises(ReadError, match=r"^vol\.nii\.gz#axis2:2: 1 of 64 pixel values are NaN"):
        read_slices(folder / "vol.nii.gz", SliceSpec.parse("all"))
    refs = {ref.id: ref for ref in scan(folder, SliceSpec.parse("all")).refs}
    with pytest.raises(ReadError, match=r"^stack\.npy#axis0:1: 1 of 64 pixel values are infinite"):
        load_ref(refs["stack.npy#axis0:1"])
    assert load_ref(refs["stack.npy#axis0:2"]).shape == (8, 8)


def test_skipping_reads_every_other_image(folder: Path) -> None:
    result = scan(folder, SliceSpec.parse("all"))
    assert result.errors == []  # a header scan cannot see the values
    ids = [ref.id for ref in result.refs]
    for workers in (1, 3):
        done: list[int] = []
        failed: list[ReadError] = []
        images = list(read_skipping(result.refs, skip=True, done=done, failed=failed, workers=workers))
        assert [ids[k] for k in done] == [
            "arrays.npz#good", "good.tif", "stack.npy#axis0:0", "stack.npy#axis0:2",
            "vol.nii.gz#axis2:0", "vol.nii.gz#axis2:1", "vol.nii.gz#axis2:3", "vol.nii.gz#axis2:4"]
        assert len(images) == len(done) and all(np.isfinite(image).all() for image in images)
        # Named by absolute path (and slice), wherever the scan started.
        assert [e.path for e in failed] == [f"{folder}/{name}" for name in (
            "arrays.npz#bad", "inf.npy", "nan.tif", "stack.npy#axis0:1", "vol.nii.gz#axis2:2")]
    with pytest.raises(ReadError, match=r"arrays\.npz#bad: 2 of 256"):
        list(read_skipping(result.refs, skip=False, done=[], failed=[]))


def test_a_bad_slice_is_a_run_of_its_own(folder: Path) -> None:
    refs = scan(folder / "vol.nii.gz", SliceSpec.parse("all")).refs
    runs = [([ref.id for ref in run], isinstance(images, ReadError)) for run, images in read_runs(refs)]
    assert runs == [(["vol.nii.gz#axis2:0", "vol.nii.gz#axis2:1"], False), (["vol.nii.gz#axis2:2"], True),
                    (["vol.nii.gz#axis2:3", "vol.nii.gz#axis2:4"], False)]


def test_skip_empty_keeps_the_bad_slice_listed(folder: Path) -> None:
    # An infinite value does not make every other slice look empty; the slice is refused when read.
    volume = np.zeros((8, 8, 4), dtype=np.float32)
    volume[2:6, 2:6, 1:3] = 5.0
    volume[0, 0, 2] = np.inf
    nib.save(nib.Nifti1Image(volume, np.eye(4)), folder / "spiky.nii.gz")
    kept = [ref.id for ref in scan(folder / "spiky.nii.gz", SliceSpec.parse("all", skip_empty=True)).refs]
    assert kept == ["spiky.nii.gz#axis2:1", "spiky.nii.gz#axis2:2"]
