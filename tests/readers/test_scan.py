"""Folder scans: order, errors by name, hidden files, id round trip, one read per file."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepssim.readers import ReadError, SliceSpec, load_ref, read_slices, resolve_id, scan
from deepssim.readers.read import MAX_READING_WORKERS, read_runs, reading_workers
from deepssim.readers.npy import NpyReader

nib = pytest.importorskip("nibabel")


@pytest.fixture
def tree(tmp_path: Path, dicom_series: tuple[Path, np.ndarray]) -> Path:
    """A mixed tree: images, arrays, a NIfTI volume, a DICOM series, junk and hidden files."""
    rng = np.random.default_rng(7)
    grey = rng.integers(0, 256, size=(8, 8), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "b.png")
    Image.fromarray(grey).save(tmp_path / "a.JPG")
    (tmp_path / "sub").mkdir()
    Image.fromarray(grey).save(tmp_path / "sub" / "z.bmp")
    (tmp_path / "sub" / "corrupt.png").write_text("not a png")
    (tmp_path / "sub" / "notes.txt").write_text("ignored")
    np.save(tmp_path / "sub" / "stack.npy", rng.normal(size=(3, 8, 8)))
    np.savez(tmp_path / "sub" / "arrays.npz", second=grey, first=rng.normal(size=(2, 8, 8)))
    volume = np.zeros((8, 8, 6), dtype=np.float32)
    volume[2:6, 2:6, 1:4] = rng.uniform(10, 20, size=(4, 4, 3))
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "sub" / "vol.nii.gz")
    Image.fromarray(grey).save(tmp_path / ".hidden.png")
    (tmp_path / ".git").mkdir()
    Image.fromarray(grey).save(tmp_path / ".git" / "x.png")
    return tmp_path


EXPECTED_ALL = [
    "a.JPG",
    "b.png",
    *[f"patient1/series3#axis2:{i}" for i in range(5)],
    "sub/arrays.npz#second",
    "sub/arrays.npz#first#axis0:0",
    "sub/arrays.npz#first#axis0:1",
    *[f"sub/stack.npy#axis0:{i}" for i in range(3)],
    *[f"sub/vol.nii.gz#axis2:{i}" for i in range(6)],
    "sub/z.bmp",
]


def test_scan_lists_everything_sorted_and_reports_corrupt(tree: Path) -> None:
    result = scan(tree, SliceSpec.parse("all"))
    assert [ref.id for ref in result.refs] == EXPECTED_ALL
    assert [(e.path, "not an image file" in e.reason) for e in result.errors] == [(tree / "sub" / "corrupt.png", True)]
    assert result.ignored == ["sub/notes.txt"]
    assert result.root == tree
    again = scan(tree, SliceSpec.parse("all"))  # deterministic
    assert again.refs == result.refs and list(map(str, again.errors)) == list(map(str, result.errors))


def test_scan_center_and_skip_empty(tree: Path) -> None:
    center = [ref.id for ref in scan(tree).refs if "#axis" in ref.id]
    assert center == ["patient1/series3#axis2:2", "sub/arrays.npz#first#axis0:1", "sub/stack.npy#axis0:1", "sub/vol.nii.gz#axis2:3"]
    kept = [ref.id for ref in scan(tree / "sub" / "vol.nii.gz", SliceSpec.parse("all", skip_empty=True)).refs]
    assert kept == ["vol.nii.gz#axis2:1", "vol.nii.gz#axis2:2", "vol.nii.gz#axis2:3"]


@pytest.mark.parametrize("select", ["all", "center"])
def test_id_round_trip(tree: Path, select: str) -> None:
    result = scan(tree, SliceSpec.parse(select))
    loaded = list(result.load())
    assert [ref for ref, _ in loaded] == result.refs
    for ref, image in loaded:
        assert resolve_id(tree, ref.id) == ref
        assert image.ndim == 2 and image.dtype == np.float32
        np.testing.assert_array_equal(load_ref(ref), image)


@pytest.mark.parametrize("workers", [1, 3])
def test_load_reads_each_file_once_in_given_order(
    tree: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    result = scan(tree / "sub", SliceSpec.parse("all"))
    reads: Counter[Path] = Counter()
    original = NpyReader.read

    def counting(self: NpyReader, path: Path, member: str | None = None) -> np.ndarray:
        reads[path] += 1
        return original(self, path, member)

    monkeypatch.setattr(NpyReader, "read", counting)
    stack = [ref for ref in result.refs if ref.id.startswith("stack.npy")]
    shuffled = [stack[2], result.refs[0], stack[0], stack[1]]
    assert [ref for ref, _ in result.load(shuffled, workers=workers)] == shuffled
    assert reads == {tree / "sub" / "stack.npy": 1}


def test_scan_of_single_file_and_progress(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = scan(tree / "sub" / "stack.npy", progress=True)
    assert result.root == tree / "sub" and [ref.id for ref in result.refs] == ["stack.npy#axis0:1"]
    list(result.load(progress=True))
    assert "scanning" in capsys.readouterr().err


def test_read_slices_ids_relative_to_root(tree: Path) -> None:
    slices = read_slices(tree / "sub" / "vol.nii.gz", SliceSpec.parse("1:3"), root=tree)
    assert [ref.id for ref, _ in slices] == ["sub/vol.nii.gz#axis2:1", "sub/vol.nii.gz#axis2:2"]
    folder = read_slices(tree / "patient1" / "series3")
    assert [ref.id for ref, _ in folder] == ["series3#axis2:2"]


@pytest.mark.parametrize("workers", [2, 5])
def test_reading_threads_give_the_same_images_in_the_same_order(tree: Path, workers: int) -> None:
    result = scan(tree, SliceSpec.parse("all"))
    one = list(result.load())
    many = list(result.load(workers=workers))
    assert [ref for ref, _ in many] == [ref for ref, _ in one] == result.refs
    for (_, a), (_, b) in zip(one, many, strict=True):
        np.testing.assert_array_equal(a, b)
    halves = list(result.load(workers=workers, transform=lambda image: image[::2, ::2]))
    for (_, a), (_, b) in zip(one, halves, strict=True):
        np.testing.assert_array_equal(a[::2, ::2], b)


def test_reading_threads_raise_a_read_error_where_the_file_is(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = scan(tree / "sub", SliceSpec.parse("all"))
    bad = tree / "sub" / "stack.npy"
    original = NpyReader.read

    def failing(self: NpyReader, path: Path, member: str | None = None) -> np.ndarray:
        if path == bad:
            raise ReadError(path, "truncated after the header")
        return original(self, path, member)

    monkeypatch.setattr(NpyReader, "read", failing)
    first_bad = next(k for k, ref in enumerate(result.refs) if ref.path == bad)
    got = []
    with pytest.raises(ReadError, match="stack.npy.*truncated"):
        for ref, _ in result.load(workers=3):
            got.append(ref)
    assert got == result.refs[:first_bad]
    # read_runs hands the error over in its place and goes on (the audit's --skip-unreadable).
    runs = list(read_runs(result.refs, workers=3))
    assert [ref for run, _ in runs for ref in run] == result.refs
    assert [run[0].path for run, images in runs if isinstance(images, ReadError)] == [bad]


def test_reading_threads_stop_with_the_consumer_and_bad_counts(tree: Path) -> None:
    result = scan(tree, SliceSpec.parse("all"))
    loading = result.load(workers=4)
    next(loading)
    loading.close()  # the threads are shut down: nothing is left queued
    assert not [t for t in threading.enumerate() if t.name.startswith("deepssim-read")]
    with pytest.raises(RuntimeError, match="consumer"):
        for _ in result.load(workers=4):
            raise RuntimeError("the consumer fails")
    assert not [t for t in threading.enumerate() if t.name.startswith("deepssim-read")]
    with pytest.raises(ValueError, match="workers"):
        list(result.load(workers=0))
    assert 1 <= reading_workers() <= MAX_READING_WORKERS and reading_workers(3) == 3
    with pytest.raises(ValueError, match="workers"):
        reading_workers(0)
