"""Step-budget plans of an OA-ARDM (parallel generation): the dynamic programme of Hoogeboom et al. (2022), App. A.2.

An order-agnostic ARDM generates ``D`` variables in ``D`` steps ``t = 0 .. D-1`` (``t`` variables already known).
``L[t]`` is the expected loss, in nats per still-unknown variable, of one network call at step ``t``. Under a budget
of ``B`` network calls, a *plan* is a strictly increasing list of start steps ``0 = p[0] < p[1] < ... < p[B-1]``,
``p[B-1] <= D-1``; the call at state ``p[i]`` generates the ``p[i+1] - p[i]`` variables of interval ``[p[i], p[i+1])``
(with ``p[B] = D``) all at once, at expected cost ``(p[i+1] - p[i]) * L[p[i]]``. A plan's cost is the sum over its
intervals; with ``B = D`` it is ``sum(L)``, the model's negative log-likelihood bound.

:func:`optimal_plan` finds the cheapest plan with exactly ``B`` calls by dynamic programming over
``cost[k, t]``, the least cost of generating the first ``t`` variables in ``k`` calls::

    cost[0, 0] = 0,    cost[k, t] = min_{s < t} cost[k-1, s] + (t - s) * L[s].

Pure numpy, ``O(D^2 B)`` time and ``O(D B)`` memory (the argmin table used to read the plan back).
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["BudgetPlan", "monotone_components", "naive_plan", "optimal_plan", "plan_cost"]

_BLOCK_ELEMENTS = 1 << 18
"""How many candidate costs (rows of ``t`` times columns of ``s``) the DP evaluates at once.

