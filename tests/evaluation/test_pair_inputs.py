"""Hostile pair files: image paths that leave the root folder are refused by file, line and
path unless allowed; pair files saved with a byte-order mark read like any other."""

from __future__ import annotations

import codecs
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepssim.cli import main
from deepssim.evaluation import RunSettings, detect_format, evaluate, read_pair_file
from deepssim.readers import ReadError
from deepssim.readers.ids import check_inside_root, outside_root


def _png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, size=(16, 16), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """A root with train/ and synthetic_clean/ images, a secret image beside the root, and a
    symbolic link inside the root that leads to the secret's folder."""
    root = tmp_path / "bench"
    _png(root / "train" / "a.png", 1)
    _png(root / "synthetic" / "s.png", 2)
    _png(root / "synthetic_clean" / "s.png", 2)
    secret = _png(tmp_path / "private" / "secret.png", 3)
    (root / "train" / "door").symlink_to(secret.parent, target_is_directory=True)
    return root, secret


def _pairs(path: Path, *rows: str, bom: bool = False) -> Path:
    text = "real,synthetic,label\n" + "".join(f"{row}\n" for row in rows)
    path.write_bytes((codecs.BOM_UTF8 if bom else b"") + text.encode())
    return path


def test_the_rule_for_inside_the_root(layout: tuple[Path, Path]) -> None:
    root, secret = layout
    for name in ("train/a.png", "train/../train/a.png", "./synthetic/s.png", "a.npz#key", "vol.nii.gz#axis2:3",
                 "not/there/yet.png", "train\\..\\..\\x.png"):  # a backslash is a name character here
        assert outside_root(root, name) is None, name
    assert outside_root(root, "../private/secret.png") == secret
    assert outside_root(root, str(secret)) == secret
    assert outside_root(root, "train/door/secret.png") == secret.resolve()
    assert outside_root(root, "train/a.png#/../../../../private/secret.png") is not None  # any '#' cut
    with pytest.raises(ReadError) as info:
        check_inside_root(root, "../private/secret.png", "list.csv, line 7, column real")
    assert str(info.value) == (
        f"list.csv, line 7, column real: '../private/secret.png' leads outside the root folder {root} "
        f"(to {secret}); paths must stay inside it unless allowed (--allow-outside-root, or allow_outside_root=True)")


@pytest.mark.parametrize(("row", "line", "column", "name"), [
    ("../private/secret.png,synthetic/s.png,duplicate", 3, "real", "../private/secret.png"),
    ("ABSOLUTE,synthetic/s.png,similar", 3, "real", "ABSOLUTE"),
    ("train/door/secret.png,synthetic/s.png,different", 3, "real", "train/door/secret.png"),
    # The registered condition reads the clean twin, which must stay inside too.
    ("train/a.png,synthetic/../../private/secret.png,different", 3, "synthetic",
     "synthetic_clean/../../private/secret.png"),
])
def test_benchmark_pair_paths_that_leave_the_root(
    layout: tuple[Path, Path], tmp_path: Path, row: str, line: int, column: str, name: str
) -> None:
    root, secret = layout
    row, name = row.replace("ABSOLUTE", str(secret)), name.replace("ABSOLUTE", str(secret))
    pairs = _pairs(tmp_path / "pairs.csv", "train/a.png,synthetic/s.png,duplicate", row)
    with pytest.raises(ReadError) as info:
        read_pair_file(pairs, root)
    assert str(info.value).startswith(f"{pairs}, line {line}, column {column}: {name!r} leads outside the root "
                                      f"folder {root}")
    allowed = read_pair_file(pairs, root, allow_outside_root=True)
    assert len(allowed) == 2


