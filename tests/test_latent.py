"""The ``latent`` plugins of the sentence_vae family: exactness of the Gaussian and von Mises-Fisher posteriors.

Closed forms are checked against independent computations: Monte Carlo for the Gaussian KL, 1-D quadrature over the
polar angle for the vMF KL (and a small-kappa series), finite differences for gradients, the moments of Wood's sampler
against E[w] = A_m(kappa) and E[w^2] = 1 - (m-1) A_m / kappa, and textbook densities for m = 2 and 3.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special

from anyorder.errors import ConfigError
from anyorder_plugins.sentence_vae import gaussian as gaussian_module
from anyorder_plugins.sentence_vae.gaussian import Gaussian
from anyorder_plugins.sentence_vae.latent_config import GaussianConfig, VMFConfig
from anyorder_plugins.sentence_vae.vmf import (
    UniformSphere,
    VonMisesFisher,
    log_sphere_area,
    vmf_kl,
    vmf_mean_resultant,
)

KAPPAS = (1e-3, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4)
DIMS = (2, 3, 10, 50, 128)
F64 = torch.float64


def _f64(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def _vmf(m: int, kappa: float = 0.0, **options: float) -> VonMisesFisher:
    return VonMisesFisher(VMFConfig(kappa=kappa, **options), m)


def _learned_params(batch: int, m: int, kappa: float, generator: torch.Generator) -> torch.Tensor:
    """Params [batch, m + 1] of a learned-kappa vMF: random directions and the raw value giving ``kappa``."""
    params = torch.randn(batch, m + 1, dtype=F64, generator=generator)
    params[:, m] = math.log(math.expm1(kappa - 1e-3))  # the inverse of min_kappa + softplus
    return params


def quadrature_kl(kappa: float, m: int) -> tuple[float, float]:
    """KL(vMF || uniform) by quadrature over the polar angle theta (w = cos theta), and a bound on its error.

    Under the vMF, theta has density proportional to exp(kappa (cos theta - 1)) sin^{m-2} theta on [0, pi]; under the
    uniform, to sin^{m-2} theta. So KL = kappa E[cos theta - 1] - log Z_kappa + log Z_0, with Z the integrals of
    those. The integrand is scaled by its maximum (found on a grid) to stay in range.
    """

    def log_f(t: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return -2.0 * kappa * np.sin(t / 2) ** 2 + (m - 2) * np.log(np.sin(t))

    grid = np.linspace(1e-9, math.pi - 1e-9, 200_001)
    peak_at = grid[np.argmax(log_f(grid))]
    peak = float(log_f(np.array([peak_at]))[0]) if m > 2 else 0.0
    width = 1.0 / math.sqrt(max(kappa, 1e-9))
    points = sorted({min(max(peak_at + d * width, 0.0), math.pi) for d in (-3, -1, 0, 1, 3, 10)} - {0.0, math.pi})
    opts = {"points": points, "limit": 500, "epsabs": 0.0, "epsrel": 1e-13}
    z, z_err = integrate.quad(lambda t: math.exp(log_f(np.array([t]))[0] - peak), 0.0, math.pi, **opts)
    e, e_err = integrate.quad(
        lambda t: 2.0 * math.sin(t / 2) ** 2 * math.exp(log_f(np.array([t]))[0] - peak), 0.0, math.pi, **opts
    )
    mean_cos_minus_1 = -e / z
    # Z_0 = int_0^pi sin^{m-2} = B(1/2, (m-1)/2)
    log_z0 = special.betaln(0.5, 0.5 * (m - 1))
    kl = kappa * mean_cos_minus_1 - (math.log(z) + peak) + log_z0
    err = kappa * (e_err / z + e * z_err / z**2) + z_err / z
    return kl, err


# --------------------------------------------------------------------------------------------------------------
# Gaussian
# --------------------------------------------------------------------------------------------------------------


def test_gaussian_kl_matches_monte_carlo() -> None:
    fam = Gaussian(GaussianConfig(), 3)
    assert fam.param_size == 6 and fam.factorised and Gaussian.supports_mean_normalisation
    params = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [1.5, -0.7, 0.2, -1.0, 0.5, -3.0]], dtype=F64)
    post = fam.posterior(params)
    assert post.kl().shape == (2, 3)
    assert torch.equal(post.mean(), params[:, :3]) and torch.equal(post.mode(), params[:, :3])
    z = post.rsample(200_000, generator=torch.Generator().manual_seed(0))
    assert z.shape == (200_000, 2, 3)
    # log q against an independent implementation.
    normal = torch.distributions.Normal(params[:, :3], torch.exp(0.5 * params[:, 3:]))
    torch.testing.assert_close(post.log_prob(z[:5]), normal.log_prob(z[:5]).sum(-1))
    ratio = post.log_prob(z) - fam.prior().log_prob(z)  # [N, B]
    se = ratio.std(0) / math.sqrt(z.shape[0])
    kl = post.kl().sum(-1)
    assert kl[0] == 0
    assert torch.all((ratio.mean(0) - kl).abs() <= 4 * se + 1e-12), (ratio.mean(0), kl, se)


def test_gaussian_log_prob_pairs_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    fam = Gaussian(GaussianConfig(), 4)
    g = torch.Generator().manual_seed(1)
    post = fam.posterior(torch.randn(5, 8, generator=g, dtype=F64))
    z = torch.randn(7, 4, generator=g, dtype=F64)
    expected = post.log_prob(z[:, None, :].expand(7, 5, 4))  # every draw under every datapoint
    monkeypatch.setattr(gaussian_module, "PAIR_CHUNK_ELEMENTS", 40)  # 2 draws per chunk
    torch.testing.assert_close(post.log_prob_pairs(z), expected)
    draws = post.rsample(1, generator=g)[0]  # [B, m]
    torch.testing.assert_close(torch.diagonal(post.log_prob_pairs(draws)), post.log_prob(draws))
    with pytest.raises(ValueError, match="takes"):
        fam.posterior(torch.zeros(2, 4))


# --------------------------------------------------------------------------------------------------------------
# vMF: KL, Bessel functions, gradients
# --------------------------------------------------------------------------------------------------------------


def test_vmf_kl_anchor() -> None:
    """kappa = 80, m = 50 (Xu & Durrett's fixed setting): 19.515208 nats, by the closed form and by quadrature."""
    assert abs(vmf_kl(_f64(80.0), 50).item() - 19.515208) < 1e-5
    quad, err = quadrature_kl(80.0, 50)
    assert err < 1e-9 and abs(quad - 19.515208) < 1e-5
    fam = _vmf(50, kappa=80.0)
    post = fam.posterior(torch.randn(3, 50))
    assert fam.param_size == 50 and not fam.factorised
    assert post.kl().shape == (3, 1)
    assert torch.allclose(post.kl(), torch.full((3, 1), 19.515208), atol=1e-5)
    assert fam.protocol()["kl_constant"] == pytest.approx(19.515208, abs=1e-6)


@pytest.mark.parametrize("m", DIMS)
def test_vmf_kl_grid(m: int) -> None:
    kappa = torch.tensor(KAPPAS, dtype=F64)
    kl = vmf_kl(kappa, m)
    assert torch.all(torch.isfinite(kl)) and torch.all(kl >= 0), kl
    for k, value in zip(KAPPAS, kl.tolist(), strict=True):
        quad, err = quadrature_kl(k, m)
        if err < 1e-8:  # quadrature is reliable
            assert abs(value - quad) <= 1e-7 * max(1.0, abs(quad)) + 1e-10, (k, m, value, quad)
        if k <= 0.1:
            # Small-kappa series: the cumulants of w = mu^T z under the uniform give
            # KL = kappa^2 / (2m) - 3 kappa^4 / (4 m^2 (m+2)) + O(kappa^6).
            series = k**2 / (2 * m) - 3 * k**4 / (4 * m**2 * (m + 2))
            assert value == pytest.approx(series, rel=1e-4 if k <= 1e-3 else 1e-3), (k, m, value, series)
    # KL increases with kappa (dKL/dkappa = kappa A_m'(kappa) > 0).
    assert torch.all(kl[1:] > kl[:-1])


def test_vmf_kl_quadrature_reliable_on_most_of_the_grid() -> None:
    """The comparison above is not vacuous: quadrature is reliable at every kappa >= 0.1 of the grid for m = 10."""
    assert all(quadrature_kl(k, 10)[1] < 1e-8 for k in KAPPAS[1:])


def test_vmf_kl_gradient() -> None:
    for m in DIMS:
        kappa = torch.tensor(KAPPAS, dtype=F64, requires_grad=True)
        (grad,) = torch.autograd.grad(vmf_kl(kappa, m).sum(), kappa)
        assert torch.all(torch.isfinite(grad)) and torch.all(grad > 0), (m, grad)
        # dKL/dkappa = kappa A'(kappa) with A' = 1 - A^2 - (m-1) A / kappa.
        a = vmf_mean_resultant(kappa.detach(), m)
        analytic = kappa.detach() * (1 - a**2 - (m - 1) * a / kappa.detach())
        ok = analytic.abs() > 1e-6  # the identity cancels to rounding noise where A' is tiny
        torch.testing.assert_close(grad[ok], analytic[ok], rtol=1e-5, atol=0.0)
        # Small kappa, where finite differences drown in rounding: the series gives kappa/m - 3 kappa^3 / (m^2 (m+2)).
        assert grad[0].item() == pytest.approx(1e-3 / m - 3e-9 / (m**2 * (m + 2)), rel=1e-6), m
    for k, m in ((0.1, 10), (1.0, 3), (80.0, 50), (1e3, 128), (1e4, 2)):
        kappa = _f64(k).requires_grad_(True)
        (grad,) = torch.autograd.grad(vmf_kl(kappa, m).sum(), kappa)
        h = 1e-3 * k if k < 1 else 1e-4 * k
        fd = (vmf_kl(_f64(k + h), m) - vmf_kl(_f64(k - h), m)) / (2 * h)
        assert grad.item() == pytest.approx(fd.item(), rel=1e-5), (k, m)


def test_mean_resultant_gradient_and_float32() -> None:
    kappa = _f64(3.0, 80.0).requires_grad_(True)
    (grad,) = torch.autograd.grad(vmf_mean_resultant(kappa, 50).sum(), kappa)
    h = 1e-4
    fd = (vmf_mean_resultant(kappa.detach() + h, 50) - vmf_mean_resultant(kappa.detach() - h, 50)) / (2 * h)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=0.0)
    # A learned kappa in float32 still gets a float64 KL (then cast), finite at the floor and the cap.
    fam = _vmf(32, max_kappa=500.0)
    raw = torch.tensor([-200.0, 0.0, 1e6], requires_grad=True)
    params = torch.cat([torch.randn(3, 32), raw[:, None]], 1)
    post = fam.posterior(params)
    torch.testing.assert_close(post.kappa, torch.tensor([1e-3, 1e-3 + math.log(2.0), 500.0]))
    kl = post.kl()
    assert kl.dtype == torch.float32 and torch.all(torch.isfinite(kl)) and torch.all(kl >= 0)
    kl.sum().backward()
    assert torch.all(torch.isfinite(raw.grad)) and raw.grad[2] == 0  # no gradient above the cap


