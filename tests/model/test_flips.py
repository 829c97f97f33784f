"""Flips in scores: the best flip, joint flips, cross-fitting, and the models scored by them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from deepssim.model import load_model, score_pairs
from deepssim.model.files import embed_folder, score_pairs_csv
from deepssim.model.flips import FLIPS, best_flip_scores, by_flip, cross_fitted, flip_each, flipped, joint, joint_views
from deepssim.model.scoring import RULES, pair_scores


def test_flipped_and_by_flip_keep_each_image_with_its_flips() -> None:
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 1, 3, 4)
    stacked = flipped(x)
    assert stacked.shape == (8, 1, 3, 4)
    grouped = by_flip(stacked.flatten(1), 2)  # (images, flips, features)
    for i in range(2):
        for f, dims in enumerate(FLIPS):
            want = torch.flip(x[i], dims) if dims else x[i]
            assert torch.equal(grouped[i, f], want.flatten())
    assert torch.equal(grouped[0, 3], torch.rot90(x[0], 2, dims=(-2, -1)).flatten())  # both = 180 deg


def test_best_flip_scores() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((5, 4, 3))
    np.testing.assert_allclose(best_flip_scores(a, b[:, 1]), np.sum(a * b[:, 1], axis=1))
    np.testing.assert_allclose(best_flip_scores(a, b), np.einsum("pd,pfd->pf", a, b).max(axis=1))


def _unit_flip_embeddings(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random unit 'embeddings of the four flips' (5, 4, 3) of five real and five synthetic images."""
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((5, 4, 3)), rng.standard_normal((5, 4, 3))
    return a / np.linalg.norm(a, axis=-1, keepdims=True), b / np.linalg.norm(b, axis=-1, keepdims=True)


