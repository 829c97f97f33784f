"""The excess memorization rate on non-copies only (true excess 0): its mean and how often
its 95% interval covers 0, for holdouts of several sizes. Runs in seconds on a CPU:

    python benchmarks/holdout_excess.py
"""

import numpy as np
from deepssim.auditing.holdout import calibrate_holdout, excess_rate


def main() -> None:
    rng = np.random.default_rng(0)
    for n, m, fpr, runs in [(99, 2000, 0.01, 2000), (199, 5000, 0.01, 1000), (999, 20000, 0.01, 300), (19, 2000, 0.05, 2000)]:
        ex, cov = [], 0
        for _ in range(runs):
            null = 0.9 * rng.random(n); synth = 0.9 * rng.random(m)   # non-copies only; under 0.95, none flagged
            cal = calibrate_holdout(null, np.zeros(n, bool), [""]*n, [""]*n, fpr)
            d_s = int((synth > cal.thresholds.duplicate_min).sum())
            e = excess_rate(d_s, m, cal.false_alarms, cal.n, rank=cal.rank)
            ex.append(e["excess_memorization_rate"]); lo, hi = e["excess_memorization_rate_ci95"]; cov += lo <= 0 <= hi
        print(f"n={n} m={m} fpr={fpr} runs={runs}: mean excess {np.mean(ex):+.4f} (se {np.std(ex)/np.sqrt(runs):.4f})  CI covers 0: {cov/runs:.3f}")


if __name__ == "__main__":
    main()
