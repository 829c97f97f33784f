"""Coverage of the leaked-patients intervals (docs/patients.md), by simulation.

Each scenario is a generator that copies a training patient with a known probability per
synthetic image (``rate`` x the patient's weight). Every run draws one release of ``n`` synthetic
images, computes ``n_leaked_ci95`` (``leaked_interval``) and ``patients_at_risk_ci95``
(``patients_at_risk``), and checks them against the truth: the expected number of distinct
patients a release of ``n`` leaks (``sum_p 1 - (1 - rate w_p)^n``), and the number of patients
with a copy probability above 0. It prints, per scenario, the coverage of each (target 0.95),
the coverage of a second, fresh release's count by ``n_leaked_ci95`` (which is not its target),
and the mean widths.

    python benchmarks/patients_interval.py            # 300 runs per scenario, under a minute
    python benchmarks/patients_interval.py --runs 1000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from deepssim.auditing.patients import BOOTSTRAP_REPLICATES, leaked_interval, patients_at_risk

SCENARIOS = [
    # name, training patients, synthetic images, copy rate, weights of the patients
    ("sparse uniform", 1000, 500, 0.2, np.ones(1000)),
    ("dense uniform", 20, 500, 0.2, np.ones(20)),
    ("Zipf", 500, 1000, 0.1, 1 / np.arange(1, 501)),
    ("few copies", 200, 200, 0.03, np.ones(200)),
    ("150 of 1000 at risk", 1000, 2000, 0.05, np.r_[np.ones(150), np.zeros(850)]),
]


def simulate(patients: int, n: int, rate: float, weights: np.ndarray, runs: int, replicates: int,
             rng: np.random.Generator) -> dict[str, float]:
    """Coverages and mean widths of the two intervals over ``runs`` releases of one scenario."""
    w = weights / weights.sum()
    expected = float(np.sum(1 - (1 - rate * w) ** n))
    at_risk = int(np.sum(w > 0))
    hits = {"expected": 0, "fresh": 0, "at_risk": 0, "at_risk_low": 0}
    widths, risk_widths = [], []
    for _ in range(runs):
        copied = rng.choice(patients, size=rng.binomial(n, rate), p=w)
        lo, hi = leaked_interval(copied, n, patients, replicates=replicates, seed=int(rng.integers(1 << 30)))
        fresh = len(np.unique(rng.choice(patients, size=rng.binomial(n, rate), p=w)))
        _, r_lo, r_hi = patients_at_risk(copied, patients)
        hits["expected"] += lo <= expected <= hi
        hits["fresh"] += lo <= fresh <= hi
        hits["at_risk"] += r_lo <= at_risk <= r_hi
        hits["at_risk_low"] += r_lo <= at_risk
        widths.append(hi - lo)
        risk_widths.append(r_hi - r_lo)
    return {"expected": expected, "at_risk": at_risk, **{f"cover_{k}": v / runs for k, v in hits.items()},
            "width": float(np.mean(widths)), "risk_width": float(np.mean(risk_widths))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=300, help="releases per scenario (default 300)")
    parser.add_argument("--replicates", type=int, default=BOOTSTRAP_REPLICATES,
                        help=f"bootstrap replicates per interval (default {BOOTSTRAP_REPLICATES}, the audit's)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"{'scenario':<21}{'E[leaked]':>10}{'cover':>7}{'fresh':>7}{'width':>7}"
          f"{'at risk':>9}{'cover':>7}{'low ok':>8}{'width':>7}")
    start = time.perf_counter()
    for name, patients, n, rate, weights in SCENARIOS:
        r = simulate(patients, n, rate, weights, args.runs, args.replicates, rng)
        print(f"{name:<21}{r['expected']:>10.1f}{r['cover_expected']:>7.3f}{r['cover_fresh']:>7.3f}"
              f"{r['width']:>7.1f}{r['at_risk']:>9d}{r['cover_at_risk']:>7.3f}{r['cover_at_risk_low']:>8.3f}"
              f"{r['risk_width']:>7.1f}")
    print(f"{args.runs} runs per scenario, {args.replicates} replicates, seed {args.seed}: "
          f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