def _joint_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(P, relative flip g, joint flip f) cosines from per-flip embeddings (P, 4, D), by hand:
    a flipped by f against b flipped by f then g, i.e. by f ^ g."""
    return np.array([[[a[p, f] @ b[p, f ^ g] for f in range(4)] for g in range(4)] for p in range(len(a))])


def test_joint_vectors_score_the_mean_over_joint_flips() -> None:
    a, b = _unit_flip_embeddings(1)
    want = _joint_cosines(a, b).mean(axis=2)
    ja, jb = joint(a), joint_views(b)
    assert ja.shape == (5, 12) and jb.shape == (5, 4, 12)
    np.testing.assert_allclose(np.linalg.norm(ja, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.einsum("pd,pgd->pg", ja, jb), want, atol=1e-6)
    np.testing.assert_allclose(best_flip_scores(ja, jb), want.max(axis=1), atol=1e-6)
    np.testing.assert_allclose(best_flip_scores(ja, joint(b)), want[:, 0], atol=1e-6)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    np.testing.assert_allclose(best_flip_scores(joint(ta), joint_views(tb)).numpy(), want.max(axis=1), atol=1e-6)


def test_a_flip_search_model_scores_every_flip_of_an_image_as_a_copy(
        tiny_model_dir: Path, flip_model_dir: Path) -> None:
    assert not load_model(tiny_model_dir, device="cpu").flip_search
    search = load_model(flip_model_dir, device="cpu")
    plain = load_model(flip_model_dir, device="cpu")
    plain.scoring = "cosine"  # the same weights, scored by plain cosines
    assert search.flip_search and search.scoring == "best-flip" and not plain.flip_search
    rng = np.random.default_rng(3)
    a, b = (ndimage.gaussian_filter(rng.random((32, 32)), 2.0) for _ in range(2))
    views = [a, a[::-1], a[:, ::-1], a[::-1, ::-1]]
    got = score_pairs(search, [(a, v) for v in views] + [(a, b)])
    np.testing.assert_allclose(got[:4], 1.0, atol=1e-5)
    # Plain cosines of a flipped pair are below 1; the search's score is the best of the
    # plain scores of b's flips.
    assert max(score_pairs(plain, [(a, v) for v in views[1:]])) < 0.99
    want = max(score_pairs(plain, [(a, np.ascontiguousarray(v)) for v in [b, b[::-1], b[:, ::-1], b[::-1, ::-1]]]))
    assert got[4] == pytest.approx(want, abs=1e-5)
    assert search.score(a, b) == pytest.approx(got[4], abs=1e-6)
    emb = search.embed([a, b], flips=True)
    assert emb.shape == (2, 4, 16)
    np.testing.assert_allclose(emb[:, 0], search.embed([a, b]), atol=1e-6)
    for batch_size in (1, 3):
        np.testing.assert_allclose(search.embed([a, b], flips=True, batch_size=batch_size), emb, atol=1e-5)
    assert search.embed([], flips=True).shape == (0, 4, 16)


def _scores_with_a_mirror(model, folder: Path, tmp_path: Path, pairs: list[str]) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    """``score_pairs_csv`` rows for ``pairs`` ("real,synthetic") of ``folder``, where
    ``mirror.png`` is ``img0.png`` flipped left-right."""
    from PIL import Image

    image = np.asarray(Image.open(folder / "img0.png"))
    Image.fromarray(np.ascontiguousarray(image[:, ::-1])).save(folder / "mirror.png")
    path = tmp_path / "pairs.csv"
    path.write_text("real,synthetic\n" + "".join(f"{p}\n" for p in pairs))
    return score_pairs_csv(model, path, folder)[1]


def test_flip_search_in_the_csv_scores_and_the_embed_command(
        flip_model_dir: Path, image_folder: Path, tmp_path: Path) -> None:
    model = load_model(flip_model_dir, device="cpu")
    rows = _scores_with_a_mirror(model, image_folder, tmp_path, ["img0.png,mirror.png", "img0.png,img2.png",
                                                                 "mirror.png,img0.png"])
    assert float(rows[0]["score"]) == pytest.approx(1.0, abs=1e-5)
    assert float(rows[2]["score"]) == pytest.approx(1.0, abs=1e-5)
    ids, emb = embed_folder(model, image_folder, flips=True)
    i, j = ids.index("img0.png"), ids.index("img2.png")
    assert float(rows[1]["score"]) == pytest.approx(float((emb[j] @ emb[i, 0]).max()), abs=1e-5)

    out = tmp_path / "emb.npz"
    done = subprocess.run([sys.executable, "-m", "deepssim", "embed", str(flip_model_dir), "--images",
                           str(image_folder), "--out", str(out), "--device", "cpu", "--flips"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "6 embeddings (4 flips each) of dimension 16" in done.stdout
    with np.load(out) as saved:
        assert saved["embeddings"].shape == (6, 4, 16) and bool(saved["flip_search"]) and not saved["joint_flips"]
        assert str(saved["scoring"]) == "best-flip" and not saved["cross_fit"]
        np.testing.assert_allclose(saved["embeddings"], emb, atol=1e-5)


def test_flip_each_flips_every_image_by_its_code_and_codes_compose_by_xor() -> None:
    x = torch.arange(2 * 5 * 3 * 4, dtype=torch.float32).reshape(10, 3, 4)
    codes = np.arange(10) % 4
    out = flip_each(x, codes)
    for k in range(10):
        dims = FLIPS[codes[k]]
        assert torch.equal(out[k], torch.flip(x[k], dims) if dims else x[k])
    other = np.arange(10)[::-1] % 4
    assert torch.equal(flip_each(out, other), flip_each(x, codes ^ other))
    assert torch.equal(x, torch.arange(120, dtype=torch.float32).reshape(10, 3, 4))  # input untouched


def _cross_fitted_by_hand(cos: np.ndarray) -> np.ndarray:
    """Per pair: for each halving of the four joint flips into A and B, the relative flip best
    on A's mean scored by B's mean, and the other way round; the mean of the six."""
    out = []
    for c in cos:  # (G, 4)
        values = []
        for a, b in (((0, 3), (1, 2)), ((0, 1), (2, 3)), ((0, 2), (1, 3))):
            for choose, score in ((a, b), (b, a)):
                g = int(np.argmax([c[g, list(choose)].mean() for g in range(len(c))]))
                values.append(c[g, list(score)].mean())
        out.append(np.mean(values))
    return np.array(out)


def test_cross_fitted_scores_choose_with_one_half_and_score_with_the_other() -> None:
    rng = np.random.default_rng(5)
    cos = rng.uniform(-1, 1, (6, 4, 4))
    np.testing.assert_allclose(cross_fitted(torch.from_numpy(cos)).numpy(), _cross_fitted_by_hand(cos), atol=1e-12)
    # One relative flip far ahead in every view (a copy): cross-fitting scores it as the best does.
    copy = rng.uniform(0.2, 0.3, (1, 4, 4))
    copy[0, 2] = [0.95, 0.97, 0.96, 0.98]
    assert cross_fitted(torch.from_numpy(copy)).item() == pytest.approx(0.965)
    # Four relative flips alike but for noise (an unrelated image): the best of the four means
    # is biased upwards; the cross-fitted score is not.
    noise = 0.5 + 0.05 * rng.standard_normal((4000, 4, 4))
    assert cross_fitted(torch.from_numpy(noise)).mean().item() == pytest.approx(0.5, abs=0.003)
    assert noise.mean(axis=2).max(axis=1).mean() > 0.52


def test_best_flip_scores_cross_fits_joint_vectors() -> None:
    a, b = _unit_flip_embeddings(6)
    cos = _joint_cosines(a, b)
    want = _cross_fitted_by_hand(cos)
    got = best_flip_scores(joint(a), joint_views(b), cross=True)
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, want, atol=1e-6)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    cross = RULES["cross-fit"]
    np.testing.assert_allclose(pair_scores(cross, joint(ta), joint_views(tb)).numpy(), want, atol=1e-6)
    np.testing.assert_allclose(best_flip_scores(joint(ta), joint_views(tb)).numpy(), cos.mean(2).max(1), atol=1e-6)


def test_cross_fitted_scores_of_no_pairs_and_of_float64_arrays() -> None:
    assert best_flip_scores(np.zeros((0, 12), np.float32), np.zeros((0, 4, 12), np.float32), cross=True).shape == (0,)
    assert pair_scores(RULES["cross-fit"], torch.zeros(0, 12), torch.zeros(0, 4, 12)).shape == (0,)
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 5))
    got = best_flip_scores(joint(a), joint_views(b), cross=True)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32  # joint vectors are float32
    ja = joint(a).astype(np.float64)
    ja.flags.writeable = False  # e.g. a memory-mapped embeddings file
    got64 = best_flip_scores(ja, joint_views(b).astype(np.float64), cross=True)
    assert got64.dtype == np.float64
    np.testing.assert_allclose(got64, got, atol=1e-6)


def test_a_cross_fitted_model_scores_pairs_csv_and_the_api_alike(
        cross_model_dir: Path, image_folder: Path, tmp_path: Path) -> None:
    model = load_model(cross_model_dir, device="cpu")
    assert model.cross_fit and model.joint_flips and model.flip_search and model.scoring == "cross-fit"
    rng = np.random.default_rng(4)
    a, b = (ndimage.gaussian_filter(rng.random((32, 32)), 2.0) for _ in range(2))
    views = lambda x: [np.ascontiguousarray(v) for v in (x, x[::-1], x[:, ::-1], x[::-1, ::-1])]  # noqa: E731
    ea, eb = model.embed(views(a)), model.embed(views(b))
    cos = _joint_cosines(ea[None], eb[None])
    got = score_pairs(model, [(a, b), (a, a), (a, views(a)[2])])
    assert got[0] == pytest.approx(_cross_fitted_by_hand(cos)[0], abs=1e-5)
    np.testing.assert_allclose(got[1:], 1.0, atol=1e-5)  # copies, flipped or not, still score 1
    rows = _scores_with_a_mirror(model, image_folder, tmp_path, ["img0.png,mirror.png", "img0.png,img2.png"])
    assert float(rows[0]["score"]) == pytest.approx(1.0, abs=1e-5)
    ids, emb = embed_folder(model, image_folder, flips=True)
    i, j = ids.index("img0.png"), ids.index("img2.png")
    cos = _joint_cosines(emb[[i]], emb[[j]])
    assert float(rows[1]["score"]) == pytest.approx(_cross_fitted_by_hand(cos)[0], abs=1e-5)
    # Both sides are embedded with their four flips: joint vectors of the real side, the four
    # relative flips' joint views of the synthetic side.
    assert model.embed_real([a, b]).shape == (2, 64) and model.embed_real([]).shape == (0, 64)
    assert model.embed_synthetic([a, b]).shape == (2, 4, 64) and model.embed_synthetic([]).shape == (0, 4, 64)