# --------------------------------------------------------------------------------------------------------------
# vMF: sampler, densities, gradients of draws
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kappa", "m"), [(0.5, 2), (2.0, 3), (50.0, 3), (10.0, 50), (80.0, 50), (1e4, 128)])
def test_vmf_sampler_moments(kappa: float, m: int) -> None:
    n = 20_000
    g = torch.Generator().manual_seed(int(kappa * 10) + m)
    fam = _vmf(m, kappa=kappa)
    post = fam.posterior(torch.randn(2, m, generator=g))
    z = post.rsample(n, generator=g).to(F64)  # [n, 2, m], float32 draws
    assert z.shape == (n, 2, m)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(n, 2, dtype=F64), rtol=0, atol=2e-6)
    mu = post.mu.to(F64)
    w = (z * mu).sum(-1)
    a = vmf_mean_resultant(_f64(kappa), m).item()
    se = w.std(0) / math.sqrt(n)
    assert torch.all((w.mean(0) - a).abs() <= 4 * se + 1e-7), (w.mean(0), a, se)
    w2 = w.square()
    se2 = w2.std(0) / math.sqrt(n)
    assert torch.all((w2.mean(0) - (1 - (m - 1) * a / kappa)).abs() <= 4 * se2 + 1e-7)
    # E[z] = A_m mu: the Householder map points the draws the right way and v is centred.
    diff = z.mean(0) - a * mu
    assert torch.all(diff.abs() <= 5 * z.std(0) / math.sqrt(n) + 1e-7)
    torch.testing.assert_close(post.mean(), a * post.mu)
    assert torch.equal(post.mode(), post.mu)


