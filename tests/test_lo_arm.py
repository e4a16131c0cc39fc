"""LO-ARM: the reduction to OA-ARDM, the estimator and its RLOO gradient against exact enumeration of orders, the
bound against the model's marginal, the Plackett-Luce sampler, sampling with recorded orders, and a tiny run."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import MARKOV_CONFIG, tiny_markov

from anyorder.build import build_objective
from anyorder.cli import main
from anyorder.config import load_config
from anyorder.data import DataSpace
from anyorder.errors import ConfigError
from anyorder.objective import SampleContext
from anyorder_plugins.lo_arm.objective import plackett_luce_log_prob, plackett_luce_orders

VOCABS = (3, 2, 3, 2)  # D = 4, mixed vocabularies (K <= 3)
TINY_NET = ["network.name=bidirectional_transformer", "network.n_layers=1", "network.d_model=16", "network.n_heads=2"]


def _build(objective: str, *extra: str, vocab_sizes: tuple[int, ...] = VOCABS, sharpen: float = 4.0) -> Any:
    cfg = load_config(MARKOV_CONFIG, [f"objective.name={objective}", *TINY_NET, *extra])
    space = DataSpace("sequence", len(vocab_sizes), tuple(vocab_sizes), shape=(len(vocab_sizes),))
    torch.manual_seed(0)
    model = build_objective(cfg, space)
    with torch.no_grad():  # sharpen the random model so that orders, contexts and policies matter
        for p in model.parameters():
            p.mul_(sharpen)
    return model.eval().double()


def _all_points(vocab_sizes: tuple[int, ...] = VOCABS) -> torch.Tensor:
    return torch.tensor(list(itertools.product(*[range(k) for k in vocab_sizes])))


def _orders(d: int) -> list[torch.Tensor]:
    """Every order as the step of each variable (sigma[v] = step of v)."""
    return [torch.tensor(perm).argsort() for perm in itertools.permutations(range(d))]


def _log_q(scores: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """log q(z|x) [N] of Plackett-Luce(scores [N, D]) by its definition, step by step."""
    total = torch.zeros(scores.shape[0], dtype=scores.dtype)
    for step in range(sigma.shape[0]):
        var = int((sigma == step).nonzero())
        remaining = sigma >= step
        total = total + scores[:, var] - torch.logsumexp(scores[:, remaining], dim=1)
    return total


def _log_joint(model: Any, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """log p(z, x) [N] by the chain rule: at each step the policy's pick among masked variables and its value."""
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for step in range(x.shape[1]):
        known = (sigma < step)[None].expand_as(x)
        logp, extra = model.network_outputs(x, known, torch.full((x.shape[0],), step))
        h = model.policy_logits(logp, extra)
        var = int((sigma == step).nonzero())
        masked = ~known[0]
        total = total + h[:, var] - torch.logsumexp(h[:, masked], dim=1) + logp[:, var].gather(1, x[:, var:var + 1])[:, 0]
    return total


def _exact_elbo(model: Any, x: torch.Tensor) -> torch.Tensor:
    """sum_z q(z|x) [log p(z, x) - log q(z|x)] [N], by enumerating all D! orders."""
    scores = model.q_scores(x).double()
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for sigma in _orders(x.shape[1]):
        log_q = _log_q(scores, sigma)
        total = total + log_q.exp() * (_log_joint(model, x, sigma) - log_q)
    return total


@pytest.mark.parametrize("variant", [("st", "sep"), ("entropy", "st"), ("uniform", "sep"), ("st", "uniform")])
def test_estimator_mean_over_all_steps_and_prefixes_equals_the_exact_elbo(variant: tuple[str, str]) -> None:
    model = _build("lo_arm", f"objective.p_policy={variant[0]}", f"objective.q_policy={variant[1]}")
    x = _all_points()
    d = x.shape[1]
    with torch.no_grad():
        exact = _exact_elbo(model, x)
        scores = model.q_scores(x).double()
        # E_t E_{z<t ~ q} [D F(z<t, x)], with z<t's probability summed over the full orders that begin with it.
        mean = torch.zeros(x.shape[0], dtype=torch.float64)
        for sigma in _orders(d):
            weight = _log_q(scores, sigma).exp()
            for t in range(d):
                f = model.step_terms(x, sigma.expand_as(x), torch.full((x.shape[0],), t), scores)["F"]
                mean += weight * f.double()  # (1/D) * D F
        torch.testing.assert_close(mean, exact, atol=1e-9, rtol=0)
        # The evaluation's chain estimator for a fixed order is sum_t F(z<t): its q-average is the ELBO too.
        chain = torch.zeros(x.shape[0], dtype=torch.float64)
        for sigma in _orders(d):
            chain += _log_q(scores, sigma).exp() * model.order_log_probs(x, sigma.expand_as(x), scores)[2]
        torch.testing.assert_close(chain, exact, atol=1e-9, rtol=0)


