"""OA-ARDM step-budget plans: the dynamic programme against brute force, edge budgets and bad inputs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anyorder_plugins.ardm.budget import (
    BudgetPlan,
    monotone_components,
    naive_plan,
    optimal_plan,
    plan_cost,
)


def _brute_cost(loss: list[float], steps: tuple[int, ...]) -> float:
    """Cost of a plan written out interval by interval (independently of plan_cost)."""
    bounds = [*steps, len(loss)]
    return math.fsum((bounds[i + 1] - bounds[i]) * loss[bounds[i]] for i in range(len(steps)))


def _brute_minimum(loss: list[float], budget: int) -> float:
    """Least cost over every plan with exactly ``budget`` start steps (0 plus budget - 1 of 1 .. D-1)."""
    num = len(loss)
    return min(_brute_cost(loss, (0, *rest)) for rest in itertools.combinations(range(1, num), budget - 1))


def _curves() -> list[np.ndarray]:
    """Random decreasing and non-monotone curves with D <= 9, plus a few with ties and zeros."""
    rng = np.random.default_rng(1234)
    curves = []
    for num in range(1, 10):
        curves.append(np.sort(rng.exponential(2.0, size=num))[::-1].copy())  # decreasing
        curves.append(rng.uniform(0.0, 5.0, size=num))  # non-monotone
    curves += [np.ones(7), np.array([3.0, 3.0, 1.0, 1.0, 0.0, 0.0]), np.array([0.0, 2.0, 0.0, 5.0, 1.0, 0.0, 4.0, 2.0])]
    return curves


CURVES = _curves()


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-300)


def _at_most(a: float, b: float) -> bool:
    """``a <= b`` up to rounding (the absolute slack covers subnormal components, which have little precision)."""
    return a <= b + 1e-12 * abs(b) + 1e-300


@pytest.mark.parametrize("index", range(len(CURVES)))
def test_optimal_plan_matches_brute_force_on_sorted_curve(index: int) -> None:
    loss = CURVES[index]
    ordered = np.sort(loss)[::-1].tolist()
    for budget in range(1, len(loss) + 1):
        plan = optimal_plan(loss, budget)
        assert _close(plan.cost, _brute_minimum(ordered, budget)), (loss, budget, plan)
        assert plan_cost(ordered, plan.steps) == plan.cost
        assert _close(_brute_cost(ordered, plan.steps), plan.cost)
        assert (plan.budget, plan.num_variables, len(plan.steps)) == (budget, len(loss), budget)


@pytest.mark.parametrize("index", range(len(CURVES)))
def test_unsorted_optimal_plan_matches_brute_force_on_curve_as_given(index: int) -> None:
    loss = CURVES[index]
    for budget in range(1, len(loss) + 1):
        plan = optimal_plan(loss, budget, sort=False)
        assert _close(plan.cost, _brute_minimum(loss.tolist(), budget)), (loss, budget, plan)
        assert plan_cost(loss, plan.steps) == plan.cost


def test_sort_matters_on_a_non_monotone_curve() -> None:
    # Cheap steps early, the expensive one last: used as given, one call at step 0 is cheapest; sorted, it is not.
    loss = np.array([0.0, 0.0, 0.0, 9.0])
    assert optimal_plan(loss, 2, sort=False).cost == 0.0
    assert optimal_plan(loss, 2).cost == 9.0  # sorted: [9, 0, 0, 0], the best plan is (0, 1)
    assert optimal_plan(loss, 2).steps == (0, 1)


@pytest.mark.parametrize("num", [1, 2, 5, 37])
def test_full_budget_and_single_call(num: int) -> None:
    loss = np.sort(np.random.default_rng(num).exponential(size=num))[::-1]
    full = optimal_plan(loss, num)
    assert full.steps == tuple(range(num))
    assert math.isclose(full.cost, math.fsum(loss), rel_tol=1e-12)
    assert list(full.intervals()) == [(t, t + 1) for t in range(num)]
    single = optimal_plan(loss, 1)
    assert single.steps == (0,)
    assert math.isclose(single.cost, num * loss[0], rel_tol=1e-12)
    assert list(single.intervals()) == [(0, num)]


def test_ties_pick_the_earliest_start_steps_deterministically() -> None:
    # On a constant curve every plan costs the same; the DP keeps the earliest predecessor at each step.
    for budget in range(1, 8):
        first = optimal_plan(np.ones(7), budget)
        assert first.steps == tuple(range(budget))
        assert first == optimal_plan(np.ones(7), budget)


def test_large_problem_is_consistent() -> None:
    num = 400
    loss = 3.0 * np.exp(-5.0 * np.arange(num) / num) + 0.05
    costs = [optimal_plan(loss, b).cost for b in (1, 5, 20, 80, 400)]
    assert all(a >= b for a, b in itertools.pairwise(costs))
    plan = optimal_plan(loss, 20)
    assert plan.cost <= plan_cost(loss, naive_plan(num, 20))
    assert plan_cost(loss, plan.steps) == plan.cost


@settings(max_examples=40, deadline=None)
@given(
    loss=st.lists(st.floats(0.0, 100.0, allow_nan=False, allow_infinity=False), min_size=1, max_size=40),
    data=st.data(),
)
def test_budget_monotonicity_and_never_worse_than_naive(loss: list[float], data: st.DataObject) -> None:
    num = len(loss)
    ordered = monotone_components(loss)
    costs = []
    for budget in range(1, num + 1):
        plan = optimal_plan(loss, budget)
        steps = np.asarray(plan.steps)
        assert steps[0] == 0 and np.all(np.diff(steps) > 0) and steps[-1] <= num - 1
        intervals = list(plan.intervals())
        assert intervals[0][0] == 0 and intervals[-1][1] == num
        assert all(left < right for left, right in intervals)
        naive = naive_plan(num, budget)
        assert _at_most(plan.cost, plan_cost(ordered, naive))
        costs.append(plan.cost)
    # More calls never cost more (descending components: splitting an interval can only lower its cost).
    assert all(_at_most(later, earlier) for earlier, later in itertools.pairwise(costs))
    budget = data.draw(st.integers(1, num))
    assert _at_most(optimal_plan(loss, budget, sort=False).cost, plan_cost(loss, naive_plan(num, budget)))


@pytest.mark.parametrize("num", [1, 2, 3, 7, 10, 99, 1000, 3072])
def test_naive_plan_is_evenly_spaced_and_strictly_increasing(num: int) -> None:
    for budget in sorted({1, 2, 3, num // 3, num // 2, num - 1, num} & set(range(1, num + 1))):
        steps = naive_plan(num, budget)
        assert len(steps) == budget and steps[0] == 0 and steps[-1] <= num - 1
        assert all(b > a for a, b in itertools.pairwise(steps))
        widths = np.diff([*steps, num])
        assert widths.max() - widths.min() <= 1
    assert naive_plan(10, 5) == (0, 2, 4, 6, 8)
    assert naive_plan(num, num) == tuple(range(num))


def test_monotone_components_sorts_a_copy() -> None:
    loss = np.array([1.0, 3.0, 2.0])
    out = monotone_components(loss)
    assert out.tolist() == [3.0, 2.0, 1.0] and out.dtype == np.float64
    assert loss.tolist() == [1.0, 3.0, 2.0]
    assert monotone_components([1, 2]).dtype == np.float64


def test_plan_is_frozen() -> None:
    plan = optimal_plan([2.0, 1.0], 1)
    assert isinstance(plan, BudgetPlan)
    with pytest.raises(AttributeError):
        plan.cost = 0.0  # type: ignore[misc]


@pytest.mark.parametrize("budget", [0, -1, 4, 100])
def test_budget_out_of_range(budget: int) -> None:
    with pytest.raises(ValueError, match=rf"budget.*{budget}") as info:
        optimal_plan([3.0, 2.0, 1.0], budget)
    assert "3" in str(info.value)
    with pytest.raises(ValueError, match="budget"):
        naive_plan(3, budget)


@pytest.mark.parametrize("budget", [1.5, "2", True])
def test_budget_must_be_an_integer(budget: object) -> None:
    with pytest.raises(ValueError, match="integer"):
        optimal_plan([3.0, 2.0, 1.0], budget)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        ([], "empty"),
        ([1.0, float("nan")], "finite"),
        ([1.0, float("inf")], "finite"),
        ([1.0, -0.5], "non-negative"),
        ([[1.0, 2.0]], "1-D"),
    ],
)
def test_bad_components(loss: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        monotone_components(loss)
    with pytest.raises(ValueError, match=message):
        optimal_plan(loss, 1)
    with pytest.raises(ValueError, match=message):
        optimal_plan(loss, 1, sort=False)
    with pytest.raises(ValueError, match=message):
        plan_cost(loss, [0])


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ([], "non-empty"),
        ([1, 2], "start at step 0"),
        ([0, 2, 2], "strictly increasing"),
        ([0, 3, 1], "strictly increasing"),
        ([0, 4], r"\[0, 3\]"),
        ([0, 1.5], "integers"),
        ([[0, 1]], "1-D"),
    ],
)
def test_malformed_plan(plan: list[object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_cost([4.0, 3.0, 2.0, 1.0], plan)


def test_plan_cost_uses_components_as_given() -> None:
    assert plan_cost([1.0, 5.0, 2.0], [0, 1]) == 1.0 + 2 * 5.0
    assert plan_cost(np.array([1.0, 5.0, 2.0]), np.array([0, 2])) == 2 * 1.0 + 2.0
