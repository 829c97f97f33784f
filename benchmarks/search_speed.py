"""Exact top-k search throughput: deepssim's streamed torch search vs a plain ``torch.mm``.

Random L2-normalised float32 embeddings (M synthetic x N training, D dims), k neighbours.
Each method runs in a fresh Python subprocess that generates the same data (seeded, in
float32 chunks so that generating it leaves no transient peak), so that its peak memory can be
read honestly: the increase of the process's peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``)
over the search, which sees torch's and FAISS's native allocations (tracemalloc would not).

Methods:
- ``mm``: the baseline. The same block products as the exact search (same block sizes, into
  the same reused buffer), computed and discarded: all of the GEMM work, none of the top-k,
  and memory bounded like the search's. A single (M, N) product would need M x N x 4 bytes.
- ``exact``: ``deepssim.auditing.nearest.topk_exact``.
- ``faiss-flat``: ``topk_faiss(index="flat")`` (``IndexFlatIP``), when FAISS is installed.

With ``--device cuda`` both methods run on the GPU from the same numpy arrays in host memory
(the baseline copies the base to the GPU and each query block to it, as the search does, and
waits for the GPU before the clock stops); peak memory is then also read on the GPU
(``torch.cuda.max_memory_allocated``). FAISS runs on its GPU only where its build has one.

GFLOP/s = 2 M N D / seconds for every method (the useful work of the search).

    python benchmarks/search_speed.py                     # 100,000 x 100,000, 256-d, k = 5
    python benchmarks/search_speed.py --n-queries 20000 --n-base 20000 --repeat 3
    python benchmarks/search_speed.py --device cuda       # on a GPU machine
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_data(n: int, d: int, seed: int) -> np.ndarray:
    import torch

    g = torch.Generator().manual_seed(seed)
    out = torch.empty(n, d, dtype=torch.float32)
    for s in range(0, n, 8192):
        chunk = out[s : s + 8192]
        chunk.normal_(generator=g)
        chunk.div_(chunk.norm(dim=1, keepdim=True))
    return out.numpy()


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def worker(args: argparse.Namespace) -> None:
    import torch

    mod = importlib.import_module("deepssim.auditing.nearest")
    device = args.device
    cuda = device.startswith("cuda")
    q = make_data(args.n_queries, args.dim, 1)
    b = make_data(args.n_base, args.dim, 2)
    # Warm-up on a tiny problem (thread pools, lazy imports, CUDA context) before the peak is
    # read: tiny, so that it cannot raise the peak the measured run is compared with.
    if args.worker == "faiss-flat":
        mod.topk_faiss(q[:64], b[:256], args.k, index="flat", device=device)
    else:
        mod.topk_exact(q[:64], b[:256], args.k, device=device)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        gpu_before = torch.cuda.memory_allocated()
    before = peak_rss_bytes()
    t0 = time.perf_counter()
    if args.worker == "mm":
        m, n = q.shape[0], b.shape[0]
        bq, bb = mod._block_sizes(m, n, cuda, None, None)
        qt, bt = torch.from_numpy(q), torch.from_numpy(b).to(device)
        buf = torch.empty(bq * bb, device=device)
        with mod._full_precision(), torch.inference_mode():
            for i0 in range(0, m, bq):
                qa = qt[i0 : i0 + bq].to(device)
                for j0 in range(0, n, bb):
                    bblk = bt[j0 : j0 + bb]
                    torch.mm(qa, bblk.T, out=buf[: qa.shape[0] * bblk.shape[0]].view(qa.shape[0], -1))
        if cuda:
            torch.cuda.synchronize()
        scores = indices = None
    elif args.worker == "exact":
        scores, indices = mod.topk_exact(q, b, args.k, device=device)
    elif args.worker == "faiss-flat":
        scores, indices = mod.topk_faiss(q, b, args.k, index="flat", device=device)
    else:
        raise SystemExit(f"unknown method {args.worker}")
    seconds = time.perf_counter() - t0
    peak = peak_rss_bytes()
    gpu_peak = torch.cuda.max_memory_allocated() - gpu_before if cuda else 0
    if indices is not None:
        np.save(Path(args.out) / f"{args.worker}_indices.npy", indices)
        np.save(Path(args.out) / f"{args.worker}_scores.npy", scores)
    print(json.dumps({
        "method": args.worker, "seconds": seconds, "rss_before": before, "peak_increase": peak - before,
        "gpu_peak_increase": gpu_peak, "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if cuda else None,
    }))


def run_method(method: str, args: argparse.Namespace, out: str) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--worker", method, "--out", out,
           "--n-queries", str(args.n_queries), "--n-base", str(args.n_base),
           "--k", str(args.k), "--dim", str(args.dim), "--device", args.device]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-queries", type=int, default=100_000, help="M, synthetic embeddings")
    parser.add_argument("--n-base", type=int, default=100_000, help="N, training embeddings")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of all methods, interleaved; the best time of each is kept")
    parser.add_argument("--no-faiss", action="store_true", help="skip the FAISS row")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    import torch

    methods = ["mm", "exact"]
    try:
        import faiss

        # On a GPU the row compares like with like only where this FAISS build has GPUs.
        if not args.no_faiss and (args.device == "cpu" or faiss.get_num_gpus() > 0):
            methods.append("faiss-flat")
    except ImportError:
        pass
    best: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.repeat):
            for method in methods:
                r = run_method(method, args, out)
                old = best.get(method)
                if old is None or r["seconds"] < old["seconds"]:
                    for key in ("peak_increase", "gpu_peak_increase"):
                        r[key] = max(r[key], old[key] if old else 0)
                    best[method] = r
                else:
                    for key in ("peak_increase", "gpu_peak_increase"):
                        old[key] = max(old[key], r[key])
        agree = {}
        if "faiss-flat" in best:
            ei = np.load(Path(out) / "exact_indices.npy")
            fi = np.load(Path(out) / "faiss-flat_indices.npy")
            es = np.load(Path(out) / "exact_scores.npy")
            fs = np.load(Path(out) / "faiss-flat_scores.npy")
            agree["faiss-flat"] = ((fi == ei).mean(), float(np.abs(fs - es).max()))
    m, n, d = args.n_queries, args.n_base, args.dim
    flops = 2.0 * m * n * d
    base_rate = flops / best["mm"]["seconds"] / 1e9
    where = f"cuda ({best['mm']['gpu']})" if best["mm"]["gpu"] else "cpu"
    print(f"# Exact top-{args.k}, {m:,} x {n:,} embeddings, {d}-d float32, {where}, "
          f"{best['mm']['threads']} torch threads ({os.cpu_count()} cores seen), torch {torch.__version__}"
          + (f", best of {args.repeat}" if args.repeat > 1 else ""))
    print()
    gpu = best["mm"]["gpu"] is not None
    print("| method | seconds | GFLOP/s | share of mm | peak RSS increase |"
          + (" peak GPU memory increase |" if gpu else "") + " same indices as exact |")
    print("|---|---|---|---|---|" + ("---|" if gpu else "") + "---|")
    names = {"mm": "torch.mm blocks, no top-k (baseline)", "exact": "deepssim topk_exact",
             "faiss-flat": "faiss IndexFlatIP"}
    for method in methods:
        r = best[method]
        rate = flops / r["seconds"] / 1e9
        same = "" if method == "mm" else "100%" if method == "exact" else f"{100 * agree[method][0]:.3f}% (max score diff {agree[method][1]:.1e})"
        print(f"| {names[method]} | {r['seconds']:.1f} | {rate:.0f} | {100 * rate / base_rate:.0f}% | "
              f"{r['peak_increase'] / 2**20:.0f} MiB | "
              + (f"{r['gpu_peak_increase'] / 2**20:.0f} MiB | " if gpu else "") + f"{same} |", flush=True)


if __name__ == "__main__":
    main()