Small enough that the scratch block stays in cache and memory stays ``O(D)`` even for large ``D``, large enough that
numpy's per-call overhead is negligible.
"""


@dataclass(frozen=True)
class BudgetPlan:
    """A step-budget plan for parallel generation: the start steps of its network calls and its expected cost.

    Attributes:
        steps: strictly increasing start steps, ``steps[0] == 0`` and ``steps[-1] <= num_variables - 1``.
        cost: expected cost in nats (summed over all variables) of generating with this plan.
        budget: number of network calls, ``len(steps)``.
        num_variables: ``D``, the number of variables generated.
    """

    steps: tuple[int, ...]
    cost: float
    budget: int
    num_variables: int

    def intervals(self) -> Iterator[tuple[int, int]]:
        """Yield the ``(left, right)`` step interval ``[left, right)`` of each network call, in order."""
        bounds = (*self.steps, self.num_variables)
        yield from itertools.pairwise(bounds)


def _checked_loss(loss: ArrayLike) -> np.ndarray:
    """A float64 1-D copy of ``loss``, after checking that it is non-empty, finite and non-negative."""
    values = np.array(loss, dtype=np.float64, copy=True)
    if values.ndim != 1:
        raise ValueError(f"loss components must be a 1-D array, got shape {values.shape}")
    if values.size == 0:
        raise ValueError("loss components are empty: need one expected loss per generation step")
    if not np.all(np.isfinite(values)):
        bad = np.flatnonzero(~np.isfinite(values))
        raise ValueError(f"loss components must be finite, got NaN or inf at steps {bad[:10].tolist()}")
    if np.any(values < 0):
        bad = np.flatnonzero(values < 0)
        raise ValueError(f"loss components must be non-negative, got negative values at steps {bad[:10].tolist()}")
    return values


def _checked_budget(budget: int, num_variables: int) -> int:
    """``budget`` as an int, after checking ``1 <= budget <= num_variables``."""
    if isinstance(budget, bool):
        raise ValueError(f"budget must be an integer, got {budget!r}")
    try:
        budget = operator.index(budget)
    except TypeError:
        raise ValueError(f"budget must be an integer, got {budget!r}") from None
    if not 1 <= budget <= num_variables:
        raise ValueError(f"budget must satisfy 1 <= budget <= {num_variables} (the number of variables), got {budget}")
    return budget


def _checked_steps(plan: Sequence[int] | ArrayLike, num_variables: int) -> np.ndarray:
    """``plan`` as an int64 array, after checking it starts at 0, strictly increases and stays below ``D``."""
    steps = np.asarray(plan)
    if steps.ndim != 1 or steps.size == 0:
        raise ValueError(f"a plan must be a non-empty 1-D sequence of start steps, got shape {steps.shape}")
    if steps.dtype == np.bool_ or not np.issubdtype(steps.dtype, np.integer):
        raise ValueError(f"a plan's start steps must be integers, got dtype {steps.dtype}")
    steps = steps.astype(np.int64)
    if steps[0] != 0:
        raise ValueError(f"a plan must start at step 0, got first step {int(steps[0])}")
    if np.any(np.diff(steps) <= 0):
        raise ValueError(f"a plan's start steps must be strictly increasing, got {steps.tolist()[:20]}")
    if steps[-1] > num_variables - 1:
        raise ValueError(
            f"a plan's start steps must lie in [0, {num_variables - 1}] for {num_variables} variables, "
            f"got last step {int(steps[-1])}"
        )
    return steps


def monotone_components(loss: ArrayLike) -> np.ndarray:
    """The loss components sorted in descending order, as a new float64 array.

    A calibrated model's expected loss per unknown variable decreases as more variables are known; sorting before the
    DP (as the paper's code does) keeps estimation noise in the tracked EMA from producing erratic plans.

    Raises:
        ValueError: if ``loss`` is empty, not 1-D, or holds NaN, infinite or negative entries.
    """
    values = _checked_loss(loss)
    # Descending, stable: equal components keep their order (irrelevant for the values, but deterministic).
    return values[np.argsort(-values, kind="stable")]


def plan_cost(loss: ArrayLike, plan: Sequence[int] | ArrayLike) -> float:
    """Expected cost of ``plan`` under the loss components ``loss``, used as given (not sorted).

    The cost is ``sum_i (p[i+1] - p[i]) * L[p[i]]`` with ``p[B] = D = len(loss)``.

    Raises:
        ValueError: if ``loss`` is invalid (see :func:`monotone_components`) or ``plan`` is not a strictly
            increasing sequence of integer steps starting at 0 and inside ``[0, D-1]``.
    """
    values = _checked_loss(loss)
    steps = _checked_steps(plan, values.size)
    widths = np.diff(np.append(steps, values.size))
    # math.fsum rounds the exact sum once, so the cost does not depend on how the terms happen to be grouped.
    return math.fsum((widths * values[steps]).tolist())


def optimal_plan(loss: ArrayLike, budget: int, *, sort: bool = True) -> BudgetPlan:
    """The plan of least expected cost that generates ``D = len(loss)`` variables in exactly ``budget`` calls.

    Args:
        loss: ``L[t]``, the expected loss per unknown variable of a network call at step ``t`` (length ``D``).
        budget: the number of network calls ``B``, ``1 <= B <= D``.
        sort: sort ``loss`` in descending order first (:func:`monotone_components`); ``False`` uses it as given.

    Returns:
        The optimal :class:`BudgetPlan`; its ``cost`` is :func:`plan_cost` of its steps under the (sorted, if ``sort``)
        components. Among equally cheap predecessors of an interval, the DP keeps the earliest start step, so the
        result is deterministic.

    Raises:
        ValueError: on invalid components (see :func:`monotone_components`) or a budget outside ``[1, D]``.
    """
    values = monotone_components(loss) if sort else _checked_loss(loss)
    num = values.size
    budget = _checked_budget(budget, num)

    # choice[k, t]: the start step s of the last of k calls covering the first t variables, in the optimum. int32 keeps
    # the table (the only O(D B) structure) small; steps never exceed D.
    choice = np.zeros((budget + 1, num + 1), dtype=np.int32)
    # prev[s] = cost[k-1, s]; unreachable states stay inf, which the min never picks since a finite option exists.
    prev = np.full(num + 1, np.inf)
    prev[0] = 0.0
    cur = np.full(num + 1, np.inf)
    positions = np.arange(num + 1, dtype=np.float64)

    for k in range(1, budget + 1):
        # With k calls at least k variables are covered, and the remaining budget - k calls need one variable each.
        t_low, t_high = k, num - (budget - k)
        s_low = k - 1
        cur.fill(np.inf)
        rows = max(1, _BLOCK_ELEMENTS // max(1, t_high - s_low))
        for t0 in range(t_low, t_high + 1, rows):
            t1 = min(t0 + rows, t_high + 1)
            # Candidates s in [s_low, t1 - 2] (s < t <= t1 - 1); block[i, j] = cost[k-1, s] + (t - s) * L[s] for
            # t = t0 + i, s = s_low + j. (t - s) is formed first, not t*L[s] - s*L[s], which could cancel badly.
            s_idx = slice(s_low, t1 - 1)
            block = np.subtract.outer(positions[t0:t1], positions[s_idx])
            block *= values[s_idx]
            block += prev[s_idx]
            # Entries with s >= t are not predecessors of t; they lie in the columns s >= t0 only, a triangle.
            tail = block[:, t0 - s_low :]
            tail[np.triu_indices(t1 - t0, 0, tail.shape[1])] = np.inf
            best = np.argmin(block, axis=1)  # first minimum: the earliest start step on ties
            cur[t0:t1] = block[np.arange(t1 - t0), best]
            choice[k, t0:t1] = best + s_low
        prev, cur = cur, prev

    steps = [0] * budget
    t = num
    for k in range(budget, 0, -1):
        t = int(choice[k, t])
        steps[k - 1] = t
    # Recompute the cost from the steps (exactly as plan_cost does) rather than reporting the DP's running sum.
    return BudgetPlan(steps=tuple(steps), cost=plan_cost(values, steps), budget=budget, num_variables=num)


def naive_plan(num_variables: int, budget: int) -> tuple[int, ...]:
    """Evenly spaced start steps: ``budget`` calls spread uniformly over ``num_variables`` steps.

    The steps are ``np.linspace(0, D, B, endpoint=False)`` rounded half up, then repaired (if floating point ever
    made two coincide) into a strictly increasing sequence of exactly ``budget`` steps in ``[0, D-1]``.

    Raises:
        ValueError: if ``num_variables < 1`` or the budget is outside ``[1, num_variables]``.
    """
    num = operator.index(num_variables)
    if num < 1:
        raise ValueError(f"num_variables must be at least 1, got {num}")
    budget = _checked_budget(budget, num)
    # Round half up: unlike banker's rounding it is shift-invariant, so points >= 1 apart stay distinct.
    steps = np.floor(np.linspace(0, num, budget, endpoint=False) + 0.5).astype(np.int64)
    # Dedupe by force: each step at least one past the previous, and at most leaving one step per remaining call.
    for i in range(1, budget):
        steps[i] = max(steps[i], steps[i - 1] + 1)
    for i in range(budget - 1, -1, -1):
        steps[i] = min(steps[i], num - (budget - i))
    return tuple(int(s) for s in steps)
