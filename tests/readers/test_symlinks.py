"""Symbolic links and special files in a scanned folder: linked folders and files are read,
each real folder once; loops end and are listed; broken links, pipes and devices are
unreadable files, named, and never opened."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepssim.readers import ReadError, read_image, scan


def _png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, size=(8, 8), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the scanned tree: two images, one in a sub-folder."""
    folder = tmp_path / "elsewhere"
    _png(folder / "c.png", 3)
    _png(folder / "deep" / "d.png", 4)
    return folder


@pytest.fixture
def root(tmp_path: Path, outside: Path) -> Path:
    """Five images, two of them only reachable through a symbolic link to a folder."""
    root = tmp_path / "data"
    _png(root / "a.png", 1)
    _png(root / "sub" / "b.png", 2)
    _png(root / "sub" / "e.png", 5)
    (root / "linked").symlink_to(outside, target_is_directory=True)
    return root


def test_a_linked_folder_is_walked(root: Path) -> None:
    result = scan(root)
    assert [ref.id for ref in result.refs] == ["a.png", "linked/c.png", "linked/deep/d.png", "sub/b.png", "sub/e.png"]
    assert result.errors == [] and result.skipped_folders == []
    assert result.refs[1].path == root / "linked" / "c.png"  # the path through the link


def test_a_linked_file_is_read(root: Path, outside: Path) -> None:
    (root / "sub" / "alias.png").symlink_to(outside / "c.png")
    (root / "again.png").symlink_to(root / "a.png")
    ids = [ref.id for ref in scan(root).refs]
    assert "sub/alias.png" in ids and "again.png" in ids and len(ids) == 7


def test_loops_end_and_are_listed(root: Path, outside: Path) -> None:
    (root / "sub" / "up").symlink_to("..", target_is_directory=True)  # a loop to the scanned folder
    (root / "sub" / "self").symlink_to(".", target_is_directory=True)  # a loop to its own folder
    (outside / "deep" / "back").symlink_to(outside, target_is_directory=True)  # a loop behind a link
    (root / "twin").symlink_to(outside, target_is_directory=True)  # a second link to one folder
    (root / "shortcut").symlink_to(root / "sub", target_is_directory=True)  # a link into the tree
    result = scan(root)
    assert [ref.id for ref in result.refs] == ["a.png", "linked/c.png", "linked/deep/d.png", "sub/b.png", "sub/e.png"]
    assert result.errors == []
    assert result.skipped_folders == [
        f"linked/deep/back: symbolic link to {os.path.realpath(outside)}, which is scanned once, where it lies "
        "(a link loop or a second link)",
        "shortcut: symbolic link to 'sub' of this scan, which is scanned once, where it lies (a link loop or a second link)",
        "sub/self: symbolic link to 'sub' of this scan, which is scanned once, where it lies (a link loop or a second link)",
        "sub/up: symbolic link to the scanned folder itself, which is scanned once, where it lies (a link loop or a "
        "second link)",
        f"twin: symbolic link to {os.path.realpath(outside)}, which is scanned once, where it lies (a link loop or a "
        "second link)",
    ]


def test_a_scan_through_a_linked_root(tmp_path: Path, root: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(root, target_is_directory=True)
    (root / "sub" / "up").symlink_to("..", target_is_directory=True)
    result = scan(alias)
    assert result.root == alias and len(result.refs) == 5
    assert [entry.split(":")[0] for entry in result.skipped_folders] == ["sub/up"]


def test_broken_links_are_unreadable_and_named(root: Path) -> None:
    (root / "gone.png").symlink_to(root / "nowhere.png")
    (root / "sub" / "IM0001").symlink_to("missing-dicom")  # no suffix: could be a DICOM file
    (root / "circle.nii.gz").symlink_to("circle.nii.gz")  # a link to itself
    (root / "notes.txt").symlink_to("nowhere.txt")  # not an image by name: ignored like any .txt
    (root / "hollow").symlink_to(root / "no-folder", target_is_directory=True)
    result = scan(root)
    assert len(result.refs) == 5
    assert [(e.path, e.reason) for e in result.errors] == [
        (root / "circle.nii.gz", "broken symbolic link to circle.nii.gz (the target is missing, or links loop)"),
        (root / "gone.png", f"broken symbolic link to {root / 'nowhere.png'} (the target is missing, or links loop)"),
        (root / "hollow", f"broken symbolic link to {root / 'no-folder'} (the target is missing, or links loop)"),
        (root / "sub" / "IM0001", "broken symbolic link to missing-dicom (the target is missing, or links loop)"),
    ]
    assert result.ignored == ["notes.txt"]
    with pytest.raises(ReadError, match=r"4 unreadable file\(s\): .*circle\.nii\.gz: broken symbolic link"):
        result.require_images()
    result.require_images(skip_unreadable=True)  # the five images remain


def test_a_folder_that_cannot_be_listed_is_an_error(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = root / "locked"
    _png(locked / "x.png", 9)
    listing = os.scandir

    def refuse(path: str | os.PathLike[str] = ".") -> object:
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return listing(path)

    monkeypatch.setattr(os, "scandir", refuse)  # what a folder without read permission does
    result = scan(root)
    assert len(result.refs) == 5
    assert [(e.path, e.reason) for e in result.errors] == [(str(locked), "cannot list the folder: Permission denied")]


def test_pipes_and_devices_are_not_opened(root: Path) -> None:
    os.mkfifo(root / "pipe.png")  # opening it would wait for a writer forever
    os.mkfifo(root / "IM0002")  # no suffix: not even its DICOM marker is looked for
    (root / "zero.npy").symlink_to("/dev/zero")
    result = scan(root)
    assert len(result.refs) == 5 and result.ignored == ["IM0002"]
    reason = "not a regular file (a pipe, socket or device): not read"
    assert [(e.path, e.reason) for e in result.errors] == [(root / "pipe.png", reason), (root / "zero.npy", reason)]
    for path in (root / "pipe.png", root / "zero.npy"):
        with pytest.raises(ReadError, match=r"not a regular file"):
            read_image(path)
        with pytest.raises(ReadError, match=r"not a regular file"):
            scan(path)
