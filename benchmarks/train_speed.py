"""Training-step throughput of the ``fast`` preset: ``torch.compile`` against eager, same process.

One training step as ``deepssim train`` runs it, without the in-batch pairs' extra loss:
perturb and normalise a batch of images (the normalisation is compiled too), the network
forward (bfloat16 autocast on the CPU where the preset asks for it), a loss on the cosines,
backward, gradient clipping and the optimizer step. Two copies of the same network (same
initial weights, same batches) take turns, round after round, so that both see the same
machine load; the ratio of their median step times is the speed-up. The compilation, done
when the trainer's ``StepNetwork`` is made, is timed separately (Inductor caches it, so a
second run of this script shows the warm figure).

    python benchmarks/train_speed.py                    # fast preset: 96 pairs, 128 px
    python benchmarks/train_speed.py --rounds 20 --batch-size 64
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from deepssim.model import Embedder
from deepssim.training import Perturb, get_preset
from deepssim.training.steps import StepNetwork, perturbed_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=None,
                        help="sampled pairs a step (default: the preset's)")
    parser.add_argument("--size", type=int, default=None, help="image side (default: the preset's)")
    parser.add_argument("--rounds", type=int, default=10, help="timed steps of each variant")
    args = parser.parse_args()
    config = get_preset("fast")
    config = config.with_overrides(batch_size=args.batch_size or config.batch_size,
                                   preprocess__size=args.size or config.preprocess.size)
    n, size = 2 * config.batch_size, config.preprocess.size
    torch.manual_seed(0)
    images = np.random.default_rng(0).random((n, size, size), dtype=np.float32)
    base = Embedder(config.model, log_init=False).to(memory_format=torch.channels_last)
    variants = {}
    made = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        network = copy.deepcopy(base)
        optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        t0 = time.perf_counter()
        step_network = StepNetwork(network, config.preprocess, compile=compiled, full=n,
                                   amp=config.cpu_bf16, device=torch.device("cpu"))
        made[name] = time.perf_counter() - t0
        variants[name] = (network, step_network, optimizer)
    if variants["compiled"][1].compiled is None:
        raise SystemExit("torch.compile failed (see the warning above): nothing to compare")
    perturb = Perturb(config.perturb)
    target = torch.rand(config.batch_size, generator=torch.Generator().manual_seed(1))

    def step(name: str) -> float:
        network, step_network, optimizer = variants[name]
        t0 = time.perf_counter()
        emb = step_network(perturbed_batch(images, np.arange(n), perturb,
                                           torch.Generator().manual_seed(2), torch.device("cpu")))
        scores = (emb[: n // 2] * emb[n // 2 :]).sum(dim=1).float()
        loss = torch.nn.functional.mse_loss(scores, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), config.grad_clip)
        optimizer.step()
        return time.perf_counter() - t0

    first = {name: step(name) for name in variants}
    for name in variants:  # one more untimed step each: allocator and caches warm
        step(name)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name in variants:
            times[name].append(step(name))
    median = {name: float(np.median(t)) for name, t in times.items()}
    print(f"# fast preset training step: {config.batch_size} pairs ({n} images) of {size} px, "
          f"bf16 {config.cpu_bf16}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds")
    print()
    print("| variant | compiling (s) | first step (s) | median step (ms) | images/s |")
    print("|---|---|---|---|---|")
    for name in variants:
        print(f"| {name} | {made[name]:.1f} | {first[name]:.1f} | {1000 * median[name]:.0f} | "
              f"{n / median[name]:.0f} |")
    print()
    print(f"speed-up of the compiled step: {median['eager'] / median['compiled']:.2f}x")


if __name__ == "__main__":
    main()