def test_elbo_is_below_the_marginal_which_normalizes() -> None:
    model = _build("lo_arm")
    x = _all_points()
    with torch.no_grad():
        joints = torch.stack([_log_joint(model, x, sigma) for sigma in _orders(x.shape[1])])  # [D!, N]
        log_px = torch.logsumexp(joints, dim=0)
        assert abs(float(torch.logsumexp(log_px, dim=0))) < 1e-9  # sum_x sum_z p(z, x) = 1
        elbo = _exact_elbo(model, x)
        assert bool((elbo <= log_px + 1e-12).all())
        assert float((log_px - elbo).min()) > 1e-4  # a strict gap: q is not the posterior of this random model
        # order_log_probs agrees with the chain rule above, and log q with the definition.
        scores = model.q_scores(x).double()
        for sigma in _orders(x.shape[1])[:5]:
            log_joint, log_q, _ = model.order_log_probs(x, sigma.expand_as(x), scores)
            torch.testing.assert_close(log_joint, _log_joint(model, x, sigma), atol=1e-9, rtol=0)
            torch.testing.assert_close(log_q, _log_q(scores, sigma), atol=1e-9, rtol=0)


def test_sampled_estimator_is_unbiased_within_monte_carlo_error() -> None:
    model = _build("lo_arm")
    x = _all_points()[[0, 7, 20, 35]]
    reps = 20000
    with torch.no_grad():
        exact = _exact_elbo(model, x)
        tokens = x.repeat_interleave(reps, dim=0)
        torch.manual_seed(1)
        t = torch.randint(0, x.shape[1], (tokens.shape[0],))
        scores = model.q_scores(tokens).double()
        sigmas = plackett_luce_orders(scores, 2)
        f = model.step_terms(tokens, sigmas[0], t, scores)["F"].double().view(len(x), reps) * x.shape[1]
    mean, se = f.mean(1), f.std(1) / math.sqrt(reps)
    assert bool(((mean - exact).abs() < 4 * se).all()), (mean, exact, se)


def test_gumbel_top_k_draws_plackett_luce_orders() -> None:
    scores = torch.tensor([[1.5, -0.5, 0.0, 0.8]], dtype=torch.float64)
    draws = plackett_luce_orders(scores, 40000, generator=torch.Generator().manual_seed(0))[:, 0]  # [N, D]
    keys = (draws * torch.tensor([64, 16, 4, 1])).sum(1)
    for sigma in _orders(4):
        expected = float(_log_q(scores, sigma).exp())
        freq = float((keys == int((sigma * torch.tensor([64, 16, 4, 1])).sum())).double().mean())
        assert abs(freq - expected) < 4 * math.sqrt(expected * (1 - expected) / 40000) + 1e-4
    # The library's log-probability of a prefix agrees with the definition.
    sigma = torch.tensor([2, 0, 3, 1])
    prefix = plackett_luce_log_prob(scores, sigma[None], torch.tensor([2]))
    by_hand = (scores[0, 1] - torch.logsumexp(scores[0], 0)) + (scores[0, 3] - torch.logsumexp(scores[0, [0, 2, 3]], 0))
    torch.testing.assert_close(prefix[0], by_hand)


def test_rloo_gradient_mean_equals_the_exact_elbo_gradient() -> None:
    model = _build("lo_arm", "objective.num_samples=3", sharpen=2.0)
    x = _all_points()[[3, 30]]
    params = [p for p in model.parameters() if p.requires_grad]
    exact = torch.autograd.grad(_exact_elbo(model, x).sum(), params)
    exact_flat = torch.cat([g.flatten() for g in exact])
    chunks, reps = 8, 2500
    estimates = []
    torch.manual_seed(2)
    for _ in range(chunks):
        tokens = x.repeat(reps, 1)
        t = torch.randint(0, x.shape[1], (tokens.shape[0],))
        scores = model.q_scores(tokens)
        sigmas = plackett_luce_orders(scores, 3)
        out = model.loss_given(tokens, t, sigmas, scores=scores)
        # loss = -mean_b(estimate_b) / (D ln 2); the ELBO gradient of the two datapoints is the sum over them.
        grads = torch.autograd.grad(-out.loss * x.shape[1] * math.log(2.0) * len(x), params)
        estimates.append(torch.cat([g.flatten() for g in grads]))
    stacked = torch.stack(estimates)
    mean, se = stacked.mean(0), stacked.std(0) / math.sqrt(chunks)
    top = exact_flat.abs().argsort(descending=True)[:40]  # the coordinates where the gradient is clearly non-zero
    z = ((mean[top] - exact_flat[top]) / (se[top] + 1e-12)).abs()
    assert float(z.max()) < 5.0, z
    assert float(torch.nn.functional.cosine_similarity(mean, exact_flat, dim=0)) > 0.999
    # The same draws without the REINFORCE term (only F's direct gradient) miss the prefix's dependence on q: the
    # test tells the difference.
    torch.manual_seed(2)
    direct = []
    for _ in range(chunks):
        tokens = x.repeat(reps, 1)
        t = torch.randint(0, x.shape[1], (tokens.shape[0],))
        scores = model.q_scores(tokens)
        sigmas = plackett_luce_orders(scores, 3)
        f = model.step_terms(tokens.repeat(3, 1), sigmas.reshape(-1, x.shape[1]), t.repeat(3), scores.repeat(3, 1))
        estimate = f["F"].view(3, -1).mean(0) * x.shape[1]
        direct.append(torch.cat([g.flatten() for g in torch.autograd.grad(estimate.sum() / reps, params)]))
    biased = torch.stack(direct)
    z_direct = ((biased.mean(0)[top] - exact_flat[top]) / (biased.std(0)[top] / math.sqrt(chunks) + 1e-12)).abs()
    assert float(z_direct.max()) > 20.0


