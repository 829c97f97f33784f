"""Pair files: the benchmark's pairs.csv under both conditions, the reference code's format."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepssim.benchmark import read_pairs_csv
from deepssim.evaluation import ImageCache, detect_format, read_pair_file, reference_key_path


def test_benchmark_pairs_per_condition(tiny_bench: Path) -> None:
    rows = read_pairs_csv(tiny_bench)
    registered = read_pair_file(tiny_bench / "pairs.csv", condition="registered")
    perturbed = read_pair_file(tiny_bench, condition="perturbed")  # the folder works too
    assert registered.format == "benchmark" and registered.root == tiny_bench
    assert len(registered) == len(perturbed) == len(rows)
    assert registered.real == perturbed.real == tuple(r.real for r in rows)
    assert perturbed.synthetic == tuple(r.synthetic for r in rows)
    assert registered.synthetic == tuple(r.synthetic.replace("synthetic/", "synthetic_clean/", 1) for r in rows)
    names = ("different", "similar", "duplicate")
    assert [names[k] for k in registered.labels] == [r.label for r in rows]
    assert not registered.perturb_synthetic and not perturbed.perturb_synthetic
    counts = registered.class_counts()
    assert sum(counts.values()) == len(rows) and all(counts.values())
    head = registered.head(5)
    assert len(head) == 5 and head.real == registered.real[:5]
    np.testing.assert_array_equal(head.labels, registered.labels[:5])


def test_reference_key_path() -> None:
    assert reference_key_path("IXI359-Guys-0918-T2___training") == "IXI359-Guys-0918-T2/training.png"
    assert reference_key_path("CoRR-0025886-sess_1-T1w___gen-14") == "CoRR-0025886-sess_1-T1w/gen-14.png"
    for bad in ("no-separator", "a___b___c", "___gen-1", "uid___"):
        with pytest.raises(ValueError, match="not a reference image key"):
            reference_key_path(bad)


def test_reference_format_on_the_authors_test_set(shared_data: Path) -> None:
    path = shared_data / "reference-format" / "test_set.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with open(path, newline="") as fh:
        first = list(itertools.islice(csv.DictReader(fh), 6))
    pairs = read_pair_file(path, root="/images", condition="perturbed")
    assert detect_format(path) == "reference" and pairs.format == "reference"
    assert str(pairs.root) == "/images" and pairs.perturb_synthetic
    codes = {"0": 0, "1": 2, "2": 1}  # reference 0/1/2 = different/duplicate/similar
    for k, row in enumerate(first):
        uid, name = row["real_key"].split("___")
        assert pairs.real[k] == f"{uid}/{name}.png"
        uid, name = row["synth_key"].split("___")
        assert pairs.synthetic[k] == f"{uid}/{name}.png"
        assert pairs.labels[k] == codes[row["label"]]
    # The first rows as printed in the file.
    assert pairs.real[0] == "CoRR-0025886-sess_1-T1w/training.png"
    assert pairs.synthetic[0] == "CoRR-0025961-sess_1-T1w/gen-14.png"
    assert [int(v) for v in pairs.labels[:4]] == [0, 0, 0, 1]
    counts = pairs.class_counts()
    assert sum(counts.values()) == len(pairs) == 15498


def test_reference_format_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text("real_key,synth_key,label\nA___training,B___gen-1,0\nA___training,B___gen-2,3\n")
    with pytest.raises(ValueError, match=r"pairs.csv, line 3: column label: '3'"):
        read_pair_file(path)
    path.write_text("real_key,synth_key,label\nA_training,B___gen-1,1\n")
    with pytest.raises(ValueError, match=r"line 2: 'A_training' is not a reference image key"):
        read_pair_file(path)
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="not a pair file; expected the columns"):
        read_pair_file(path)
    with pytest.raises(FileNotFoundError, match="pairs file not found"):
        read_pair_file(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="unknown condition"):
        read_pair_file(path, condition="rotated")  # type: ignore[arg-type]


def test_image_cache_reads_once_and_perturbs_deterministically(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    (tmp_path / "u1").mkdir()
    Image.fromarray((rng.random((24, 20)) * 255).astype(np.uint8)).save(tmp_path / "u1" / "gen-1.png")
    cache = ImageCache(tmp_path, seed=5)
    a = cache.get("u1/gen-1.png")
    assert a is cache.get("u1/gen-1.png") and a.dtype == np.float32 and len(cache) == 1
    p = cache.perturbed("u1/gen-1.png")
    assert p is cache.perturbed("u1/gen-1.png")
    again = ImageCache(tmp_path, seed=5).perturbed("u1/gen-1.png")
    np.testing.assert_array_equal(p, again)
    other = ImageCache(tmp_path, seed=6).perturbed("u1/gen-1.png")
    assert p.shape == a.shape and not np.array_equal(p, a) and not np.array_equal(p, other)
    with pytest.raises(ValueError, match=r"2 image\(s\) named in list.csv not found: u1/x.png, u2/y.png"):
        cache.check_exist(["u1/gen-1.png", "u1/x.png", "u2/y.png"], "list.csv")