def test_vmf_sampler_is_reproducible() -> None:
    fam = _vmf(10)
    params = _learned_params(4, 10, 5.0, torch.Generator().manual_seed(0))
    a = fam.posterior(params).rsample(3, generator=torch.Generator().manual_seed(7))
    b = fam.posterior(params).rsample(3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_vmf_sampler_rejects_nan_kappa() -> None:
    post = _vmf(5).posterior(torch.tensor([[1.0, 0, 0, 0, 0, float("nan")]], dtype=F64))
    with pytest.raises(RuntimeError, match="not accepted after"):
        post.rsample(1, generator=torch.Generator().manual_seed(0))


def test_vmf_log_prob_textbook_densities() -> None:
    g = torch.Generator().manual_seed(3)
    for kappa in (0.01, 1.0, 30.0, 700.0):
        # m = 3: q(z) = kappa / (4 pi sinh kappa) exp(kappa mu^T z)
        post = _vmf(3, kappa=kappa).posterior(torch.randn(4, 3, generator=g, dtype=F64))
        z = UniformSphere(3).sample(4, generator=g).to(F64)
        log_sinh = kappa + math.log1p(-math.exp(-2 * kappa)) - math.log(2.0)
        expected = math.log(kappa) - math.log(4 * math.pi) - log_sinh + kappa * (z * post.mu).sum(-1)
        torch.testing.assert_close(post.log_prob(z), expected, rtol=1e-12, atol=1e-10)
        # m = 2: q(z) = exp(kappa cos theta) / (2 pi I_0(kappa))
        post = _vmf(2, kappa=kappa).posterior(torch.randn(4, 2, generator=g, dtype=F64))
        z = UniformSphere(2).sample(4, generator=g).to(F64)
        log_i0 = math.log(special.i0e(kappa)) + kappa
        expected = kappa * (z * post.mu).sum(-1) - math.log(2 * math.pi) - log_i0
        torch.testing.assert_close(post.log_prob(z), expected, rtol=1e-12, atol=1e-10)
    assert UniformSphere(3).log_prob(torch.zeros(2, 3)).tolist() == pytest.approx([-math.log(4 * math.pi)] * 2)
    assert log_sphere_area(2) == pytest.approx(math.log(2 * math.pi))


def test_vmf_density_integrates_to_one() -> None:
    """E_{z ~ uniform}[q(z) / p(z)] = 1: q is normalised with respect to the surface measure."""
    n, m = 200_000, 5
    g = torch.Generator().manual_seed(4)
    prior = UniformSphere(m)
    z = prior.sample(n, generator=g).to(F64)
    assert z.shape == (n, m)
    post = _vmf(m).posterior(_learned_params(1, m, 3.0, g))
    weight = torch.exp(post.log_prob(z[:, None, :])[:, 0] - prior.log_prob(z))
    assert abs(weight.mean().item() - 1.0) <= 4 * weight.std().item() / math.sqrt(n)


@pytest.mark.parametrize("learned", [True, False])
def test_vmf_log_prob_pairs(learned: bool) -> None:
    g = torch.Generator().manual_seed(5)
    m = 6
    fam = _vmf(m) if learned else _vmf(m, kappa=12.0)
    params = _learned_params(5, m, 4.0, g) if learned else torch.randn(5, m, generator=g, dtype=F64)
    post = fam.posterior(params)
    z = post.rsample(1, generator=g)[0]  # [B, m]
    pairs = post.log_prob_pairs(z)
    assert pairs.shape == (5, 5)
    torch.testing.assert_close(torch.diagonal(pairs), post.log_prob(z))
    torch.testing.assert_close(pairs, post.log_prob(z[:, None, :].expand(5, 5, m)))


def test_vmf_reparameterised_kappa_gradient() -> None:
    """d/dkappa E_q[mu^T z] = A_m'(kappa), within Monte Carlo error, with the acceptance-score correction; the
    gradient through the accepted proposal alone is biased (which is why rsample_with_score exists)."""
    n = 20_000
    for kappa, m in ((1.0, 3), (0.5, 2), (20.0, 50)):
        g = torch.Generator().manual_seed(m)
        params = _learned_params(n, m, kappa, g).requires_grad_(True)
        post = _vmf(m, max_kappa=1e4).posterior(params)
        z, log_pi = post.rsample_with_score(1, generator=g)
        w = (z[0] * post.mu.detach()).sum(-1)  # one draw per row: independent gradient samples
        (rep,) = torch.autograd.grad(w.sum(), params, retain_graph=True)
        (cor,) = torch.autograd.grad((w.detach() * (log_pi[0] - log_pi[0].detach())).sum(), params)
        dkappa = torch.sigmoid(params[0, m].detach())  # d kappa / d raw
        rep, full = rep[:, m] / dkappa, (rep[:, m] + cor[:, m]) / dkappa
        h = 1e-5 * kappa
        target = ((vmf_mean_resultant(_f64(kappa + h), m) - vmf_mean_resultant(_f64(kappa - h), m)) / (2 * h)).item()
        se = full.std().item() / math.sqrt(n)
        assert abs(full.mean().item() - target) <= 4 * se, (kappa, m, full.mean().item(), target, se)
        if m <= 3:
            assert abs(rep.mean().item() - target) > 10 * rep.std().item() / math.sqrt(n)


def test_vmf_direction_gradient() -> None:
    """Fixed kappa: d/dd E[a^T z] for mu = d / |d| is A (a - mu mu^T a) / |d| (exact through the reflection)."""
    n, m, kappa = 20_000, 5, 10.0
    g = torch.Generator().manual_seed(6)
    d = torch.randn(m, generator=g, dtype=F64)
    a = torch.randn(m, generator=g, dtype=F64)
    params = d.expand(n, m).clone().requires_grad_(True)
    post = _vmf(m, kappa=kappa).posterior(params)
    z, log_pi = post.rsample_with_score(1, generator=g)
    assert torch.equal(log_pi, torch.zeros(1, n, dtype=F64))
    (grad,) = torch.autograd.grad((z[0] @ a).sum(), params)
    mu = d / d.norm()
    expected = vmf_mean_resultant(_f64(kappa), m).item() * (a - mu * (mu @ a)) / d.norm()
    assert torch.all((grad.mean(0) - expected).abs() <= 4 * grad.std(0) / math.sqrt(n) + 1e-9)


# --------------------------------------------------------------------------------------------------------------
# Prior, options, registry
# --------------------------------------------------------------------------------------------------------------


def test_uniform_sphere_prior_and_slerp() -> None:
    prior = _vmf(4).prior()
    g = torch.Generator().manual_seed(8)
    z = prior.sample(1000, generator=g)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(1000))
    a, b = torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.tensor([0.0, 2.0, 0.0, 0.0])
    t = torch.linspace(0, 1, 5)
    path = prior.interpolate(a, b, t)
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b / 2)
    torch.testing.assert_close(path.norm(dim=-1), torch.ones(5))
    angles = torch.arccos((path[:-1] * path[1:]).sum(-1).clamp(-1, 1))
    torch.testing.assert_close(angles, torch.full((4,), math.pi / 8))  # equal steps along the great circle
    anti = prior.interpolate(a, -a, t)
    torch.testing.assert_close(anti.norm(dim=-1), torch.ones(5))
    torch.testing.assert_close(anti[-1], -a, atol=1e-6, rtol=0)
    same = prior.interpolate(a, a, t)
    torch.testing.assert_close(same, a.expand(5, 4))
    # The Gaussian prior keeps the straight line.
    line = Gaussian(GaussianConfig(), 4).prior().interpolate(a, b, t)
    torch.testing.assert_close(line[2], (a + b) / 2)


def test_vmf_options() -> None:
    assert VMFConfig().learned and not VMFConfig(kappa=80.0).learned
    assert _vmf(8).param_size == 9 and _vmf(8, kappa=1.0).param_size == 8
    for bad in ({"kappa": -1.0}, {"min_kappa": 0.0}, {"max_kappa": 1e-3}, {"kappa": float("inf")}):
        with pytest.raises(ConfigError):
            VMFConfig(**bad)
    with pytest.raises(ValueError, match="m >= 2"):
        _vmf(1)


def test_latent_plugins_resolve_through_registry() -> None:
    from anyorder.cli import main
    from anyorder.registry import REGISTRY

    assert REGISTRY.implementation("latent", "vmf") is VonMisesFisher
    assert REGISTRY.implementation("latent", "gaussian") is Gaussian
    assert main(["plugins", "--kind", "latent"]) == 0
