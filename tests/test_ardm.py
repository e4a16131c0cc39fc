"""OA-ARDM: the estimator against exact enumeration of orders, the bound against the model's marginal, the step
budget (network calls, plan likelihood), the tracked per-step losses, and a tiny run through the CLI."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from helpers import MARKOV_CONFIG, tiny_markov

from anyorder.build import build_objective
from anyorder.cli import main
from anyorder.config import load_config
from anyorder.data import DataSpace
from anyorder.errors import ConfigError
from anyorder.objective import EvalContext, SampleContext, StepContext

VOCABS = (3, 2, 3, 2)  # D = 4, mixed vocabularies (K <= 3)


def _tiny_ardm(vocab_sizes: tuple[int, ...] = VOCABS, *extra: str) -> object:
    cfg = load_config(MARKOV_CONFIG, ["objective.name=ardm", "network.name=bidirectional_transformer",
                                      "network.n_layers=1", "network.d_model=16", "network.n_heads=2", *extra])
    space = DataSpace("sequence", len(vocab_sizes), tuple(vocab_sizes), shape=(len(vocab_sizes),))
    torch.manual_seed(0)
    model = build_objective(cfg, space)
    with torch.no_grad():  # sharpen the random model so that orders and contexts matter
        for p in model.parameters():
            p.mul_(6.0)
    return model.eval().double()


def _all_points(vocab_sizes: tuple[int, ...]) -> torch.Tensor:
    return torch.tensor(list(itertools.product(*[range(k) for k in vocab_sizes])))


def _orders(d: int) -> torch.Tensor:
    """Every order as a [D!, D] tensor of generation steps (entry v: the step of variable v)."""
    return torch.tensor(list(itertools.permutations(range(d))))


def _log_p_given_order(model: object, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """log p(x | sigma) [N] by the chain rule: one network call per step, on the variables generated before it."""
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for t in range(x.shape[1]):
        known = sigma[None] < t
        steps = torch.full((x.shape[0],), t)
        logp = model.log_probs(x, known.expand_as(x), steps)  # type: ignore[attr-defined]
        variable = int((sigma == t).nonzero())
        total += logp[:, variable].gather(1, x[:, variable:variable + 1]).squeeze(1).double()
    return total


def test_estimator_mean_over_all_t_and_orders_equals_expected_log_likelihood() -> None:
    model = _tiny_ardm()
    xs = _all_points(VOCABS)
    d = len(VOCABS)
    orders = _orders(d)
    with torch.no_grad():
        exact = torch.stack([_log_p_given_order(model, xs, sigma) for sigma in orders]).mean(0)  # E_sigma log p(x|s)
        estimate = torch.zeros(len(xs), dtype=torch.float64)
        for sigma in orders:
            for t in range(d):
                steps = torch.full((len(xs),), t)
                ll = model._unknown_ll(xs, sigma.expand(len(xs), d), steps)  # type: ignore[attr-defined]
                estimate += d * ll.double() / (d - t)
        estimate /= len(orders) * d
    torch.testing.assert_close(estimate, exact, atol=1e-9, rtol=0)


def test_sampled_estimator_is_unbiased_within_monte_carlo_error() -> None:
    model = _tiny_ardm()
    d = len(VOCABS)
    x = torch.tensor([[2, 1, 0, 1]])
    with torch.no_grad():
        exact = float(torch.stack([_log_p_given_order(model, x, s) for s in _orders(d)]).mean())
        torch.manual_seed(1)
        draws = 40000
        batch = x.expand(draws, d)
        ll = model.log_likelihood({"tokens": batch, "index": torch.arange(draws)}, EvalContext())  # type: ignore[attr-defined]
    # eval_passes draws per datapoint, each an independent (t, sigma): the mean of all draws estimates E_sigma log p.
    values = ll.log_prob
    mean, se = float(values.mean()), float(values.std() / math.sqrt(draws))
    assert abs(mean - exact) < 4 * se, (mean, exact, se)
    assert se < 0.02  # the test has power: the estimator's spread is small next to the values compared


def test_bound_is_below_the_marginal_and_each_order_normalizes() -> None:
    model = _tiny_ardm()
    xs = _all_points(VOCABS)
    with torch.no_grad():
        per_order = torch.stack([_log_p_given_order(model, xs, s) for s in _orders(len(VOCABS))])  # [D!, N]
    torch.testing.assert_close(torch.logsumexp(per_order, dim=1), torch.zeros(per_order.shape[0], dtype=torch.float64),
                               atol=1e-9, rtol=0)
    log_marginal = torch.logsumexp(per_order, dim=0) - math.log(per_order.shape[0])  # log E_sigma p(x|sigma)
    bound = per_order.mean(0)
    assert (bound <= log_marginal + 1e-12).all()
    assert float((log_marginal - bound).max()) > 1e-3  # the orders disagree: the inequality is not trivially tight
    assert abs(float(torch.logsumexp(log_marginal, 0))) < 1e-9


def test_training_loss_terms_and_step_loss_tracking() -> None:
    model = _tiny_ardm((3,) * 6, "objective.loss_ema=0.5")
    model.train()
    with pytest.raises(ConfigError, match="no per-step losses"):
        model.step_losses()  # type: ignore[attr-defined]
    torch.manual_seed(0)
    xs = torch.randint(0, 3, (32, 6))
    out = model.loss({"tokens": xs}, StepContext.standalone())  # type: ignore[attr-defined]
    assert out.loss.requires_grad and torch.isfinite(out.loss)
    assert set(out.terms) == {"elbo_bpd", "ce_bpd"} and float(out.num_tokens) == 32 * 6
    seen = model.step_seen.clone()  # type: ignore[attr-defined]
    assert seen.any()
    curve = model.step_losses()  # type: ignore[attr-defined]
    assert curve.shape == (6,) and (curve > 0).all()
    state = model.state_dict()
    assert "step_loss" in state and "step_seen" in state  # saved in checkpoints


def test_step_budget_calls_the_network_exactly_budget_times() -> None:
    model = _tiny_ardm((3,) * 8)
    with torch.no_grad():
        model.step_loss.copy_(torch.linspace(1.0, 0.1, 8, dtype=torch.float64))  # type: ignore[attr-defined]
        model.step_seen.fill_(True)  # type: ignore[attr-defined]
    calls = []
    model.network.register_forward_hook(lambda *args: calls.append(1))  # type: ignore[attr-defined]
    for budget, expected in [(0, 8), (3, 3), (8, 8), (1, 1)]:
        calls.clear()
        out = model.sample(5, SampleContext.standalone(0, steps=budget))  # type: ignore[attr-defined]
        assert len(calls) == expected and out.stats["network_calls"] == expected
        assert out.tokens.shape == (5, 8) and int(out.tokens.max()) < 3
        assert sorted(out.extras["order"][0].tolist()) == list(range(8))


def test_plan_likelihood_of_full_budget_equals_chain_rule() -> None:
    model = _tiny_ardm()
    xs = _all_points(VOCABS)
    d = len(VOCABS)
    with torch.no_grad():
        for sigma in _orders(d)[:6]:
            full = model._plan_ll(xs, sigma.expand(len(xs), d), [(t, t + 1) for t in range(d)])  # type: ignore
            torch.testing.assert_close(full.double(), _log_p_given_order(model, xs, sigma), atol=1e-9, rtol=0)
            # One call for everything: each variable scored from nothing known (the product of the t=0 marginals).
            one = model._plan_ll(xs, sigma.expand(len(xs), d), [(0, d)])  # type: ignore[attr-defined]
            t0 = model.log_probs(xs, torch.zeros_like(xs, dtype=torch.bool), torch.zeros(len(xs), dtype=torch.long))
            torch.testing.assert_close(one.double(), t0.gather(-1, xs[..., None]).squeeze(-1).sum(1).double(),
                                       atol=1e-9, rtol=0)
            # Budgeted distributions still normalize over all datapoints.
            assert abs(float(torch.logsumexp(one.double(), 0))) < 1e-9


def test_evaluating_with_d_steps_scores_the_whole_chain_of_each_pass() -> None:
    from anyorder.objective import mix_seed
    from anyorder_plugins.ardm.objective import random_orders

    d = len(VOCABS)
    model = _tiny_ardm(VOCABS, f"eval.steps={d}", "objective.eval_passes=3")
    xs = _all_points(VOCABS)
    got = model.log_likelihood({"tokens": xs, "index": torch.arange(len(xs))}, EvalContext(steps=d))  # type: ignore[attr-defined]
    expected = torch.zeros(len(xs), dtype=torch.float64)
    for p in range(3):  # the passes' orders, drawn as documented in the protocol
        sigma = random_orders(len(xs), d, generator=torch.Generator().manual_seed(mix_seed(0, 0, p)))  # type: ignore[attr-defined]
        for row in range(len(xs)):
            expected[row] += _log_p_given_order(model, xs[row:row + 1], sigma[row])[0] / 3
    torch.testing.assert_close(got.log_prob, expected, atol=1e-9, rtol=0)
    assert model.likelihood_protocol()["steps"] == d  # type: ignore[attr-defined]
    assert "whole chain" in model.likelihood_protocol()["estimator"]  # type: ignore[attr-defined]


@pytest.mark.e2e
def test_step_budget_is_refused_by_a_left_to_right_objective(tmp_path: Path) -> None:
    assert main(["train", str(MARKOV_CONFIG), *tiny_markov(tmp_path)]) == 0
    run = next((tmp_path / "runs").iterdir())
    assert main(["sample", str(run), "--num", "2", "--out", str(tmp_path / "s.txt"), "--steps", "2"]) == 2


@pytest.mark.e2e
def test_tiny_run_evaluate_and_sample_with_a_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = Path(MARKOV_CONFIG).parent / "ardm.yaml"
    assert main(["train", str(config), *tiny_markov(tmp_path), "objective.eval_passes=2"]) == 0
    run = next((tmp_path / "runs").iterdir())
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert bool(state["objective.step_seen"].any())
    assert main(["evaluate", str(run), "--steps", "4"]) == 0
    report = json.loads((run / "eval" / "test-last-steps4.json").read_text())
    estimator = report["protocol"]["estimator"]
    assert estimator["steps"] == 4 and len(estimator["plan"]) == 4 and estimator["passes"] == 2
    assert main(["evaluate", str(run)]) == 0
    full = json.loads((run / "eval" / "test-last.json").read_text())
    assert full["protocol"]["estimator"]["steps"] == 12 and full["nll_nats"] > 0
    out = tmp_path / "s.jsonl"
    assert main(["sample", str(run), "--num", "3", "--out", str(out), "--steps", "4"]) == 0
    assert len(out.read_text().splitlines()) == 3


@pytest.mark.e2e
def test_compress_and_decompress_a_split_and_a_single_datapoint(tmp_path: Path) -> None:
    config = Path(MARKOV_CONFIG).parent / "ardm.yaml"
    assert main(["train", str(config), *tiny_markov(tmp_path)]) == 0
    run = next((tmp_path / "runs").iterdir())
    packed, unpacked = tmp_path / "test.ardm", tmp_path / "test.txt"
    assert main(["compress", str(run), str(packed), "--split", "test", "--steps", "4", "--batch-size", "8",
                 "--sigma-tries", "2"]) == 0
    summary = json.loads(Path(f"{packed}.json").read_text())
    assert summary["num"] == 20 and summary["steps"] == 4
    assert summary["payload_bits"] <= 1.01 * summary["ideal_bits"] + 64
    assert main(["decompress", str(run), str(packed), str(unpacked)]) == 0
    from anyorder.build import restore_run

    data = restore_run(run).datamodule
    data.setup()
    expected = [data.to_text(data.decode(row, 12)) for row in data.splits.test.tokens]
    assert unpacked.read_text().splitlines() == expected
    # --limit codes the first N datapoints of the split.
    first = tmp_path / "first.ardm"
    assert main(["compress", str(run), str(first), "--split", "test", "--limit", "7", "--sigma-tries", "1"]) == 0
    assert json.loads(Path(f"{first}.json").read_text())["num"] == 7
    assert main(["decompress", str(run), str(first), str(tmp_path / "first.txt")]) == 0
    assert (tmp_path / "first.txt").read_text().splitlines() == expected[:7]
    # One datapoint from a text file, coded on its own.
    single_in, single = tmp_path / "one.txt", tmp_path / "one.ardm"
    single_in.write_text(expected[3] + "\n")
    assert main(["compress", str(run), str(single_in), str(single), "--mode", "single"]) == 0
    assert main(["decompress", str(run), str(single), str(tmp_path / "one.out")]) == 0
    assert (tmp_path / "one.out").read_text() == expected[3] + "\n"
    # A damaged file and another model are refused with a clear error (exit status 2), not decoded wrongly.
    raw = bytearray(packed.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    damaged = tmp_path / "damaged.ardm"
    damaged.write_bytes(bytes(raw))
    assert main(["decompress", str(run), str(damaged), str(tmp_path / "x.txt")]) == 2
    assert main(["train", str(config), *tiny_markov(tmp_path), "seed=1"]) == 0
    other = sorted((tmp_path / "runs").iterdir())[-1]
    assert other != run
    assert main(["decompress", str(other), str(packed), str(tmp_path / "y.txt")]) == 2
    assert not (tmp_path / "y.txt").exists() and not (tmp_path / "x.txt").exists()
