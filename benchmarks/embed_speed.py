"""Embedding throughput from files on disk versus the raw network forward on tensors in memory.

Same model, same batch size, same images, same process. "files" is what ``deepssim embed``
does: scan a folder, read each file (JPEG decode, grayscale), resize, normalise, forward; the
reading and resizing of the next batch run in a worker thread while the network computes.
"raw" is only the network forward on already normalised tensors. The ratio says how much of
the network's speed the whole path keeps (target: >= 85%).

    python benchmarks/embed_speed.py                       # fast-preset network, 512 images
    python benchmarks/embed_speed.py --flips               # each image's four flips, as the
                                                           # fast preset's scores need them
    python benchmarks/embed_speed.py --backbone resnet18 --size 224
    python benchmarks/embed_speed.py --device cuda --backbone convnext_base --size 224 --n 2048

On a GPU the raw forward starts from tensors already on the GPU, and the embeddings of both
paths are also compared with the same model's on the CPU (device independence).
"""

from __future__ import annotations

import argparse
import copy
import csv
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from deepssim.model import Embedder, ModelConfig, Preprocess, load_model, save_model
from deepssim.model.files import embed_folder
from deepssim.model.flips import by_flip, flipped
from deepssim.training import get_preset

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "brain-tumor-mri"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=512, help="images")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backbone", default=None, help="default: the fast preset's")
    parser.add_argument("--size", type=int, default=None, help="default: the fast preset's")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--flips", action="store_true",
                        help="embed each image's four flips (deepssim embed --flips; what the "
                             "scores of a cross-fit model such as the fast preset's take), the "
                             "raw forward on the four flips of the same tensors")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--workers", default="1,2",
                        help="reading threads of the files path, one row each (default 1,2)")
    parser.add_argument("--data", type=Path, default=DATA,
                        help="the brain-tumor-mri folder (holds manifest.csv); default ../shared/data's")
    args = parser.parse_args()
    data = args.data
    if not (data / "manifest.csv").is_file():
        raise SystemExit(f"{data / 'manifest.csv'} not found: this benchmark reads ../shared/data in place")
    cuda = args.device.startswith("cuda")
    fast = get_preset("fast")
    config = fast.model if args.backbone is None else ModelConfig(backbone=args.backbone)
    preprocess = Preprocess(size=args.size or fast.preprocess.size, intensity=fast.preprocess.intensity)

    with open(data / "manifest.csv") as fh:
        rows = list(csv.DictReader(fh))
    paths = [(data / r["path"]).resolve() for r in rows[:: max(1, len(rows) // args.n)][: args.n]]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for k, path in enumerate(paths):  # links, not copies: the data stays where it is
            (folder / f"{k:05d}.jpg").symlink_to(path)
        torch.manual_seed(0)
        save_model(Path(tmp) / "model", Embedder(config).eval(), preprocess)
        model = load_model(Path(tmp) / "model", device=args.device)

        workers = [int(w) for w in args.workers.split(",")]
        ids, _ = embed_folder(model, folder, batch_size=args.batch_size, workers=workers[0],
                              flips=args.flips)  # warm-up

        from deepssim.readers import read_image

        resized = np.stack([preprocess.resize(read_image(folder / i)) for i in ids])
        tensors = preprocess.normalize(torch.from_numpy(resized)).to(args.device)

        # The network as it was built (contiguous NCHW weights): the baseline of the layout
        # the model runs in on the CPU (channels-last).
        plain = copy.deepcopy(model.network).to(memory_format=torch.contiguous_format)

        def forward(network: torch.nn.Module | None = None, layout: torch.memory_format = torch.contiguous_format
                    ) -> list[torch.Tensor]:
            network = model.network if network is None else network
            with torch.no_grad():
                batches = (tensors[s : s + args.batch_size] for s in range(0, len(tensors), args.batch_size))
                out = [by_flip(network((flipped(x) if args.flips else x).contiguous(memory_format=layout)), len(x))
                       if args.flips else network(x.contiguous(memory_format=layout)) for x in batches]
            if cuda:
                torch.cuda.synchronize()
            return out

        layout = torch.channels_last if model.device.type == "cpu" else torch.contiguous_format
        t_raw = t_plain = float("inf")
        t_files = dict.fromkeys(workers, float("inf"))
        embeddings = {}
        for _ in range(args.repeat):  # rounds of every path: all see the same machine load
            t0 = time.perf_counter()
            out = forward(layout=layout)
            t_raw = min(t_raw, time.perf_counter() - t0)
            t0 = time.perf_counter()
            out_plain = forward(plain)
            t_plain = min(t_plain, time.perf_counter() - t0)
            for w in workers:
                t0 = time.perf_counter()
                ids, embeddings[w] = embed_folder(model, folder, batch_size=args.batch_size, workers=w,
                                                  flips=args.flips)
                t_files[w] = min(t_files[w], time.perf_counter() - t0)
        emb = embeddings[workers[0]]
        raw = torch.cat(out).float().cpu().numpy()
        if cuda:
            on_cpu = load_model(Path(tmp) / "model", device="cpu")
            _, cpu_emb = embed_folder(on_cpu, folder, batch_size=args.batch_size, flips=args.flips)
    n = len(ids)
    where = f"cuda ({torch.cuda.get_device_name()})" if cuda else "cpu"
    print(f"# embedding throughput, {n} JPEG files, backbone {config.backbone}, {preprocess.size} px, "
          f"batch {args.batch_size}{' x 4 flips' if args.flips else ''}, {where}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print()
    print("| path | images/s | share of raw |")
    print("|---|---|---|")
    print(f"| raw network forward (tensors in memory) | {n / t_raw:,.0f} | 100% |")
    if layout == torch.channels_last:
        print(f"| raw network forward, contiguous NCHW (not channels-last) | {n / t_plain:,.0f} | "
              f"{100 * t_raw / t_plain:.0f}% |")
    for w, t in t_files.items():
        print(f"| deepssim embed (files on disk), {w} reading thread{'s' if w > 1 else ''} | "
              f"{n / t:,.0f} | {100 * t_raw / t:.0f}% |")
    plain_raw = torch.cat(out_plain).float().cpu().numpy()
    print(f"\nchannels-last forward: {t_plain / t_raw:.2f}x the contiguous one; max |embedding difference| "
          f"between them: {np.abs(raw - plain_raw).max():.1e}")
    print(f"max |embedding difference| between the two paths: {np.abs(raw - emb).max():.1e}; "
          f"between reading threads: {max(np.abs(e - emb).max() for e in embeddings.values()):.1e}")
    if cuda:
        unit = [x / np.linalg.norm(x, axis=-1, keepdims=True) for x in (emb, cpu_emb)]
        cos_gap = np.abs((unit[0] * unit[1]).sum(-1) - 1).max()
        print(f"max |embedding difference| CUDA vs CPU (same model, deepssim embed): "
              f"{np.abs(emb - cpu_emb).max():.1e}; max |1 - cosine|: {cos_gap:.1e}")


if __name__ == "__main__":
    main()
