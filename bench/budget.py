"""OA-ARDM step-budget plan benchmark: time of the optimal-plan dynamic programme, and its saving over a naive plan.

Times :func:`anyorder_plugins.ardm.budget.optimal_plan` (wall clock, median of ``--repeats`` runs after one
warm-up run) for ``D = 1000`` with a budget of 50 calls, and for ``D = 3072`` (a 32x32x3 CIFAR-10 image) with budgets
of 50 and 100 calls. The DP is ``O(D^2 B)`` time in pure numpy on one core.

It also prints, for each size and budget, the ratio of the optimal plan's expected cost to that of the naive,
evenly spaced plan (:func:`naive_plan`), on two synthetic decreasing loss curves (nats per unknown variable
at step ``t``): ``exp``, ``3 exp(-5 t / D) + 0.05`` (steep at the start, as when the first variables are the
hardest), and ``linear``, ``2 (1 - t / D) + 0.1``. A ratio below 1 is what the DP saves; with ``B = D`` both are 1.

Run from the repository root::

    python bench/budget.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from anyorder_plugins.ardm.budget import naive_plan, optimal_plan, plan_cost

CURVES: dict[str, Callable[[int], np.ndarray]] = {
    "exp": lambda num: 3.0 * np.exp(-5.0 * np.arange(num) / num) + 0.05,
    "linear": lambda num: 2.0 * (1.0 - np.arange(num) / num) + 0.1,
}
"""Synthetic decreasing loss curves, by name: ``D -> L[0 .. D-1]``."""

CASES = [(1000, 50), (3072, 50), (3072, 100)]
"""``(D, budget)`` pairs that are timed."""


def time_plan(loss: np.ndarray, budget: int, repeats: int) -> float:
    """Median wall-clock seconds of ``optimal_plan(loss, budget)`` over ``repeats`` runs, after one warm-up."""
    optimal_plan(loss, budget)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        optimal_plan(loss, budget)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    """Print the timings and the optimal / naive cost ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (the median is reported)")
    args = parser.parse_args()

    print(f"{'D':>5} {'budget':>6} {'median s':>9} " + " ".join(f"{name + ' opt/naive':>17}" for name in CURVES))
    for num, budget in CASES:
        seconds = time_plan(CURVES["exp"](num), budget, args.repeats)
        ratios = []
        for make in CURVES.values():
            loss = make(num)
            ratios.append(optimal_plan(loss, budget).cost / plan_cost(loss, naive_plan(num, budget)))
        print(f"{num:>5} {budget:>6} {seconds:>9.3f} " + " ".join(f"{ratio:>17.5f}" for ratio in ratios))


if __name__ == "__main__":
    main()
