"""Top-k search: exact against a brute-force reference (ties included), block independence,
FAISS flat against exact, recall of approximate indexes, input errors."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from deepssim.auditing.nearest import SearchResult, rescore, search, search_flips, topk_exact, topk_faiss


def reference(queries: np.ndarray, base: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Full score matrix (float64 of float32 inputs), each row sorted by (-score, index)."""
    s = queries.astype(np.float64) @ base.astype(np.float64).T
    cols = np.broadcast_to(np.arange(base.shape[0]), s.shape)
    order = np.lexsort((cols, -s), axis=1)[:, :k]
    return np.take_along_axis(s, order, 1), order


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def quantised(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Entries in {-1, -0.5, 0, 0.5, 1}: dot products are exact in float32 (whatever the
    summation order), and with d = 4 almost every query has ties at its k-th score."""
    return (rng.integers(-2, 3, size=(n, d)) / 2).astype(np.float32)


def check_exact(q: np.ndarray, b: np.ndarray, k: int, **kw: object) -> None:
    scores, idx = topk_exact(q, b, k, device="cpu", **kw)  # type: ignore[arg-type]
    ref_s, ref_i = reference(q, b, k)
    assert scores.dtype == np.float32 and idx.dtype == np.int64
    assert scores.shape == idx.shape == (q.shape[0], min(k, b.shape[0]))
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(scores, ref_s, rtol=0, atol=1e-5)


@pytest.mark.parametrize("k", [1, 5, 17])
def test_exact_matches_reference_random(k: int) -> None:
    rng = np.random.default_rng(k)
    check_exact(unit(rng, 70, 32), unit(rng, 3000, 32), k)


def test_exact_ties_duplicate_base_rows() -> None:
    rng = np.random.default_rng(1)
    b = unit(rng, 1500, 16)
    # Ten copies of each of 40 rows, scattered: the query equal to one of them ties 10 ways
    # at the top, and k = 5 must keep the 5 smallest indices of the copies.
    src = rng.choice(1500, 40, replace=False)
    for s in src:
        b[rng.choice(1500, 9, replace=False)] = b[s]
    q = np.concatenate([b[src], unit(rng, 20, 16)])
    check_exact(q, b, 5)
    check_exact(q, b, 5, block_queries=7, block_base=100)
    scores, idx = topk_exact(q[:1], b, 5, device="cpu")
    copies = np.flatnonzero((b == b[src[0]]).all(axis=1))
    np.testing.assert_array_equal(idx[0], copies[:5])
    assert len(set(scores[0].tolist())) == 1


@pytest.mark.parametrize("k", [1, 3, 10])
def test_exact_ties_quantised(k: int) -> None:
    rng = np.random.default_rng(10 + k)
    q, b = quantised(rng, 60, 4), quantised(rng, 3000, 4)
    ref_s, _ = reference(q, b, k + 1)
    # The data really does tie at the boundary for most rows (else this tests nothing).
    assert (ref_s[:, k - 1] == ref_s[:, k]).mean() > 0.5
    check_exact(q, b, k)
    check_exact(q, b, k, block_queries=5, block_base=333)
    check_exact(q, b, k, block_queries=60, block_base=3000)


def test_exact_grouped_path_with_tail_and_ties() -> None:
    # One base block of 4099 columns: the two-stage top-k over 256 groups of 16 plus a
    # 3-column tail, on data with many exact ties (quantised, d = 8).
    rng = np.random.default_rng(3)
    q, b = quantised(rng, 40, 8), quantised(rng, 4099, 8)
    check_exact(q, b, 4, block_base=4099)
    q, b = unit(rng, 40, 8), unit(rng, 4099, 8)
    check_exact(q, b, 4, block_base=4099)


@pytest.mark.parametrize("k", [1, 4, 30])
def test_flip_search_is_the_top_k_of_the_best_over_flips(k: int) -> None:
    rng = np.random.default_rng(20 + k)
    # Quantised: many exact ties, within a query's flips and across training images.
    q, b = quantised(rng, 50 * 4, 4).reshape(50, 4, 4), quantised(rng, 25, 4)
    best = np.einsum("mfd,nd->mnf", q.astype(np.float64), b.astype(np.float64)).max(axis=2)
    cols = np.broadcast_to(np.arange(len(b)), best.shape)
    order = np.lexsort((cols, -best), axis=1)[:, :k]
    found = search_flips(q, b, k, backend="exact", device="cpu")
    np.testing.assert_array_equal(found.indices, order)
    np.testing.assert_allclose(found.scores, np.take_along_axis(best, order, 1), atol=1e-6)
    assert found.scores.dtype == np.float32
    plain = search_flips(q[:, 0], b, k, backend="exact", device="cpu")  # (M, D): plain search
    np.testing.assert_array_equal(plain.indices, search(q[:, 0], b, k, backend="exact", device="cpu").indices)


def test_exact_k_larger_than_base() -> None:
    rng = np.random.default_rng(4)
    q, b = unit(rng, 9, 8), unit(rng, 6, 8)
    scores, idx = topk_exact(q, b, 50, device="cpu")
    assert scores.shape == (9, 6)
    check_exact(q, b, 50)
    check_exact(q, b, 6, block_base=4)


def test_exact_independent_of_block_sizes() -> None:
    rng = np.random.default_rng(5)
    q, b = unit(rng, 60, 64), unit(rng, 4000, 64)
    one_s, one_i = topk_exact(q, b, 5, device="cpu", block_queries=60, block_base=4000)
    tiny_s, tiny_i = topk_exact(q, b, 5, device="cpu", block_queries=16, block_base=37)
    auto_s, auto_i = topk_exact(q, b, 5, device="cpu")
    np.testing.assert_array_equal(one_i, tiny_i)
    np.testing.assert_array_equal(one_i, auto_i)
    np.testing.assert_allclose(one_s, tiny_s, rtol=0, atol=1e-6)
    np.testing.assert_allclose(one_s, auto_s, rtol=0, atol=1e-6)
    ref_s, ref_i = reference(q, b, 5)
    np.testing.assert_array_equal(auto_i, ref_i)


def test_exact_accepts_float64_and_views() -> None:
    rng = np.random.default_rng(6)
    b = unit(rng, 500, 16)
    q64 = unit(rng, 20, 16).astype(np.float64)
    s64, i64 = topk_exact(q64, b[::2], 3, device="cpu")  # non-contiguous base view
    s32, i32 = topk_exact(q64.astype(np.float32), np.ascontiguousarray(b[::2]), 3, device="cpu")
    np.testing.assert_array_equal(i64, i32)
    np.testing.assert_array_equal(s64, s32)


def test_search_exact_result_fields() -> None:
    rng = np.random.default_rng(7)
    q, b = unit(rng, 50, 32), unit(rng, 400, 32)
    res = search(q, b, 4, backend="auto", device="cpu")
    assert isinstance(res, SearchResult)
    assert (res.backend, res.index, res.device, res.recall) == ("exact", "flat", "cpu", None)
    assert res.seconds >= 0
    ref_s, ref_i = reference(q, b, 4)
    np.testing.assert_array_equal(res.indices, ref_i)
    np.testing.assert_allclose(res.scores, ref_s, atol=1e-5)
    assert np.all(np.diff(res.scores, axis=1) <= 0)


def test_search_progress_bar_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(8)
    search(unit(rng, 10, 8), unit(rng, 20, 8), 2, backend="exact", device="cpu", progress=True)
    captured = capsys.readouterr()
    assert "top-k search" in captured.err and captured.out == ""


# --------------------------------------------------------------------------- FAISS


def clustered(rng: np.random.Generator, n_q: int, n_b: int, d: int, n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    centres = unit(rng, n_clusters, d)

    def draw(n: int) -> np.ndarray:
        x = centres[rng.integers(0, n_clusters, n)] + 0.05 * rng.standard_normal((n, d)).astype(np.float32)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return draw(n_q), draw(n_b)


def test_faiss_flat_equals_exact() -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(9)
    q, b = unit(rng, 200, 64), unit(rng, 5000, 64)
    fs, fi = topk_faiss(q, b, 7, index="flat", device="cpu")
    es, ei = topk_exact(q, b, 7, device="cpu")
    np.testing.assert_array_equal(fi, ei)
    np.testing.assert_allclose(fs, es, rtol=0, atol=1e-5)
    res = search(q, b, 7, backend="faiss", device="cpu")
    assert (res.backend, res.index, res.recall) == ("faiss", "flat", None)
    np.testing.assert_array_equal(res.indices, ei)


def test_faiss_flat_orders_ties_by_index() -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(10)
    b = unit(rng, 300, 16)
    b[[250, 3, 120, 77]] = b[5]  # five equal rows: every query ties 5 ways
    scores, idx = topk_faiss(b[5:6], b, 5, index="flat", device="cpu")
    np.testing.assert_array_equal(idx[0], [3, 5, 77, 120, 250])
    check_exact(b[5:6], b, 5)


@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_approximate_recall_high_on_clustered_data(index: str) -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(11)
    q, b = clustered(rng, 400, 8000, 32, 50)
    res = search(q, b, 5, index=index, device="cpu", recall_sample=200, seed=3)
    assert (res.backend, res.index, res.device) == ("faiss", index, "cpu")
    assert res.recall is not None and 0.9 < res.recall <= 1.0
    assert res.scores.shape == res.indices.shape == (400, 5)
    assert np.all(np.diff(res.scores, axis=1) <= 0)
    # The reported recall is what it claims: recomputed here on the same sample.
    rows = np.sort(np.random.default_rng(3).choice(400, 200, replace=False))
    _, truth = reference(q[rows], b, 5)
    hits = np.mean([len(set(res.indices[r]) & set(t)) / 5 for r, t in zip(rows, truth)])
    assert res.recall == pytest.approx(hits)


def test_approximate_recall_in_unit_interval_on_hard_data() -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(12)
    q, b = unit(rng, 100, 64), unit(rng, 4000, 64)
    res = search(q, b, 10, backend="faiss", index="ivf", device="cpu")
    assert res.recall is not None and 0.0 <= res.recall <= 1.0
    # Visiting all cells is exhaustive: the same scores as exact search (indices may swap
    # where two scores differ by float rounding only).
    fs, fi = topk_faiss(q, b, 10, index="ivf", device="cpu", nlist=50, nprobe=50)
    es, ei = topk_exact(q, b, 10, device="cpu")
    np.testing.assert_allclose(fs, es, rtol=0, atol=1e-5)
    assert (fi == ei).mean() > 0.99


def test_faiss_missing_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_faiss(name: str, *args: object, **kwargs: object) -> object:
        if name == "faiss":
            raise ImportError("No module named 'faiss'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    rng = np.random.default_rng(13)
    q, b = unit(rng, 5, 8), unit(rng, 20, 8)
    with pytest.raises(ImportError, match=r"pip install 'deepssim\[faiss\]'"):
        search(q, b, 2, backend="faiss")
    # (the package exports the function `search`, which hides the module's name)
    assert not importlib.import_module("deepssim.auditing.nearest").faiss_available()
    # auto falls back to exact torch without FAISS (for the exact index).
    assert search(q, b, 2, device="cpu").backend == "exact"


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("queries", "base", "k", "match"),
    [
        (np.ones((3, 4)), np.ones((5, 4)), 0, "k must be >= 1"),
        (np.ones((3, 4)), np.ones((5, 4)), 2.5, "k must be an integer"),
        (np.ones((0, 4)), np.ones((5, 4)), 1, "queries: empty"),
        (np.ones((3, 4)), np.ones((0, 4)), 1, "base: empty"),
        (np.ones((3, 4)), np.ones((5, 6)), 1, "dimension mismatch: queries are 4-d, base is 6-d"),
        (np.ones(4), np.ones((5, 4)), 1, r"queries: expected a 2D .* shape \(4,\)"),
        (np.ones((3, 4)), np.ones((2, 5, 4)), 1, r"base: expected a 2D"),
        (np.ones((3, 0)), np.ones((5, 0)), 1, "dimension 0"),
        (np.array([[1.0, np.nan]]), np.ones((5, 2)), 1, r"queries: 1 embedding\(s\) contain NaN or inf \(first: row 0\)"),
        (np.ones((3, 2)), np.array([[1.0, 0.0], [np.inf, 0.0]]), 1, r"base: .*NaN or inf \(first: row 1\)"),
        (np.ones((3, 2)), np.full((2, 2), 1e300), 1, "base: .*NaN or inf"),  # float32 overflow
        (np.array([["a", "b"]]), np.ones((5, 2)), 1, "queries: expected real numbers"),
    ],
)
def test_bad_input(queries: np.ndarray, base: np.ndarray, k: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        topk_exact(queries, base, k, device="cpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=match):
        search(queries, base, k, device="cpu")  # type: ignore[arg-type]


def test_bad_arguments() -> None:
    q, b = np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="unknown backend 'torch'"):
        search(q, b, 1, backend="torch")
    with pytest.raises(ValueError, match="unknown index 'pq'"):
        search(q, b, 1, index="pq")
    with pytest.raises(ValueError, match="needs backend='faiss'"):
        search(q, b, 1, backend="exact", index="hnsw")
    with pytest.raises(ValueError, match="recall_sample must be >= 1"):
        search(q, b, 1, index="hnsw", recall_sample=0)
    with pytest.raises(ValueError, match="block_base must be >= 1"):
        topk_exact(q, b, 1, device="cpu", block_base=0)
    with pytest.raises(ValueError, match="unknown device"):
        topk_exact(q, b, 1, device="tpu")
    with pytest.raises(ValueError, match="overflowed float32"):
        topk_exact(np.full((1, 2), 3e38, np.float32), np.full((1, 2), 3e38, np.float32), 1, device="cpu")


def test_auto_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    mod = importlib.import_module("deepssim.auditing.nearest")
    big = mod.AUTO_FAISS_MIN_PAIRS
    monkeypatch.setitem(sys.modules, "faiss", types.SimpleNamespace(get_num_gpus=lambda: 0))
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert mod._auto_faiss_flat(big, "auto")  # large, CPU only: FAISS flat measured faster
    assert not mod._auto_faiss_flat(big - 1, "auto")  # smaller: torch measured faster
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert not mod._auto_faiss_flat(big, "auto")  # faiss-cpu vs torch on a GPU: torch
    assert mod._auto_faiss_flat(big, "cpu")
    monkeypatch.setitem(sys.modules, "faiss", types.SimpleNamespace(get_num_gpus=lambda: 1))
    assert mod._auto_faiss_flat(big, "auto")
    monkeypatch.delitem(sys.modules, "faiss")
    monkeypatch.setattr(mod, "faiss_available", lambda: False)
    assert not mod._auto_faiss_flat(big, "auto")  # not installed: torch


def test_faiss_flat_tie_rule_quantised() -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(14)
    q, b = quantised(rng, 50, 4), quantised(rng, 3000, 4)
    fs, fi = topk_faiss(q, b, 3, index="flat", device="cpu")
    _, ref_i = reference(q, b, 3)
    np.testing.assert_array_equal(fi, ref_i)


def test_rescore_recomputes_every_found_score_and_reorders_each_row() -> None:
    rng = np.random.default_rng(8)
    queries, base = rng.standard_normal((7, 4, 6)).astype(np.float32), rng.standard_normal((9, 6)).astype(np.float32)
    found = search_flips(queries, base, 4, backend="exact")
    found.indices[2, 3], found.scores[2, 3] = -1, -np.inf  # an empty slot stays last
    rule = lambda b, q: np.einsum("pd,pgd->pg", b, q).min(axis=1)  # noqa: E731 (any pair rule)
    out = rescore(found, queries, base, rule, chunk=3)
    for s in range(7):
        want = sorted(((float(rule(base[[i]], queries[[s]])[0]), int(i)) for i in found.indices[s] if i >= 0),
                      key=lambda t: (-t[0], t[1]))
        n = len(want)
        np.testing.assert_allclose(out.scores[s, :n], [w[0] for w in want], atol=1e-6)
        assert list(out.indices[s, :n]) == [w[1] for w in want]
        assert set(out.indices[s]) == set(found.indices[s])
    assert out.indices[2, 3] == -1 and out.scores[2, 3] == -np.inf
