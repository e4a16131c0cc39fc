"""Sentence-VAE: the importance-weighted estimator and the mutual-information estimator against exact answers, the
beta schedules and free bits, the objective's ELBO and IW-NLL against their definitions, and a tiny run."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO

from anyorder.module import build_plugin
from anyorder_plugins.sentence_vae.config import SentenceVAEConfig
from anyorder_plugins.sentence_vae.estimators import importance_weighted
from anyorder_plugins.sentence_vae.latent import LatentFamily
from anyorder_plugins.sentence_vae.objective import beta_at, free_bits_kl
from anyorder_plugins.sentence_vae.statistics import mutual_information

PTB_CONFIG = REPO / "configs" / "ptb" / "sentence_vae.yaml"


def _gaussian(dim: int) -> LatentFamily:
    return build_plugin("latent", {"name": "gaussian"}, dim)


def _params(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    return torch.cat([mean, var.log()], dim=-1)


# -- a linear-Gaussian model with a closed-form marginal --------------------------------------------------------------
# z ~ N(0, I_m), x | z ~ N(W z + b, s^2 I_d). With W's columns orthogonal, the posterior is diagonal:
# Cov = diag(1 / (1 + |w_j|^2 / s^2)), mean = Cov W^T (x - b) / s^2, and log p(x) = log N(x; b, W W^T + s^2 I).

def _linear_gaussian(d: int = 5, m: int = 2, s: float = 0.7) -> tuple[torch.Tensor, torch.Tensor, float]:
    q_mat, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    w = q_mat[:, :m] * torch.tensor([1.5, 0.6], dtype=torch.float64)[:m]
    b = torch.linspace(-1, 1, d, dtype=torch.float64)
    return w, b, s


def _log_px(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, s: float) -> torch.Tensor:
    cov = w @ w.T + s * s * torch.eye(w.shape[0], dtype=torch.float64)
    return torch.distributions.MultivariateNormal(b, covariance_matrix=cov).log_prob(x)


def _log_px_given_z(x: torch.Tensor, z: torch.Tensor, w: torch.Tensor, b: torch.Tensor, s: float) -> torch.Tensor:
    mean = z @ w.T + b  # [k, B, d]
    return torch.distributions.Normal(mean, s).log_prob(x[None].expand_as(mean)).sum(-1)


def _true_posterior(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, s: float) -> tuple[torch.Tensor, torch.Tensor]:
    var = 1.0 / (1.0 + (w * w).sum(0) / (s * s))  # [m]
    mean = ((x - b) @ w) / (s * s) * var
    return mean, var.expand_as(mean)


def test_iw_with_the_true_posterior_is_exact_for_every_k() -> None:
    w, b, s = _linear_gaussian()
    x = torch.randn(6, w.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + b
    family = _gaussian(w.shape[1])
    q = family.posterior(_params(*_true_posterior(x, w, b, s)))
    exact = _log_px(x, w, b, s)
    for k in (1, 3, 50):
        got = importance_weighted(lambda z: _log_px_given_z(x, z, w, b, s), q, family.prior(), k, chunk=7,
                                  generator=torch.Generator().manual_seed(k))
        torch.testing.assert_close(got, exact, atol=1e-9, rtol=0)


def test_iw_with_a_perturbed_posterior_lies_between_the_elbo_and_log_px_and_grows_with_k() -> None:
    w, b, s = _linear_gaussian()
    x = torch.randn(4, w.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(2)) + b
    family = _gaussian(w.shape[1])
    mean, var = _true_posterior(x, w, b, s)
    q = family.posterior(_params(mean + 0.4, var * 2.5))
    exact = _log_px(x, w, b, s)
    reps = 400
    means = {}
    for k in (1, 4, 16, 64):
        draws = torch.stack([importance_weighted(lambda z: _log_px_given_z(x, z, w, b, s), q, family.prior(), k,
                                                 generator=torch.Generator().manual_seed(1000 * k + r))
                             for r in range(reps)])
        means[k] = (draws.mean(0), draws.std(0) / math.sqrt(reps))
    elbo, se1 = means[1]  # IW with K = 1 is the single-sample ELBO estimate
    for k in (4, 16, 64):
        value, se = means[k]
        assert bool((value <= exact + 4 * se + 1e-9).all()), (k, value, exact)
        assert bool((value >= elbo - 4 * (se + se1)).all())
    ordered = [means[k][0] for k in (1, 4, 16, 64)]
    for small, large in itertools.pairwise(ordered):
        assert bool((large >= small - 4 * (means[1][1] + means[64][1])).all())
    assert bool((exact - means[1][0] > 0.05).all())  # the perturbed q leaves a real gap at K = 1
    assert bool(((exact - means[64][0]) < (exact - means[1][0]) / 2).all())  # and K = 64 closes most of it


def test_iw_matches_quadrature_for_a_categorical_decoder_with_a_1d_latent() -> None:
    # p(z) = N(0, 1), p(x | z) = softmax(a z + c)[x] over 5 categories; log p(x) by Gauss-Hermite quadrature.
    a = torch.tensor([1.5, -0.7, 0.2, 2.0, -1.9], dtype=torch.float64)
    c = torch.tensor([0.1, 0.5, -0.3, -1.0, 0.2], dtype=torch.float64)
    nodes, weights = np.polynomial.hermite_e.hermegauss(120)
    nodes_t, weights_t = torch.tensor(nodes), torch.tensor(weights) / math.sqrt(2 * math.pi)
    log_px = torch.log((weights_t[:, None] * torch.softmax(nodes_t[:, None] * a + c, -1)).sum(0))  # [5]
    x = torch.arange(5)
    family = _gaussian(1)
    q = family.posterior(_params(torch.full((5, 1), 0.3, dtype=torch.float64), torch.full((5, 1), 1.4,
                                                                                          dtype=torch.float64)))

    def log_lik(z: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(z * a + c, -1).gather(-1, x[None, :, None].expand(z.shape[0], 5, 1))[..., 0]

    k = 20000
    got = importance_weighted(log_lik, q, family.prior(), k, chunk=5000, generator=torch.Generator().manual_seed(3))
    # Tolerance: 4 standard errors of log(mean w), from the relative spread of the importance weights.
    z = q.rsample(k, torch.Generator().manual_seed(4))
    w = (log_lik(z) + family.prior().log_prob(z) - q.log_prob(z) - log_px).exp()
    tolerance = 4 * w.std(0) / math.sqrt(k)
    assert bool(((got - log_px).abs() < tolerance).all()), (got - log_px, tolerance)
    assert float(tolerance.max()) < 0.05  # tight enough to catch a wrong weight (a missing log p(z) costs ~0.5)


def test_mutual_information_on_gaussians_with_known_mi() -> None:
    # x ~ N(0, I_2) per datapoint, q(z | x) = N(a x, s^2 I): I(x; z) = 2 * 0.5 log(1 + a^2 / s^2).
    n, a, s = 3000, 2.0, 0.5
    g = torch.Generator().manual_seed(4)
    x = torch.randn(n, 2, dtype=torch.float64, generator=g)
    family = _gaussian(2)
    params = _params(a * x, torch.full((n, 2), s * s, dtype=torch.float64))
    z = family.posterior(params).rsample(1, g)[0]
    truth = 2 * 0.5 * math.log(1 + a * a / (s * s))
    estimate = float(mutual_information(family, params, z))
    assert abs(estimate - truth) < 0.05, (estimate, truth)  # the aggregate over N = 3000 is biased by < 0.02 here
    # The minibatch estimator (the aggregate posterior over a batch of 32) cannot exceed log 32: capped far below.
    capped = float(mutual_information(family, params[:32], z[:32]))
    assert capped <= math.log(32) + 1e-9 and capped < estimate - 0.2


def test_beta_schedules() -> None:
    def cfg(**kw: object) -> SentenceVAEConfig:
        return SentenceVAEConfig(**kw)  # type: ignore[arg-type]

    assert beta_at(cfg(beta_max=0.7), 123, 1000) == 0.7
    linear = cfg(beta_schedule="linear", beta_start=0.1, warmup_steps=100)
    assert beta_at(linear, 0, 1000) == pytest.approx(0.1) and beta_at(linear, 50, 1000) == pytest.approx(0.55)
    assert beta_at(linear, 400, 1000) == 1.0
    logistic = cfg(beta_schedule="logistic", logistic_k=0.01, logistic_x0=300)
    assert beta_at(logistic, 300, 1000) == pytest.approx(0.5) and beta_at(logistic, 2000, 1000) > 0.99
    cyc = cfg(beta_schedule="cyclical", cycles=4, cycle_rise=0.5)
    assert [round(beta_at(cyc, t, 1000), 3) for t in (0, 62, 125, 200, 250, 312)] == [0.0, 0.496, 1.0, 1.0, 0.0,
                                                                                       0.496]
    with pytest.raises(Exception, match="warmup_steps"):
        cfg(beta_schedule="linear")


def test_free_bits_modes() -> None:
    kl = torch.tensor([[0.1, 2.0], [0.45, 0.05]], requires_grad=True)
    assert torch.equal(free_bits_kl(kl, 0.0, "dimension"), kl.sum(-1))
    per_dim = free_bits_kl(kl, 1.0, "dimension")  # allowance 0.5 per dimension
    torch.testing.assert_close(per_dim, torch.tensor([0.5 + 2.0, 0.5 + 0.5]))
    per_example = free_bits_kl(kl, 1.0, "example")
    torch.testing.assert_close(per_example, torch.tensor([2.1, 1.0]))
    batch = free_bits_kl(kl, 1.0, "batch")  # batch means per dimension: 0.275 (< 0.5, free) and 1.025 (kept)
    torch.testing.assert_close(batch, torch.tensor([2.0 + 0.5, 0.05 + 0.5]))
    (grad,) = torch.autograd.grad(per_dim.sum(), kl)
    assert torch.equal(grad, torch.tensor([[0.0, 1.0], [0.0, 0.0]]))  # KL under the allowance gets no gradient


def test_a_decoder_that_sees_the_future_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from anyorder.cli import main

    code = main(["train", str(PTB_CONFIG), "network.name=bidirectional_transformer", f"output_dir={tmp_path}",
                 "data.num_train=64", "logger.name=none"])
    err = capsys.readouterr().err
    assert code == 2 and "needs a network that is a CausalNetwork" in err and "Traceback" not in err, err


def test_objective_elbo_and_iw_against_their_definitions() -> None:
    from anyorder.build import build_objective
    from anyorder.config import load_config
    from anyorder.data import DataSpace
    from anyorder.objective import EvalContext

    cfg = load_config(PTB_CONFIG, ["objective.latent_dim=3", "network.d_hidden=16", "network.d_embed=8",
                                   "objective.encoder.d_hidden=16", "objective.encoder.d_embed=8",
                                   "objective.eval_iw_samples=64", "objective.eval_iw_chunk=16"])
    space = DataSpace.sequence(6, 7, variable_length=True)
    torch.manual_seed(0)
    model = build_objective(cfg, space).double().eval()
    tokens = torch.tensor([[1, 2, 3, 0, 0, 0], [4, 4, 5, 6, 1, 2]])
    lengths = torch.tensor([3, 6])
    batch = {"tokens": tokens, "lengths": lengths, "index": torch.tensor([0, 1])}
    ll = model.log_likelihood(batch, EvalContext())
    torch.testing.assert_close(-ll.log_prob, ll.terms["reconstruction"] + ll.terms["kl"])
    assert torch.equal(ll.num_tokens, lengths + 1)
    # IW with K = 64 is above the single-sample ELBO's expectation on average, and IW with K = 1 is the ELBO.
    q = model.posterior(batch)
    one = model.importance_weighted(tokens, lengths, q, 1, torch.Generator().manual_seed(5))
    z = q.rsample(1, torch.Generator().manual_seed(5))[0]
    elbo_same_z = -model.reconstruction(tokens, lengths, z) + model.family.prior().log_prob(z) - q.log_prob(z)
    torch.testing.assert_close(one, elbo_same_z.double())
    # The reconstruction term is the decoder's chain rule: sum of per-token log-softmax, EOS included.
    z = q.mean()
    inputs = torch.cat([torch.full((2, 1), model.bos_id), tokens], 1)
    logp = torch.log_softmax(model.network(inputs, condition=z).double(), -1)
    targets = torch.cat([tokens, torch.zeros(2, 1, dtype=torch.long)], 1)
    targets[0, 3], targets[1, 6] = model.eos_id, model.eos_id
    manual = -torch.stack([logp[i, torch.arange(int(lengths[i]) + 1), targets[i, : int(lengths[i]) + 1]].sum()
                           for i in range(2)])
    torch.testing.assert_close(model.reconstruction(tokens, lengths, z).double(), manual)


@pytest.mark.e2e
def test_tiny_ptb_run_reports_the_bound_terms_and_statistics(tmp_path: Path) -> None:
    from anyorder.train import train

    overrides = [f"output_dir={tmp_path}", "name=tiny", "logger.name=csv", "data.num_train=256",
                 "train.max_steps=6", "train.val_every_n_steps=3", "train.ckpt_every_n_steps=3",
                 "train.log_every_n_steps=1", "train.global_batch_size=16", "train.limit_val_batches=2",
                 "objective.latent_dim=4", "network.d_hidden=16", "network.d_embed=8", "objective.encoder.d_hidden=16",
                 "objective.encoder.d_embed=8", "objective.eval_iw_samples=4", "trainer.limit_test_batches=3",
                 "trainer.enable_progress_bar=false", "sample.num_final_samples=4", "sample.num_val_samples=2"]
    run = train(str(PTB_CONFIG), overrides)
    report = json.loads((run / "eval" / "test-final.json").read_text())
    assert report["label"] == "bound" and report["likelihood"] == "lower bound"
    terms = report["terms"]
    assert abs(terms["reconstruction"]["per_sequence"] + terms["kl"]["per_sequence"]
               - report["nll_nats_per_sequence"]) < 1e-6
    assert 0 <= report["statistics"]["active_units"] <= 4 and "mutual_information" in report["statistics"]
    assert terms["iw_nll"]["per_sequence"] > 0
    metrics = (run / "logs").rglob("metrics.csv")
    header = next(iter(metrics)).read_text().splitlines()[0]
    for key in ("train/kl", "train/beta", "train/reconstruction", "train/neg_elbo", "val/kl", "val/nll"):
        assert key in header, key
