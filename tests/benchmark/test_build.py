"""``deepssim benchmark build`` on a few dozen tiny numpy-made images."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from deepssim import ReadError, read_image, ssim_matrix, ssim_pairs
from deepssim.benchmark import (
    build_benchmark,
    classify,
    load_benchmark_info,
    read_audit_csv,
    read_pairs_csv,
)
from deepssim.benchmark.copies import MEMORIZED_CLASSES, shares
from deepssim.benchmark.split import group_images
from deepssim.benchmark.write import to_uint16

N_SUBJECTS = 30
GROUP_BY = r"subj(\d+)_"
PARAMS = dict(n_train=30, n_synthetic=24, size=32, group_by=GROUP_BY, seed=3, progress=False)


def _make_images(root: Path) -> Path:
    """Two smooth random images per subject, plus an exact file copy and a pixel-identical
    TIFF of two of them (ids that the group regex does not match)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for s in range(N_SUBJECTS):
        for k in range(2):
            field = ndimage.gaussian_filter(rng.standard_normal((40, 44)), 2.0)
            field = (field - field.min()) / (field.max() - field.min()) * 255
            Image.fromarray(field.astype(np.uint8)).save(root / f"subj{s:02d}_{k}.png")
    shutil.copy(root / "subj00_0.png", root / "copy_of_00.png")
    Image.open(root / "subj05_1.png").save(root / "same_pixels_05.tif")
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_images(tmp_path_factory.mktemp("real") / "images")