def test_uniform_policies_give_exactly_the_ardm_loss() -> None:
    ardm = _build("ardm", "objective.ce_weight=0.01")
    lo = _build("lo_arm", "objective.p_policy=uniform", "objective.q_policy=uniform", "objective.ce_weight=0.01")
    lo.network.load_state_dict(ardm.network.state_dict())
    tokens = _all_points()
    b, d = tokens.shape
    torch.manual_seed(3)
    t = torch.randint(0, d, (b,))
    sigmas = torch.stack([torch.rand(b, d).argsort(1).argsort(1) for _ in range(2)])
    with torch.no_grad():
        ours = lo.loss_given(tokens, t, sigmas)
        theirs = [ardm.loss_given(tokens, t, sigmas[k]) for k in range(2)]
    torch.testing.assert_close(ours.loss, (theirs[0].loss + theirs[1].loss) / 2, atol=1e-12, rtol=0)
    torch.testing.assert_close(ours.nats, (theirs[0].nats + theirs[1].nats) / 2, atol=1e-9, rtol=0)
    # One draw each (K=1 is not allowed for training, but the per-draw terms match draw by draw).
    for k in range(2):
        f = lo.step_terms(tokens, sigmas[k], t, lo.q_scores(tokens))["F"]
        ll = ardm._unknown_ll(tokens, sigmas[k], t)
        torch.testing.assert_close(d * f, d * ll / (d - t).double(), atol=1e-9, rtol=0)


def test_sampling_records_orders_and_makes_d_calls() -> None:
    model = _build("lo_arm").float()
    calls = []
    model.network.register_forward_hook(lambda *args: calls.append(1))
    out = model.sample(5, SampleContext.standalone(0))
    assert len(calls) == len(VOCABS) and out.stats["network_calls"] == len(VOCABS)
    order = out.extras["order"]
    assert torch.equal(order.sort(1).values, torch.arange(len(VOCABS)).expand(5, -1))
    for v, k in enumerate(VOCABS):
        assert int(out.tokens[:, v].max()) < k
    # Greedy orders are deterministic given the values drawn so far.
    model.config.order_temperature = 0.0
    a = model.sample(4, SampleContext.standalone(1))
    b = model.sample(4, SampleContext.standalone(1))
    assert torch.equal(a.extras["order"], b.extras["order"]) and torch.equal(a.tokens, b.tokens)


@pytest.mark.parametrize(("override", "match"), [
    ("objective.num_samples=1", "num_samples must be >= 2"),
    ("objective.p_policy=greedy", "p_policy must be one of"),
    ("objective.q_network={name: bidirectional_transformer, n_layerz: 1}", "n_layerz"),
])
def test_bad_options_are_refused(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(MARKOV_CONFIG, ["objective.name=lo_arm", *TINY_NET, override])


@pytest.mark.e2e
def test_tiny_run_logs_the_terms_and_evaluates_every_estimator(tmp_path: Path) -> None:
    overrides = [*tiny_markov(tmp_path), "objective.name=lo_arm", *TINY_NET, "objective.q_entropy_weight=0.01",
                 "train.log_every_n_steps=1", "data.length=6"]
    assert main(["train", str(MARKOV_CONFIG), *overrides]) == 0
    run = next((tmp_path / "runs").iterdir())
    metrics = (run / "logs" / "metrics.csv") if (run / "logs" / "metrics.csv").exists() else None
    if metrics is None:
        metrics = next(run.rglob("metrics.csv"))
    header = metrics.read_text().splitlines()[0]
    for term in ("elbo_bpd", "log_px_bpd", "log_pz_bpd", "log_qz_bpd", "entropy_q", "entropy_p", "rloo_grad_var"):
        assert f"train/{term}" in header, term
    reports = {}
    for est in ("chain", "step", "iw"):
        assert main(["evaluate", str(run), f"objective.eval_estimator={est}", "--out",
                     str(tmp_path / f"{est}.json")]) == 0
        reports[est] = json.loads((tmp_path / f"{est}.json").read_text())
    for est, report in reports.items():
        assert report["protocol"]["estimator"]["variant"] == "LO-ARM-st-sep"
        assert math.isfinite(report["nll_nats"]) and report["nll_nats"] > 0, est
    assert reports["iw"]["protocol"]["estimator"]["estimator"].startswith("the importance-weighted bound")
    # The importance-weighted bound is at least the ELBO on average (both are seeded estimates with errors).
    slack = 2 * (reports["iw"]["nll_nats_se"] + reports["chain"]["nll_nats_se"])
    assert reports["iw"]["nll_nats"] <= reports["chain"]["nll_nats"] + slack
