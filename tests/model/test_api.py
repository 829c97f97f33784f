"""Scoring: embed, score_pairs, folder and CSV helpers, and the embed / score commands."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import pytest

from deepssim.model import load_model, score_pairs
from deepssim.model.files import embed_folder, score_pairs_csv
from deepssim.readers import ReadError


def test_top_level_names() -> None:
    import deepssim

    assert deepssim.load_model is load_model and deepssim.score_pairs is score_pairs
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        deepssim.nope  # noqa: B018


def test_embeddings_do_not_depend_on_batch_size(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir, device="cpu")
    rng = np.random.default_rng(2)
    images = [rng.random((30 + k, 40)) for k in range(7)]  # mixed sizes: resized by the contract
    full = model.embed(images, batch_size=64)
    assert full.shape == (7, 16) and full.dtype == np.float32
    for batch_size in (1, 3):
        np.testing.assert_allclose(model.embed(images, batch_size=batch_size), full, atol=1e-5)
    assert model.embed([]).shape == (0, 16)
    with pytest.raises(ValueError, match="batch_size"):
        model.embed(images, batch_size=0)


def test_scores_are_cosines(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir, device="cpu")
    rng = np.random.default_rng(3)
    a, b = rng.random((32, 32)), rng.random((32, 32))
    scores = score_pairs(model, [(a, a), (a, b), (b, a)])
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    assert -1.0 <= scores[1] <= 1.0
    assert scores[1] == pytest.approx(scores[2], abs=1e-6)
    assert model.score(a, b) == pytest.approx(scores[1], abs=1e-6)


def test_embed_folder_and_score_csv(tiny_model_dir: Path, image_folder: Path, tmp_path: Path) -> None:
    model = load_model(tiny_model_dir, device="cpu")
    ids, emb = embed_folder(model, image_folder)
    assert ids == sorted(ids) and len(ids) == 5 and "sub/img1.png" in ids
    for workers in (1, 3):  # reading threads change nothing
        again_ids, again = embed_folder(model, image_folder, workers=workers)
        assert again_ids == ids and np.array_equal(again, emb)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("real,synthetic,label\nimg0.png,sub/img1.png,different\nimg2.png,img2.png,duplicate\n")
    header, rows = score_pairs_csv(model, pairs, image_folder)
    assert header == ["real", "synthetic", "label", "score"]
    assert rows[1]["label"] == "duplicate" and float(rows[1]["score"]) == pytest.approx(1.0, abs=1e-5)
    i, j = ids.index("img0.png"), ids.index("sub/img1.png")
    assert float(rows[0]["score"]) == pytest.approx(float(emb[i] @ emb[j]), abs=1e-5)
    missing = tmp_path / "missing.csv"
    missing.write_text("real,synthetic\nimg0.png,nope.png\ngone.png,img2.png\n")
    with pytest.raises(ReadError, match="2 image.*not found: gone.png, nope.png"):
        score_pairs_csv(model, missing, image_folder)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a,b\nimg0.png,img2.png\n")
    with pytest.raises(ValueError, match="missing column"):
        score_pairs_csv(model, wrong, image_folder)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deepssim", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_embeddings_equal_the_cpu_ones(
    tiny_model_dir: Path, image_folder: Path
) -> None:  # pragma: no cover - GPU only
    ids, on_cpu = embed_folder(load_model(tiny_model_dir, device="cpu"), image_folder, workers=1)
    gpu_ids, on_gpu = embed_folder(load_model(tiny_model_dir, device="cuda"), image_folder, workers=3)
    assert gpu_ids == ids
    np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-5)


def test_embed_and_score_commands(tiny_model_dir: Path, image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "emb.npz"
    done = _cli("embed", str(tiny_model_dir), "--images", str(image_folder), "--out", str(out),
                "--device", "cpu", "--workers", "2")
    assert done.returncode == 0, done.stderr
    data = np.load(out)
    assert data["embeddings"].shape == (5, 16) and list(data["ids"])[0] == "img0.png"
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("real,synthetic\nimg0.png,img4.png\n")
    done = _cli("score", str(tiny_model_dir), "--pairs", str(pairs), "--root", str(image_folder),
                "--device", "cpu")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(done.stdout.splitlines()))
    assert rows[0]["real"] == "img0.png" and -1 <= float(rows[0]["score"]) <= 1
    done = _cli("score", str(tmp_path), "--pairs", str(pairs), "--root", str(image_folder))
    assert done.returncode == 2 and "not a deepssim model folder" in done.stderr
