"""Top-k search: for each synthetic embedding, its k nearest training embeddings by cosine.

Embeddings are float32 rows that the caller has L2-normalised, so cosine = inner product; they
are not renormalised here. Two backends:

- ``exact`` (torch, CPU or CUDA): blocks of queries x blocks of the base, one ``torch.mm`` per
  pair of blocks, the block's exact top-k merged into a running top-k. Memory grows with
  N + M (the inputs, the (M, k) results and one block of scores), never with N x M.
- ``faiss`` (optional, ``pip install 'deepssim[faiss]'``): ``flat`` (exact, ``IndexFlatIP``),
  ``ivf`` (``IndexIVFFlat``) and ``hnsw`` (``IndexHNSWFlat``), the latter two approximate;
  :func:`search` measures their recall@k against exact search on a sample of queries.

Ordering rule (both backends): each row is sorted by score descending, then by base index
ascending; the exact backend also *selects* by that rule when several base rows tie at the k-th
score, so it equals a brute-force full sort with a stable tie-break, bit for bit in the indices.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

if TYPE_CHECKING:  # torch is imported when a search runs
    import torch

BACKENDS = ("auto", "exact", "faiss")
INDEXES = ("flat", "ivf", "hnsw")

CPU_SCORE_BLOCK_BYTES = 128 * 2**20
"""Bytes of float32 scores per (query block x base block) product on the CPU. 2048 x 16384 was
the fastest shape measured for mm + top-k on a 2-core EPYC (larger blocks gained nothing)."""
CPU_BASE_BLOCK = 16384
"""Base rows per block on the CPU: one row of scores is 64 KiB, so the per-row top-k work of
a block stays in L2 while the block product is still large enough for an efficient GEMM."""
CUDA_SCORE_BLOCK_BYTES = 1024 * 2**20
CUDA_BASE_BLOCK = 65536
MAX_QUERY_BLOCK = 4096
SMALL_BLOCK = 1 << 16
"""Blocks of fewer scores than this are computed into a fresh tensor instead of the buffer."""
GROUP = 16
"""Columns per group in the two-stage block top-k (see ``_block_topk``)."""
AUTO_FAISS_MIN_PAIRS = 3 * 10**9
"""``backend="auto"`` with ``index="flat"`` uses FAISS ``IndexFlatIP`` (when installed) from
this many (query, base) pairs on. Measured on the 2-core EPYC (256-d, k=5, same process,
alternating runs): torch exact vs FAISS flat took 1.8 vs 2.6 s at 2,000 x 100,000, 0.8 vs 1.0 s
at 10k x 10k, 7.5 vs 8.1 s at 30k x 30k (9e8 pairs), but 24.7 vs 22.5 s at 100k x 30k (3e9)
and 37 vs 30 s at 100k x 100k: FAISS's fixed costs (building the index, its heaps) lose on
small problems, its BLAS and fused k-selection win on large ones. Not when torch would run on
CUDA and FAISS has no GPU (faiss-cpu beside a CUDA torch): the GPU GEMM is far faster."""


@dataclass(frozen=True)
class SearchResult:
    """Top-k neighbours of each query.

    Attributes:
        scores: (M, k') float32, inner products (or the pair rule of ``rescore``),
            descending in each row.
        indices: (M, k') int64 indices into the base (training) set; among equal scores the
            smaller index comes first. k' = min(k, N). Approximate indexes may find fewer
            than k' neighbours for a query: those slots hold index -1 and score -inf.
        backend: ``"exact"`` (torch) or ``"faiss"``.
        index: ``"flat"``, ``"ivf"`` or ``"hnsw"`` (always ``"flat"`` for ``exact``).
        device: where the scores were computed (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).
        recall: recall@k' of an approximate index, measured against exact search on a seeded
            sample of queries (mean of |approximate ∩ exact| / k'); None for exact searches.
        seconds: wall time of the search itself (the recall measurement is not included).
    """

    scores: np.ndarray
    indices: np.ndarray
    backend: str
    index: str
    device: str
    recall: float | None
    seconds: float


# --------------------------------------------------------------------------- input checks


def _check_embeddings(x: Any, name: str) -> np.ndarray:
    """``x`` as a C-contiguous float32 (n, d) array (no copy when it already is one)."""
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2D (n, dim) array of embeddings, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: empty set of embeddings (shape {arr.shape})")
    if arr.shape[1] == 0:
        raise ValueError(f"{name}: embeddings have dimension 0 (shape {arr.shape})")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name}: expected real numbers, got dtype {arr.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):  # reported just below instead
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    # Checked after the cast: float64 values beyond float32's range become inf here.
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{name}: {len(bad)} embedding(s) contain NaN or inf (first: row {bad[0]}); "
            "re-embed those images or drop them"
        )
    return arr


def _check_problem(queries: Any, base: Any, k: Any) -> tuple[np.ndarray, np.ndarray, int]:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    q = _check_embeddings(queries, "queries")
    b = _check_embeddings(base, "base")
    if q.shape[1] != b.shape[1]:
        raise ValueError(
            f"dimension mismatch: queries are {q.shape[1]}-d, base is {b.shape[1]}-d; "
            "embed both sets with the same model"
        )
    return q, b, min(int(k), b.shape[0])


def _as_tensor(x: np.ndarray) -> torch.Tensor:
    """Shares memory with ``x``; read-only arrays (memmaps) are fine since nothing writes."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(x)


# --------------------------------------------------------------------------- exact (torch)


def _sort_pairs(vals: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row by (-value, index); indices within a row are distinct."""
    import torch

    idx, perm = torch.sort(idx, dim=1)
    vals = vals.gather(1, perm)
    vals, perm = torch.sort(vals, dim=1, descending=True, stable=True)
    return vals, idx.gather(1, perm)


def _block_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-min(k, n) of each row of a contiguous (b, n) block under the (-score, column)
    order, sorted by it: (values, columns).

    ``torch.topk`` returns the right values but an unspecified choice among elements tied at
    the k-th value; rows where such a tie is possible are redone with a stable full sort.
    """
    import torch

    b, n = scores.shape
    kk = min(k, n)
    if kk == n:
        cols = torch.arange(n, device=scores.device).expand(b, n)
        return _sort_pairs(scores, cols)
    groups = n // GROUP
    if groups >= 4 * (kk + 1):
        # Two stages, because topk over a whole row was ~22% of the GEMM's time: the max of
        # each group of GROUP columns {j, j + groups, j + 2 groups, ...} (a strided view, so
        # the max is a vectorised elementwise max of GROUP contiguous row pieces), the top
        # (k + 1) groups by that max, then topk over the k best groups' columns only. Every
        # element above the k-th value lies in one of the k best groups, so the selection is
        # exact unless a tie at the k-th value is possible, which `clean` detects.
        main = groups * GROUP
        v3 = scores.as_strided((b, GROUP, groups), (scores.stride(0), groups, 1))
        gmax = torch.amax(v3, dim=1)
        gv, gi = torch.topk(gmax, kk + 1, dim=1)
        sel = gi[:, :kk].unsqueeze(1).expand(b, GROUP, kk)
        cand = v3.gather(2, sel).reshape(b, GROUP * kk)
        cand_cols = (sel + torch.arange(0, main, groups, device=scores.device).view(1, GROUP, 1))
        cand_cols = cand_cols.reshape(b, GROUP * kk)
        if main < n:  # the < GROUP trailing columns are candidates as they are
            cand = torch.cat([cand, scores[:, main:]], dim=1)
            tail = torch.arange(main, n, device=scores.device).expand(b, n - main)
            cand_cols = torch.cat([cand_cols, tail], dim=1)
        v, i = torch.topk(cand, kk + 1, dim=1)
        kth = v[:, kk - 1]
        # Clean: the (k+1)-th candidate and every unselected group (all <= gv[:, kk]) are
        # strictly below the k-th value, so the top-k set is unique.
        clean = (v[:, kk] < kth) & (gv[:, kk] < kth)
        vals, cols = v[:, :kk].contiguous(), cand_cols.gather(1, i[:, :kk])
    else:
        v, i = torch.topk(scores, kk + 1, dim=1)
        clean = v[:, kk] < v[:, kk - 1]
        vals, cols = v[:, :kk].contiguous(), i[:, :kk].contiguous()
    if not bool(clean.all()):
        rows = torch.nonzero(~clean).squeeze(1)
        # A stable descending sort keeps tied elements in column order: the reference rule.
        sv, si = torch.sort(scores[rows], dim=1, descending=True, stable=True)
        vals[rows], cols[rows] = sv[:, :kk], si[:, :kk]
    return _sort_pairs(vals, cols)


def _block_sizes(
    m: int, n: int, cuda: bool, block_queries: int | None, block_base: int | None
) -> tuple[int, int]:
    for name, value in (("block_queries", block_queries), ("block_base", block_base)):
        if value is not None and (isinstance(value, bool) or value < 1):
            raise ValueError(f"{name} must be >= 1, got {value}")
    budget = CUDA_SCORE_BLOCK_BYTES if cuda else CPU_SCORE_BLOCK_BYTES
    bb = block_base if block_base is not None else (CUDA_BASE_BLOCK if cuda else CPU_BASE_BLOCK)
    bb = min(bb, n)
    if block_queries is not None:
        bq = block_queries
    else:
        bq = max(1, min(MAX_QUERY_BLOCK, budget // (4 * bb)))
    return min(bq, m), bb


def topk_exact(
    queries: np.ndarray,
    base: np.ndarray,
    k: int,
    *,
    device: str = "auto",
    block_queries: int | None = None,
    block_base: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of each query row against the base rows by inner product.

    Promised: the result equals a full (M, N) score matrix sorted per row by (-score, base
    index): the same indices, including which of several tied base rows are kept at the k-th
    place, and the same scores to float32 rounding of the dot products. Results do not depend
    on the block sizes beyond that rounding. Memory: the inputs (shared, not copied, when they
    are C-contiguous float32), the (M, k) outputs and one block of float32 scores (128 MiB on
    the CPU by default, 1 GiB on CUDA). CPU work runs on torch's threads (all cores by default).

    Args:
        queries: (M, D) embeddings (the synthetic images).
        base: (N, D) embeddings (the training images).
        k: neighbours per query; if k > N, N columns are returned.
        device: ``auto`` (CUDA when torch sees one), ``cpu``, ``cuda`` or ``cuda:i``. On CUDA
            the base is copied to the GPU once when it fits in a quarter of the free memory,
            else streamed block by block.
        block_queries: query rows per block (default: from the memory budget).
        block_base: base rows per block (default: 16384 on the CPU, 65536 on CUDA).
        progress: show a progress bar over query blocks on stderr.

    Returns:
        ``(scores, indices)``: (M, min(k, N)) float32 and int64 arrays.

    Raises:
        ValueError: k < 1, empty or non-2D input, dimension mismatch, NaN / inf, block size < 1.
    """
    q, b, kk = _check_problem(queries, base, k)
    scores, indices, _ = _topk_exact(q, b, kk, device, block_queries, block_base, progress)
    return scores, indices


def _topk_exact(
    q: np.ndarray,
    b: np.ndarray,
    k: int,
    device: str,
    block_queries: int | None,
    block_base: int | None,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, str]:
    import torch

    from deepssim.refssim import resolve_device

    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    m, n = q.shape[0], b.shape[0]
    bq, bb = _block_sizes(m, n, cuda, block_queries, block_base)
    out_s = np.empty((m, k), dtype=np.float32)
    out_i = np.empty((m, k), dtype=np.int64)
    qt, bt = _as_tensor(q), _as_tensor(b)
    if cuda:
        free, _ = torch.cuda.mem_get_info(dev)
        if b.nbytes <= free // 4:
            bt = bt.to(dev)  # resident: each base block is then a view, no transfer per block
    # One flat buffer reused by every block product (torch.mm(out=...)): a fresh 128 MiB
    # result per block cost a third of the GEMM's speed in page faults on the CPU. A smaller
    # last block is a contiguous prefix of it.
    buf = torch.empty(bq * bb if bq * bb >= SMALL_BLOCK else 0, dtype=torch.float32, device=dev)
    n_blocks = -(-m // bq)
    with _full_precision(), torch.inference_mode(), tqdm(total=n_blocks, unit="block", desc="top-k search",
                                      disable=not progress, file=sys.stderr,
                                      dynamic_ncols=True) as bar:
        for i0 in range(0, m, bq):
            qa = qt[i0 : i0 + bq].to(dev, non_blocking=True)
            rows = qa.shape[0]
            best_v: torch.Tensor | None = None
            best_i: torch.Tensor | None = None
            for j0 in range(0, n, bb):
                bblk = bt[j0 : j0 + bb].to(dev, non_blocking=True)
                cols = bblk.shape[0]
                if rows * cols >= SMALL_BLOCK:
                    s = buf[: rows * cols].view(rows, cols)
                    torch.mm(qa, bblk.T, out=s)  # bblk.T is a view: BLAS reads it transposed
                else:  # mm(out=) costs ~0.6 ms of fixed overhead, which tiny blocks notice
                    s = torch.mm(qa, bblk.T)
                v, c = _block_topk(s, k)
                c = c + j0
                if best_v is None:
                    best_v, best_i = v, c
                else:
                    best_v, best_i = _sort_pairs(torch.cat([best_v, v], 1), torch.cat([best_i, c], 1))
                    best_v, best_i = best_v[:, :k], best_i[:, :k]
            assert best_v is not None and best_i is not None
            out_s[i0 : i0 + rows] = best_v.cpu().numpy()
            out_i[i0 : i0 + rows] = best_i.cpu().numpy()
            bar.update(1)
    _check_scores(out_s)
    return out_s, out_i, str(dev)


@contextlib.contextmanager
def _full_precision() -> Iterator[None]:
    """float32 products in float32: a caller's ``set_float32_matmul_precision("high")`` would
    let the GEMM use TF32 / bf16 (scores off by ~1e-3) and break the exactness promise."""
    import torch

    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _check_scores(scores: np.ndarray) -> None:
    if not np.isfinite(scores).all():
        raise ValueError(
            "inner products overflowed float32 (inf / NaN scores): the embeddings are not "
            "L2-normalised; normalise each row to unit length first"
        )


# --------------------------------------------------------------------------- FAISS


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise ImportError(
            "the faiss backend needs FAISS: pip install 'deepssim[faiss]' (installs faiss-cpu; "
            "use faiss-gpu for GPU indexes), or use backend='exact'"
        ) from exc
    return faiss


def faiss_available() -> bool:
    """Whether ``import faiss`` works."""
    try:
        _import_faiss()
    except ImportError:
        return False
    return True


def _faiss_gpu(faiss: Any, device: str) -> int | None:
    """The GPU id FAISS should use, or None for the CPU."""
    if device == "cpu":
        return None
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if device == "auto":
        return 0 if gpus > 0 else None
    if device == "cuda" or device.startswith("cuda:"):
        gpu = int(device.split(":", 1)[1]) if ":" in device else 0
        if gpu >= gpus:
            raise RuntimeError(
                f"device {device!r} was requested but this FAISS build sees {gpus} GPU(s) "
                "(faiss-cpu has none: install faiss-gpu, or use device='cpu')"
            )
        return gpu
    raise ValueError(f"unknown device {device!r}: use auto, cpu or cuda")


def topk_faiss(
    queries: np.ndarray,
    base: np.ndarray,
    k: int,
    *,
    index: str = "flat",
    device: str = "auto",
    nlist: int | None = None,
    nprobe: int | None = None,
    hnsw_m: int = 32,
    ef_search: int = 128,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by inner product with a FAISS index built on ``base``.

    Promised: each row sorted by (-score, base index). ``flat`` is exact and follows the tie
    rule of :func:`topk_exact` (rows tied at the k-th score are redone by it); its scores may
    differ from torch's by float rounding (FAISS sums the dot products in its own order), so
    where two scores differ only by rounding the kept index may differ.
    ``ivf`` and ``hnsw`` are approximate and may return fewer than min(k, N) neighbours for a
    query (index -1, score -inf). Runs on a FAISS GPU when one is visible and ``device``
    allows (HNSW has no FAISS GPU version and always runs on the CPU), with as many OpenMP
    threads as torch uses.

    Args:
        queries, base, k: as in :func:`topk_exact`.
        index: ``flat`` (``IndexFlatIP``), ``ivf`` (``IndexIVFFlat``, inner product, trained
            on the base) or ``hnsw`` (``IndexHNSWFlat``, inner product).
        device: ``auto`` (a FAISS GPU when there is one), ``cpu``, ``cuda`` or ``cuda:i``.
        nlist: IVF cells (default ~4 sqrt(N), at most N / 39 so each cell gets the 39
            training points k-means wants).
        nprobe: IVF cells visited per query (default max(16, nlist / 8), at most nlist).
        hnsw_m: HNSW graph degree.
        ef_search: HNSW search breadth (raised to k when smaller).

    Raises:
        ImportError: FAISS is not installed.
        ValueError: bad input (as in :func:`topk_exact`), unknown index, bad parameters.
    """
    q, b, kk = _check_problem(queries, base, k)
    scores, indices, _ = _topk_faiss(q, b, kk, index, device, nlist, nprobe, hnsw_m, ef_search)
    return scores, indices


def _ivf_params(n: int, nlist: int | None, nprobe: int | None) -> tuple[int, int]:
    if nlist is None:
        nlist = max(1, min(round(4 * math.sqrt(n)), n // 39))
    if nlist < 1 or nlist > n:
        raise ValueError(f"nlist must be in [1, N={n}], got {nlist}")
    if nprobe is None:
        nprobe = min(nlist, max(16, nlist // 8))
    if nprobe < 1:
        raise ValueError(f"nprobe must be >= 1, got {nprobe}")
    return nlist, min(nprobe, nlist)


def _topk_faiss(
    q: np.ndarray,
    b: np.ndarray,
    k: int,
    index: str,
    device: str,
    nlist: int | None,
    nprobe: int | None,
    hnsw_m: int,
    ef_search: int,
) -> tuple[np.ndarray, np.ndarray, str]:
    if index not in INDEXES:
        raise ValueError(f"unknown index {index!r}: use one of {', '.join(INDEXES)}")
    if hnsw_m < 2:
        raise ValueError(f"hnsw_m must be >= 2, got {hnsw_m}")
    if ef_search < 1:
        raise ValueError(f"ef_search must be >= 1, got {ef_search}")
    faiss = _import_faiss()
    import torch

    faiss.omp_set_num_threads(torch.get_num_threads())
    d = q.shape[1]
    gpu = None if index == "hnsw" else _faiss_gpu(faiss, device)
    if index == "flat":
        idx = faiss.IndexFlatIP(d)
    elif index == "ivf":
        nl, npr = _ivf_params(b.shape[0], nlist, nprobe)
        quantizer = faiss.IndexFlatIP(d)
        idx = faiss.IndexIVFFlat(quantizer, d, nl, faiss.METRIC_INNER_PRODUCT)
        idx.train(b)
        idx.nprobe = npr
    else:
        idx = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        idx.hnsw.efSearch = max(ef_search, k)
    if gpu is not None:
        res = faiss.StandardGpuResources()
        idx = faiss.index_cpu_to_gpu(res, gpu, idx)
        if index == "ivf":
            idx.nprobe = npr
    idx.add(b)
    n = b.shape[0]
    # Flat: one more neighbour than asked, so that rows tied at the k-th score (FAISS keeps an
    # arbitrary one of the tied rows) can be found and redone with the exact torch path,
    # which keeps the smallest indices: the same tie rule as topk_exact.
    extra = 1 if index == "flat" and k < n else 0
    scores, indices = idx.search(q, k + extra)
    scores = np.asarray(scores, dtype=np.float32)
    indices = np.asarray(indices, dtype=np.int64)
    if extra:
        tied = np.flatnonzero(scores[:, k] == scores[:, k - 1])
        scores, indices = scores[:, :k].copy(), indices[:, :k].copy()
        if len(tied):
            scores[tied], indices[tied], _ = _topk_exact(q[tied], b, k, "cpu", None, None, False)
    missing = indices < 0
    if missing.any():
        scores[missing] = -np.inf
    # FAISS orders tied scores arbitrarily: re-sort by (-score, index), missing slots last.
    key_index = np.where(missing, np.iinfo(np.int64).max, indices)
    order = np.lexsort((key_index, -scores), axis=1)
    scores = np.take_along_axis(scores, order, 1)
    indices = np.take_along_axis(indices, order, 1)
    _check_scores(scores[indices >= 0])
    return scores, indices, "cpu" if gpu is None else f"cuda:{gpu}"


# --------------------------------------------------------------------------- entry point


def check_search_options(backend: str, index: str) -> None:
    """Raise ValueError unless ``backend`` and ``index`` are known and go together."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if index not in INDEXES:
        raise ValueError(f"unknown index {index!r}: use one of {', '.join(INDEXES)}")
    if backend == "exact" and index != "flat":
        raise ValueError(f"index {index!r} is approximate and needs backend='faiss' (or 'auto')")


def search(
    queries: np.ndarray,
    base: np.ndarray,
    k: int,
    *,
    backend: str = "auto",
    index: str = "flat",
    device: str = "auto",
    recall_sample: int = 1000,
    progress: bool = False,
    seed: int = 0,
) -> SearchResult:
    """Top-k training neighbours of each synthetic embedding.

    ``backend="auto"``: the exact torch search, unless an approximate index is asked for
    (``index`` ``ivf`` / ``hnsw``, which need FAISS) or the problem has at least
    ``AUTO_FAISS_MIN_PAIRS`` (3e9) query x base pairs, FAISS is installed, and it would not
    run on the CPU while torch has a GPU (measured: FAISS flat is the faster CPU path from
    about that size on, slower below it). Both follow the same ordering and tie rule. For approximate indexes the
    recall@k is measured on ``recall_sample`` queries drawn with ``seed`` (all queries when
    there are fewer) against :func:`topk_exact`.

    Args:
        queries: (M, D) synthetic embeddings, L2-normalised.
        base: (N, D) training embeddings, L2-normalised.
        k: neighbours per query (N when k > N).
        backend: ``auto``, ``exact`` (torch) or ``faiss``.
        index: ``flat`` (exact), ``ivf`` or ``hnsw`` (approximate, FAISS only).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:i``.
        recall_sample: queries used to measure an approximate index's recall (>= 1).
        progress: progress bar on stderr (exact backend: over query blocks).
        seed: seed of the recall sample.

    Returns:
        A :class:`SearchResult`.

    Raises:
        ValueError: bad input or arguments (see :func:`topk_exact`), an approximate index with
            ``backend="exact"``.
        ImportError: FAISS is needed (``backend="faiss"`` or an approximate index) but missing.
    """
    check_search_options(backend, index)
    if isinstance(recall_sample, bool) or recall_sample < 1:
        raise ValueError(f"recall_sample must be >= 1, got {recall_sample}")
    q, b, kk = _check_problem(queries, base, k)
    backend = resolve_backend(backend, index, q.shape[0] * b.shape[0], device)
    t0 = time.perf_counter()
    if backend == "exact":
        scores, indices, dev = _topk_exact(q, b, kk, device, None, None, progress)
    else:
        scores, indices, dev = _topk_faiss(q, b, kk, index, device, None, None, 32, 128)
    seconds = time.perf_counter() - t0
    recall = None
    if index != "flat":
        rng = np.random.default_rng(seed)
        m = q.shape[0]
        rows = np.sort(rng.choice(m, size=min(recall_sample, m), replace=False))
        _, truth, _ = _topk_exact(q[rows], b, kk, device, None, None, False)
        found = indices[rows]
        hits = sum(len(np.intersect1d(found[r][found[r] >= 0], truth[r], assume_unique=True))
                   for r in range(len(rows)))
        recall = hits / (len(rows) * kk)
    return SearchResult(scores, indices, backend, index, dev, recall, seconds)


def search_flips(queries: np.ndarray, base: np.ndarray, k: int, **options: Any) -> SearchResult:
    """``search`` for queries (M, D), or for flip-search queries (M, F, D): the embeddings of
    each synthetic image's F flips, a training image scoring its best over them.

    The top k of the best-over-flips scores lie in the union of each flip's top k, so each
    flip is searched (as M * F queries) and the F lists of a query are merged: a training
    image found by several flips keeps its best score, ordered as ``search`` orders (score
    descending, the smaller index first among equals). Options as ``search``; an approximate
    index's recall is measured over the flipped queries.
    """
    queries = np.asarray(queries)
    if queries.ndim != 3:
        return search(queries, base, k, **options)
    m, f, d = queries.shape
    found = search(queries.reshape(m * f, d), base, k, **options)
    kk = found.scores.shape[1]
    scores = found.scores.reshape(m, f * kk)
    indices = found.indices.reshape(m, f * kk)
    # Each training image's best score first, then its repeats (-1 slots: none found).
    order = np.lexsort((-scores, indices), axis=-1)
    scores, indices = np.take_along_axis(scores, order, -1), np.take_along_axis(indices, order, -1)
    repeat = np.zeros_like(indices, dtype=bool)
    repeat[:, 1:] = indices[:, 1:] == indices[:, :-1]
    scores, indices = np.where(repeat, -np.inf, scores).astype(np.float32), np.where(repeat, -1, indices)
    order = np.lexsort((indices, -scores), axis=-1)[:, :kk]
    return replace(found, scores=np.take_along_axis(scores, order, -1),
                   indices=np.take_along_axis(indices, order, -1))


def resolve_backend(backend: str, index: str, pairs: int, device: str) -> str:
    """The backend ``search`` runs for ``backend`` (``auto`` resolved as ``search`` says) on a
    problem of ``pairs`` query x base pairs: ``exact`` or ``faiss``."""
    if backend != "auto":
        return backend
    return "faiss" if index != "flat" or _auto_faiss_flat(pairs, device) else "exact"


def _auto_faiss_flat(pairs: int, device: str) -> bool:
    """See ``AUTO_FAISS_MIN_PAIRS``."""
    if pairs < AUTO_FAISS_MIN_PAIRS or not faiss_available():
        return False
    import torch

    faiss = _import_faiss()
    faiss_gpu = device != "cpu" and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    torch_cuda = device != "cpu" and torch.cuda.is_available()
    return faiss_gpu or not torch_cuda


RESCORE_FLOATS = 1 << 25
"""Floats of the query and candidate rows ``rescore`` gathers at a time (128 MB; the pair
rule's own temporaries come on top)."""


def rescore(
    found: SearchResult, queries: np.ndarray, base: np.ndarray,
    pair_scores: Callable[[np.ndarray, np.ndarray], np.ndarray], chunk: int | None = None,
) -> SearchResult:
    """``found`` with each candidate's score recomputed by ``pair_scores(base rows, query
    rows)`` (a rule that is not one inner product, such as the cross-fitted flip of
    ``flips.py``: the search finds candidates by the best flip, this scores them) and each
    query's candidates re-ordered by it (score descending, the smaller index first among
    equals; empty slots, index -1, stay last). Queries are taken ``chunk`` at a time (by
    default as many as keep the gathered rows within ``RESCORE_FLOATS``)."""
    scores = found.scores.copy()
    m, k = found.indices.shape
    if chunk is None:
        row = int(np.prod(queries.shape[1:])) + int(np.prod(base.shape[1:]))
        chunk = max(1, RESCORE_FLOATS // max(1, k * row))
    for start in range(0, m, chunk):
        idx = found.indices[start : start + chunk]
        rows, cols = np.nonzero(idx >= 0)
        if len(rows):
            scores[start + rows, cols] = pair_scores(base[idx[rows, cols]], queries[start + rows])
    valid = found.indices >= 0
    order = np.lexsort((np.where(valid, found.indices, np.iinfo(np.int64).max),
                        -np.where(valid, scores, -np.inf)), axis=-1)
    return replace(found, scores=np.take_along_axis(scores, order, -1).astype(np.float32),
                   indices=np.take_along_axis(found.indices, order, -1))