@pytest.fixture(scope="module")
def bench(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "b"
    build_benchmark([images], out, **PARAMS)
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _subject(image_id: str) -> str:
    m = re.search(GROUP_BY, image_id)
    return m.group(1) if m else image_id


def test_layout_files_and_columns(bench: Path) -> None:
    train = sorted(p.relative_to(bench).as_posix() for p in (bench / "train").rglob("*.png"))
    clean = sorted(p.name for p in (bench / "synthetic_clean").iterdir())
    perturbed = sorted(p.name for p in (bench / "synthetic").iterdir())
    assert len(train) == 30
    assert clean == perturbed and len(clean) == 24
    with Image.open(bench / "synthetic" / clean[0]) as im:
        assert (im.mode, im.size) == ("I;16", (32, 32))
    with Image.open(bench / train[0]) as im:
        assert (im.mode, im.size) == ("I;16", (32, 32))
    assert list(_rows(bench / "pairs.csv")[0])[:3] == ["real", "synthetic", "label"]
    assert list(_rows(bench / "audit.csv")[0])[:4] == ["synthetic", "nearest_train", "nearest_ssim", "is_copy"]
    for pair in read_pairs_csv(bench):
        assert (bench / pair.real).is_file() and pair.real.startswith("train/")
        assert (bench / pair.synthetic).is_file() and pair.synthetic.startswith("synthetic/")
        assert (bench / pair.clean).is_file()
    info = load_benchmark_info(bench)
    assert info["parameters"]["seed"] == 3 and info["parameters"]["n_train"] == 30
    assert info["counts"]["synthetic"] == 24 and info["counts"]["memorized"] == 12
    assert info["sources"]["images_found"] == 2 * N_SUBJECTS + 2
    assert sum(info["counts"]["pairs_by_label"].values()) == len(read_pairs_csv(bench))
    assert info["deepssim_version"]


def test_labels_are_the_engine_classes_of_the_written_files(bench: Path) -> None:
    pairs = read_pairs_csv(bench)
    real = [read_image(bench / p.real) for p in pairs]
    clean = [read_image(bench / p.clean) for p in pairs]
    values = ssim_pairs(real, clean, device="cpu", progress=False)
    assert [classify(v) for v in values] == [p.label for p in pairs]
    np.testing.assert_allclose([p.ssim for p in pairs], values, atol=1e-9)
    assert {p.label for p in pairs} == {"different", "similar", "duplicate"}
    # Every synthetic image's source (members) and best match are among its pairs.
    kinds = {(p.synthetic, p.kind) for p in pairs}
    members = {r["synthetic"] for r in _rows(bench / "synthetic.csv") if r["member"] == "1"}
    assert {s for s, k in kinds if k == "source"} == members
    assert all(p.kind in ("source", "best", "hard", "random") for p in pairs)


def test_audit_is_the_oracle_nearest_training_image(bench: Path) -> None:
    audit = read_audit_csv(bench)
    train = sorted(p.relative_to(bench).as_posix() for p in (bench / "train").rglob("*.png"))
    matrix = ssim_matrix([read_image(bench / t) for t in train],
                         [read_image(bench / a.synthetic.replace("synthetic/", "synthetic_clean/")) for a in audit],
                         device="cpu", progress=False)
    for k, row in enumerate(audit):
        column = matrix[:, k]
        assert row.nearest_ssim == pytest.approx(column.max(), abs=1e-9)
        assert train[int(np.argmax(column))] in row.nearest_all
        assert row.is_copy == (column.max() > 0.85)
    # The exact file copy is in the data: if it and its twin are in train, each is a tie.
    assert len({a.synthetic for a in audit}) == 24
    pairs = read_pairs_csv(bench)
    best = {(p.real, p.synthetic) for p in pairs if p.kind in ("source", "best")}
    assert all(any((n, a.synthetic) in best for n in a.nearest_all) for a in audit)


def test_groups_are_never_split(bench: Path) -> None:
    train_ids = {r["origin_id"] for r in _rows(bench / "train.csv")}
    synthetic = _rows(bench / "synthetic.csv")
    nonmember_ids = {r["origin_id"] for r in synthetic if r["member"] == "0"}
    assert len(nonmember_ids) == 12
    assert not {_subject(i) for i in train_ids} & {_subject(i) for i in nonmember_ids}
    for twins in ({"subj00_0.png", "copy_of_00.png"}, {"subj05_1.png", "same_pixels_05.tif"}):
        assert twins <= train_ids or not twins & train_ids
        assert not (twins & train_ids and twins & nonmember_ids)
    assert all(r["source"] for r in synthetic if r["member"] == "1")


def test_identical_images_share_a_group_without_a_regex() -> None:
    a, b, c = (np.full((8, 8), v, np.uint16) for v in (1, 2, 1))
    group = group_images(["x/1.png", "y/2.png", "z/3.jpg"], [a, b, c], None)
    assert group[0] == group[2] != group[1]
    group = group_images(["s1_a", "s1_b", "s2_a", "other"], [a, b, a.copy() + 5, b], r"s(\d)_")
    assert group[0] == group[1]  # by the regex
    assert group[3] == group[1]  # pixel-identical to s1_b
    assert group[2] != group[0]


def test_same_seed_same_bytes(bench: Path, images: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    build_benchmark([images], again, **PARAMS)
    files = sorted(p.relative_to(bench) for p in bench.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (bench / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = tmp_path / "other"
    build_benchmark([images], other, **{**PARAMS, "seed": 4})
    assert (other / "audit.csv").read_bytes() != (bench / "audit.csv").read_bytes()


def test_file_names_reveal_nothing(bench: Path) -> None:
    names = sorted(p.name for p in (bench / "synthetic").iterdir())
    assert names == [f"s{k:05d}.png" for k in range(24)]
    member = [r["member"] for r in _rows(bench / "synthetic.csv")]  # in name order
    assert member != sorted(member) and member != sorted(member, reverse=True)
    assert not list(bench.glob("synthetic_clean/*subj*"))


def test_memorized_copies_cover_the_three_classes(bench: Path) -> None:
    members = [r for r in _rows(bench / "synthetic.csv") if r["member"] == "1"]
    got = {k: sum(r["origin_label"] == k for r in members) for k in MEMORIZED_CLASSES}
    planned = dict(zip(MEMORIZED_CLASSES, shares(12, [s for s, _ in MEMORIZED_CLASSES.values()])))
    assert planned == {"duplicate": 6, "similar": 4, "different": 2}
    for k in planned:
        assert abs(got[k] - planned[k]) <= 1, (got, planned)
    for r in members:  # the recorded class is the SSIM of the written (source, copy) pair
        v = ssim_pairs([read_image(bench / r["source"])],
                       [read_image(bench / r["synthetic"].replace("synthetic/", "synthetic_clean/"))],
                       device="cpu", progress=False)[0]
        assert classify(v) == r["origin_label"]


def test_perturbed_differs_from_clean(bench: Path) -> None:
    rows = _rows(bench / "synthetic.csv")
    changed = [r for r in rows if r["flip0"] == "1" or r["flip1"] == "1" or float(r["degrees"]) != 0]
    assert changed
    r = changed[0]
    clean = read_image(bench / r["synthetic"].replace("synthetic/", "synthetic_clean/"))
    assert not np.array_equal(read_image(bench / r["synthetic"]), clean)


def test_uint16_scaling() -> None:
    q = to_uint16(np.array([[2.0, 4.0], [3.0, 2.0]]))
    assert q.dtype == np.uint16 and q.min() == 0 and q.max() == 65535
    assert not to_uint16(np.ones((3, 3))).any()


def test_too_few_images(images: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"62 found.*n_train 60 \+ 12 non-members.*72 are needed"):
        build_benchmark([images], tmp_path / "b", **{**PARAMS, "n_train": 60})
    assert not (tmp_path / "b").exists()


def test_existing_folder(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        build_benchmark([images], out, **PARAMS)
    with pytest.raises(FileExistsError, match="not a benchmark"):
        build_benchmark([images], out, **PARAMS, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no leftovers beside it


def test_unreadable_file_is_named(images: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(images, bad)
    (bad / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ReadError, match="broken.png"):
        build_benchmark([bad], tmp_path / "b", **PARAMS)


def test_bad_parameters(images: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown families nope"):
        build_benchmark([images], tmp_path / "b", **PARAMS, families=["noise", "nope"])
    with pytest.raises(ValueError, match="bad regular expression"):
        build_benchmark([images], tmp_path / "b", **{**PARAMS, "group_by": "subj(("})


def test_readers_name_file_and_column(tmp_path: Path) -> None:
    (tmp_path / "pairs.csv").write_text("real,synthetic\na.png,b.png\n")
    with pytest.raises(ValueError, match=r"pairs.csv: missing column\(s\) label"):
        read_pairs_csv(tmp_path)
    (tmp_path / "pairs.csv").write_text("real,synthetic,label\na.png,synthetic/b.png,copy\n")
    with pytest.raises(ValueError, match="line 2: column label: 'copy'"):
        read_pairs_csv(tmp_path)
    (tmp_path / "audit.csv").write_text("synthetic,nearest_train,nearest_ssim,is_copy\ns,t,high,true\n")
    with pytest.raises(ValueError, match="audit.csv, line 2: column nearest_ssim"):
        read_audit_csv(tmp_path)
    with pytest.raises(FileNotFoundError, match="benchmark.json"):
        load_benchmark_info(tmp_path)
    (tmp_path / "benchmark.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_benchmark_info(tmp_path)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deepssim", *args], capture_output=True, text=True,
                          timeout=300)


def test_cli_build(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    args = ["benchmark", "build", "--images", str(images), "--out", str(out), "--n-train", "30",
            "--n-synthetic", "10", "--size", "32", "--group-by", GROUP_BY, "--families", "noise,blur",
            "texture", "--seed", "1", "--no-progress"]
    done = _cli(*args, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["n_synthetic"] == 10 and result["n_memorized"] == 5 and result["path"] == str(out)
    assert sum(result["pair_labels"].values()) == len(read_pairs_csv(out))
    assert load_benchmark_info(out)["parameters"]["families"] == ["noise", "blur", "texture"]
    assert {r["family"] for r in _rows(out / "synthetic.csv")} <= {"noise", "blur", "texture"}
    again = _cli(*args)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    again = _cli(*args, "--overwrite")
    assert again.returncode == 0, again.stderr
    assert "benchmark written to" in again.stdout


def test_holdout_holds_non_members_that_made_no_synthetic_image(bench: Path, images: Path, tmp_path: Path) -> None:
    rows = _rows(bench / "holdout.csv")
    info = load_benchmark_info(bench)
    assert info["parameters"]["n_holdout"] == 200 and info["counts"]["holdout"] == len(rows) > 0
    assert sorted(p.relative_to(bench).as_posix() for p in (bench / "holdout").rglob("*.png")) == \
        sorted(r["holdout"] for r in rows)
    train_groups = {r["group"] for r in _rows(bench / "train.csv")}
    used = {r["origin_id"] for r in _rows(bench / "synthetic.csv")}
    for r in rows:
        assert r["group"] not in train_groups and r["origin_id"] not in used
        assert _subject(r["origin_id"]) not in {_subject(t["origin_id"]) for t in _rows(bench / "train.csv")}
    # The holdout has its own draws: every other file is the same without it.
    none = tmp_path / "none"
    build_benchmark([images], none, **{**PARAMS, "n_holdout": 0})
    assert not (none / "holdout").exists() and _rows(none / "holdout.csv") == []
    for rel in ("pairs.csv", "audit.csv", "synthetic.csv", "train.csv"):
        assert (none / rel).read_bytes() == (bench / rel).read_bytes(), rel
    with pytest.raises(ValueError, match="n_holdout"):
        build_benchmark([images], tmp_path / "bad", **{**PARAMS, "n_holdout": -1})