def test_reference_keys_that_leave_the_root(layout: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = layout
    pairs = tmp_path / "ref.csv"
    pairs.write_text("real_key,synth_key,label\ntrain___a,synthetic_clean___s,1\ntrain___a,..___x,0\n")
    with pytest.raises(ReadError, match=r"ref\.csv, line 3, column synth_key: '\.\./x\.png' leads outside"):
        read_pair_file(pairs, root)
    assert read_pair_file(pairs, root, allow_outside_root=True).synthetic[1] == "../x.png"


def test_the_default_root_is_the_pair_files_folder(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    pairs = _pairs(root / "pairs.csv", "train/a.png,synthetic/s.png,duplicate", "../private/secret.png,synthetic/s.png,different")
    with pytest.raises(ReadError, match=r"line 3, column real: '\.\./private/secret\.png' leads outside"):
        read_pair_file(pairs)


def test_evaluate_refuses_then_allows(layout: tuple[Path, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    root, secret = layout
    shutil.copy(secret, root / "train" / "copy.png")
    pairs = _pairs(tmp_path / "pairs.csv", "train/a.png,synthetic/s.png,different",
                   "train/copy.png,synthetic/s.png,similar", "../private/secret.png,synthetic/s.png,duplicate")
    with pytest.raises(ReadError, match="line 4, column real"):
        evaluate(pairs, "ssim", settings=RunSettings(root=root, n_bootstrap=10))
    allowed = evaluate(pairs, "ssim", settings=RunSettings(root=root, n_bootstrap=10, allow_outside_root=True))
    assert allowed.n_pairs == 3
    args = ["evaluate", "--pairs", str(pairs), "--root", str(root), "--metric", "ssim", "--no-progress",
            "--bootstrap", "10", "--json"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"deepssim evaluate: error: {pairs}, line 4, column real: '../private/secret.png' leads outside" in err
    assert "--allow-outside-root" in err
    assert main([*args, "--allow-outside-root"]) == 0
    assert '"n_pairs": 3' in capsys.readouterr().out


def test_pair_files_with_a_byte_order_mark(layout: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = layout
    plain = _pairs(tmp_path / "plain.csv", "train/a.png,synthetic/s.png,duplicate")
    marked = _pairs(tmp_path / "marked.csv", "train/a.png,synthetic/s.png,duplicate", bom=True)
    assert detect_format(marked) == "benchmark"
    a, b = read_pair_file(plain, root), read_pair_file(marked, root)
    assert (a.real, a.synthetic, list(a.labels)) == (b.real, b.synthetic, list(b.labels)) == (
        ("train/a.png",), ("synthetic_clean/s.png",), [2])
    reference = tmp_path / "ref.csv"
    reference.write_bytes(codecs.BOM_UTF8 + b"real_key,synth_key,label,ssim\r\ntrain___a,synthetic_clean___s,2,0.7\r\n")
    assert detect_format(reference) == "reference"
    assert read_pair_file(reference, root).real == ("train/a.png",)
    spaced = tmp_path / "spaced.csv"
    spaced.write_text("real, synthetic ,label\ntrain/a.png,synthetic/s.png,similar\n")  # spaces around names
    assert read_pair_file(spaced, root).synthetic == ("synthetic_clean/s.png",)


def test_pair_files_that_are_not_utf8_text(tmp_path: Path) -> None:
    utf16 = tmp_path / "utf16.csv"
    utf16.write_text("real,synthetic,label\na.png,b.png,similar\n", encoding="utf-16")
    with pytest.raises(ValueError, match=rf"{utf16}: not UTF-8 text \(invalid start byte at byte 0\); save it as UTF-8"):
        read_pair_file(utf16)
    nul = tmp_path / "nul.csv"
    nul.write_bytes(b"real,synthetic,label\na\x00.png,synthetic/b.png,similar\n")
    with pytest.raises(ReadError, match=r"nul\.csv, line 2, column real: 'a\\x00\.png' holds a NUL character"):
        read_pair_file(nul)
    with pytest.raises(ReadError, match="holds a NUL character"):
        read_pair_file(nul, allow_outside_root=True)  # allowing other folders does not make it a path
