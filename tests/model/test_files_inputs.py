"""Bad and hostile inputs of ``embed`` and ``score``: files that fail only when read are
skipped and named with ``skip_unreadable``; pair paths stay inside the root; a pairs CSV
may start with a byte-order mark."""

from __future__ import annotations

import codecs
import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepssim.model import load_model
from deepssim.model.files import embed_folder, read_pairs_csv, score_pairs_csv
from deepssim.readers import ReadError, SliceSpec
from deepssim.readers.limits import set_max_pixels


@pytest.fixture
def mixed(image_folder: Path) -> Path:
    """``image_folder``'s five images, and three files that pass the header scan but fail when
    read: truncated pixel data, a NaN pixel, a volume whose middle slice is infinite."""
    png = (image_folder / "img0.png").read_bytes()
    (image_folder / "sub" / "truncated.png").write_bytes(png[: len(png) // 2])
    nan = np.random.default_rng(1).random((40, 36)).astype(np.float32)
    nan[5, 5] = np.nan
    np.save(image_folder / "nan.npy", nan)
    stack = np.random.default_rng(2).random((3, 40, 36)).astype(np.float32)
    stack[1, 0, 0] = np.inf
    np.save(image_folder / "stack.npy", stack)
    return image_folder


def test_embed_skips_what_fails_at_read_time_and_names_it(tiny_model_dir: Path, mixed: Path) -> None:
    model = load_model(tiny_model_dir, device="cpu")
    with pytest.raises(ReadError, match=r"nan\.npy: 1 of 1,440 pixel values are NaN"):
        embed_folder(model, mixed)
    for workers in (1, 3):
        skipped: list[ReadError] = []
        ids, emb = embed_folder(model, mixed, skip_unreadable=True, workers=workers, skipped=skipped)
        assert ids == ["img0.png", "img2.png", "img4.png", "sub/img1.png", "sub/img3.png"]
        assert emb.shape == (5, 16)
        assert [str(e.path) for e in skipped] == [str(mixed / "nan.npy"), str(mixed / "stack.npy#axis0:1"),
                                                  str(mixed / "sub" / "truncated.png")]
    ids, _ = embed_folder(model, mixed, skip_unreadable=True, slices=SliceSpec.parse("all"))
    assert "stack.npy#axis0:0" in ids and "stack.npy#axis0:2" in ids  # the stack's good slices embed
    assert "stack.npy#axis0:1" not in ids


def test_embed_skips_a_bomb_among_good_files(tiny_model_dir: Path, image_folder: Path) -> None:
    np.save(image_folder / "big.npy", np.zeros((60, 60), dtype=np.uint8))  # 3,600 pixels
    model = load_model(tiny_model_dir, device="cpu")
    set_max_pixels(3_000)  # the others have at most 56 x 36 = 2,016
    try:
        with pytest.raises(ReadError, match=r"1 unreadable file\(s\): .*big\.npy: 60 x 60 = 3,600 pixels"):
            embed_folder(model, image_folder)
        skipped: list[ReadError] = []
        ids, _ = embed_folder(model, image_folder, skip_unreadable=True, skipped=skipped, workers=2)
    finally:
        set_max_pixels(None)
    assert len(ids) == 5 and "big.npy" not in ids
    assert [e.path for e in skipped] == [image_folder / "big.npy"]


def test_nothing_readable_is_an_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "nan.npy", np.full((8, 8), np.nan, dtype=np.float32))
    with pytest.raises(ReadError, match=r"no readable image found \(1 unreadable\)"):
        embed_folder(load_model(tiny_model_dir, device="cpu"), tmp_path, skip_unreadable=True)


def test_embed_command_lists_the_skipped_files(tiny_model_dir: Path, mixed: Path, tmp_path: Path) -> None:
    out = tmp_path / "emb.npz"
    done = subprocess.run([sys.executable, "-m", "deepssim", "embed", str(tiny_model_dir), "--images", str(mixed),
                           "--out", str(out), "--device", "cpu", "--skip-unreadable"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "5 embeddings of dimension 16" in done.stdout
    assert "3 unreadable file(s) skipped:" in done.stderr
    assert f"  {mixed / 'sub' / 'truncated.png'}: corrupt or truncated image" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(np.load(out)["ids"]) == ["img0.png", "img2.png", "img4.png", "sub/img1.png", "sub/img3.png"]


def test_score_refuses_paths_outside_the_root(tiny_model_dir: Path, image_folder: Path, tmp_path: Path) -> None:
    model = load_model(tiny_model_dir, device="cpu")
    outside = tmp_path / "outside.png"
    Image.fromarray(np.zeros((20, 20), dtype=np.uint8)).save(outside)
    (image_folder / "sub" / "door").symlink_to(tmp_path, target_is_directory=True)
    cases = {"../outside.png": "real", str(outside): "synthetic", "sub/door/outside.png": "synthetic"}
    for name, column in cases.items():
        pairs = tmp_path / "pairs.csv"
        row = f"{name},img0.png" if column == "real" else f"img0.png,{name}"
        pairs.write_text(f"real,synthetic\nimg2.png,img4.png\n{row}\n")
        with pytest.raises(ReadError) as info:
            score_pairs_csv(model, pairs, image_folder)
        assert str(info.value).startswith(f"{pairs}, line 3, column {column}: {name!r} leads outside the root folder")
        _, rows = score_pairs_csv(model, pairs, image_folder, allow_outside_root=True)
        assert len(rows) == 2 and all(-1 <= float(r["score"]) <= 1 for r in rows)
    empty = tmp_path / "empty.csv"
    empty.write_text("real,synthetic\nimg2.png,\n")
    with pytest.raises(ValueError, match=r"empty\.csv, line 2: column synthetic is empty"):
        score_pairs_csv(model, empty, image_folder)


def test_score_command_option(tiny_model_dir: Path, image_folder: Path, tmp_path: Path) -> None:
    Image.fromarray(np.zeros((20, 20), dtype=np.uint8)).save(tmp_path / "outside.png")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("real,synthetic\nimg0.png,sub/../img2.png\nimg0.png,../outside.png\n")
    command = [sys.executable, "-m", "deepssim", "score", str(tiny_model_dir), "--pairs", str(pairs),
               "--root", str(image_folder), "--device", "cpu"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr == (f"deepssim score: error: {pairs}, line 3, column synthetic: '../outside.png' leads "
                           f"outside the root folder {image_folder} (to {tmp_path / 'outside.png'}); paths must "
                           "stay inside it unless allowed (--allow-outside-root, or allow_outside_root=True)\n")
    done = subprocess.run([*command, "--allow-outside-root"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(done.stdout.splitlines()))
    assert [r["synthetic"] for r in rows] == ["sub/../img2.png", "../outside.png"]


def test_pairs_csv_with_a_byte_order_mark(tiny_model_dir: Path, image_folder: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_bytes(codecs.BOM_UTF8 + b"real,synthetic,note\r\nimg0.png,img2.png,x\r\n")
    header, rows = read_pairs_csv(pairs)
    assert header == ["real", "synthetic", "note"] and rows == [{"real": "img0.png", "synthetic": "img2.png", "note": "x"}]
    header, scored = score_pairs_csv(load_model(tiny_model_dir, device="cpu"), pairs, image_folder)
    assert header == ["real", "synthetic", "note", "score"] and -1 <= float(scored[0]["score"]) <= 1
