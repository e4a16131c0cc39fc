"""The ``vmf`` latent: a von Mises-Fisher posterior on the unit sphere S^{m-1} with the uniform prior.

q(z | mu, kappa) = C_m(kappa) exp(kappa mu^T z) with respect to the surface measure of S^{m-1}, where
``log C_m = (m/2 - 1) log kappa - (m/2) log(2 pi) - log I_{m/2-1}(kappa)``. The prior is uniform:
``log p(z) = -log |S^{m-1}| = -(log 2 + (m/2) log pi - lgamma(m/2))``. The KL to the prior is
``kappa A_m(kappa) + log C_m(kappa) + log |S^{m-1}|`` with ``A_m = I_{m/2} / I_{m/2-1}`` (= E_q[mu^T z]).

Bessel functions come from ``scipy.special.ive`` (exponentially scaled, so ``log I_v(k) = log ive(v, k) + k``), on the
CPU in float64, with a series for the small-kappa, large-order corner where ``ive`` underflows; :func:`log_bessel_ive`
is a differentiable torch function of kappa. Draws use Wood's (1994) rejection sampler, reparameterised through the
accepted proposal (Davidson et al. 2018), then a Householder reflection mapping e1 to mu;
:meth:`VMFPosterior.rsample_with_score` also returns what the unbiased gradient of a learned kappa needs.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from anyorder_plugins.sentence_vae.latent import LatentFamily, Posterior, Prior
from anyorder_plugins.sentence_vae.latent_config import VMFConfig

try:
    from scipy import special
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("the vmf latent needs scipy for its Bessel functions: pip install scipy") from exc

MAX_ROUNDS = 1000
"""Rounds of Wood's rejection sampler before giving up. Its acceptance rate is above one half for every kappa and m,
so a row still pending after 1000 rounds means a broken input (e.g. a NaN kappa), not bad luck."""

_SERIES_TERMS = 40
# ive(v, k) * exp(k) = I_v(k) ~ (k/2)^v / v!: below this, ive loses precision in the subnormal range or underflows to
# 0 (e.g. v = 63, k = 1e-3); the power series is then exact to float64 precision in a few terms, because k is tiny.
_IVE_UNDERFLOW = 1e-280


def log_sphere_area(m: int) -> float:
    """log |S^{m-1}|, the log surface area of the unit sphere in R^m: log 2 + (m/2) log pi - lgamma(m/2)."""
    return math.log(2.0) + 0.5 * m * math.log(math.pi) - math.lgamma(0.5 * m)


def log_ive_numpy(v: float, k: np.ndarray) -> np.ndarray:
    """log(I_v(k) e^{-k}) in float64 for k >= 0 (an array), from ``scipy.special.ive`` or its power series where that
    underflows."""
    k = np.asarray(k, dtype=np.float64)
    scaled = special.ive(v, k)
    with np.errstate(divide="ignore"):
        out = np.log(scaled)
    low = ~(scaled > _IVE_UNDERFLOW)
    if np.any(low):
        # I_v(k) = sum_j (k/2)^(2j+v) / (j! Gamma(v+j+1)), summed in log space.
        with np.errstate(divide="ignore", invalid="ignore"):
            half = np.log(k[low] / 2.0)[:, None]
            j = np.arange(_SERIES_TERMS, dtype=np.float64)[None, :]
            terms = 2.0 * j * half - special.gammaln(j + 1.0) - special.gammaln(v + j + 1.0)
            terms[:, 0] = -special.gammaln(v + 1.0)  # j = 0: avoid 0 * log(0) at k = 0
            series = v * half[:, 0] + special.logsumexp(terms, axis=1) - k[low]
        series[k[low] == 0] = 0.0 if v == 0 else -np.inf
        out[low] = series
    return out


class _LogBesselIve(torch.autograd.Function):
    """log(I_v(kappa) e^{-kappa}), differentiable in kappa: its derivative is I_{v+1}/I_v + v/kappa - 1, with the
    ratio taken from the scaled values (exp of a difference of O(1) numbers, where the unscaled logs would be
    differences of numbers of size kappa, losing 12 digits at kappa = 1e4)."""

    @staticmethod
    def forward(ctx: Any, kappa: Tensor, v: float) -> Tensor:
        k = kappa.detach().to("cpu", torch.float64).numpy()
        log_ive = log_ive_numpy(v, k)
        ctx.v = v
        ctx.save_for_backward(kappa)
        ctx.log_ive = log_ive
        return torch.from_numpy(log_ive).to(device=kappa.device, dtype=kappa.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (kappa,) = ctx.saved_tensors
        k = kappa.detach().to("cpu", torch.float64).numpy()
        with np.errstate(divide="ignore"):
            # I_{v+1}/I_v - 1 + v/k: both I_{v+1}/I_v - 1 (written as expm1) and v/k are accurate on their own.
            deriv = np.expm1(log_ive_numpy(ctx.v + 1.0, k) - ctx.log_ive) + ctx.v / k
        return grad * torch.from_numpy(deriv).to(device=kappa.device, dtype=grad.dtype), None


def log_bessel_ive(v: float, kappa: Tensor) -> Tensor:
    """log(I_v(kappa) e^{-kappa}) elementwise, differentiable in ``kappa`` (computed on the CPU in float64; returned in
    kappa's dtype and device, so pass float64 to keep the precision)."""
    return _LogBesselIve.apply(kappa, float(v))


def log_bessel_iv(v: float, kappa: Tensor) -> Tensor:
    """log I_v(kappa) elementwise, differentiable in ``kappa`` (see :func:`log_bessel_ive`)."""
    return log_bessel_ive(v, kappa) + kappa


def _log_mean_resultant(kappa: Tensor, m: int) -> Tensor:
    """log A_m(kappa) = log I_{m/2}(kappa) - log I_{m/2-1}(kappa), from the scaled logs (both O(1) or less)."""
    return log_bessel_ive(0.5 * m, kappa) - log_bessel_ive(0.5 * m - 1.0, kappa)


def vmf_log_norm(kappa: Tensor, m: int) -> Tensor:
    """log C_m(kappa) = (m/2 - 1) log kappa - (m/2) log(2 pi) - log I_{m/2-1}(kappa): the log normaliser of the vMF
    density on S^{m-1} with respect to its surface measure."""
    v = 0.5 * m - 1.0
    return v * torch.log(kappa) - 0.5 * m * math.log(2.0 * math.pi) - log_bessel_ive(v, kappa) - kappa


def vmf_mean_resultant(kappa: Tensor, m: int) -> Tensor:
    """A_m(kappa) = I_{m/2}(kappa) / I_{m/2-1}(kappa) = E_q[mu^T z]."""
    return torch.exp(_log_mean_resultant(kappa, m))


def vmf_kl(kappa: Tensor, m: int) -> Tensor:
    """KL(vMF(mu, kappa) || uniform on S^{m-1}) = kappa A_m(kappa) + log C_m(kappa) + log |S^{m-1}| (independent of
    mu). Compute in float64.

    The kappa A_m and -kappa (from log I = log ive + kappa) terms are combined as kappa (A_m - 1) = kappa expm1(log A_m):
    apart they are each of size kappa and the KL (a few nats) would lose digits at large kappa. At small kappa the
    terms nearly cancel (the KL is about kappa^2 / (2m)), which float64 absorbs.
    """
    v = 0.5 * m - 1.0
    return (
        kappa * torch.expm1(_log_mean_resultant(kappa, m))
        + v * torch.log(kappa)
        - 0.5 * m * math.log(2.0 * math.pi)
        - log_bessel_ive(v, kappa)
        + log_sphere_area(m)
    )


def _draw(kind: str, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """float64 N(0, 1) (``kind="normal"``) or U[0, 1) (``"uniform"``) draws from ``generator``, moved to ``device``.

    The draws are made on the generator's device (a CPU generator cannot fill a CUDA tensor), so the same generator
    gives the same draws wherever the model lives.
    """
    where = generator.device if generator is not None else device
    fn = torch.randn if kind == "normal" else torch.rand
    return fn(shape, generator=generator, device=where, dtype=torch.float64).to(device)


def _wood_b(kappa: Tensor, m: int) -> Tensor:
    """Wood's b = (-2 kappa + sqrt(4 kappa^2 + (m-1)^2)) / (m-1), in the rationalised form that does not cancel at
    large kappa."""
    return (m - 1) / (2.0 * kappa + torch.sqrt(4.0 * kappa.square() + (m - 1) ** 2))


def _accepted_beta(kappa: Tensor, m: int, generator: torch.Generator | None) -> Tensor:
    """For each row of ``kappa`` [R] (float64, no gradient), the Beta((m-1)/2, (m-1)/2) draw that Wood's rejection
    sampler accepts: [R]."""
    rows = kappa.shape[0]
    device = kappa.device
    b = _wood_b(kappa, m)
    x0 = (1.0 - b) / (1.0 + b)
    one_minus_x0 = 2.0 * b / (1.0 + b)
    c = kappa * x0 + (m - 1) * torch.log(4.0 * b / (1.0 + b).square())  # log(1 - x0^2) without cancelling
    accepted = torch.empty(rows, dtype=torch.float64, device=device)
    pending = torch.arange(rows, device=device)
    for _ in range(MAX_ROUNDS):
        n = pending.shape[0]
        if n == 0:
            return accepted
        # Beta(a, a) with a = (m-1)/2 is X / (X + Y) for independent chi^2_{m-1} X and Y: sums of squared normals,
        # which torch draws from a generator (its Gamma and Beta samplers take none).
        chi2 = _draw("normal", (n, 2, m - 1), generator, device).square().sum(-1)
        eps = chi2[:, 0] / chi2.sum(-1)
        log_u = torch.log(_draw("uniform", (n,), generator, device))
        bp, x0p = b[pending], x0[pending]
        one_minus_w = 2.0 * bp * eps / (1.0 - (1.0 - bp) * eps)
        one_minus_x0w = one_minus_x0[pending] + x0p * one_minus_w  # 1 - x0 w, without cancelling as w, x0 -> 1
        log_ratio = kappa[pending] * (1.0 - one_minus_w) + (m - 1) * torch.log(one_minus_x0w) - c[pending]
        ok = log_u <= log_ratio
        accepted[pending[ok]] = eps[ok]
        pending = pending[~ok]
    if pending.shape[0] == 0:
        return accepted
    bad = kappa[pending[:5]].tolist()
    raise RuntimeError(
        f"vmf sampler: {pending.shape[0]} of {rows} rows not accepted after {MAX_ROUNDS} rounds of Wood's rejection "
        f"sampler (m = {m}; kappa of the first: {bad}); kappa must be finite and positive"
    )


def sample_vmf_w(
    kappa: Tensor, m: int, generator: torch.Generator | None, score: bool = True
) -> tuple[Tensor, Tensor, Tensor | None]:
    """w = mu^T z for one vMF draw per row of ``kappa`` [R] (float64): ``(w, sqrt(1 - w^2), log_pi)``, each [R];
    ``log_pi`` is None unless ``score``.

    ``w`` and ``sqrt(1 - w^2)`` are differentiable functions of kappa given the accepted Beta draw eps (the
    reparameterisation of Davidson et al. 2018). ``log_pi`` is log pi(eps | kappa), the density of the accepted eps up to
    a kappa-free constant, differentiable in kappa: the score for the correction term (Naesseth et al. 2017), since the
    acceptance itself depends on kappa. By the change of variables w = h(eps, kappa),
    ``log pi = log q_w(h(eps, kappa)) + log |dh/deps|`` with q_w(w) = C_m(kappa) e^{kappa w} (1 - w^2)^{(m-3)/2}
    |S^{m-2}| and |dh/deps| = 2b / (1 - (1-b) eps)^2.
    """
    eps = _accepted_beta(kappa.detach(), m, generator)
    b = _wood_b(kappa, m)
    denom = 1.0 - (1.0 - b) * eps
    one_minus_w = 2.0 * b * eps / denom
    w = 1.0 - one_minus_w
    one_minus_w2 = one_minus_w * (2.0 - one_minus_w)
    if not score:  # skips a Bessel evaluation (a host round trip on a GPU)
        return w, torch.sqrt(one_minus_w2), None
    log_pi = (
        vmf_log_norm(kappa, m)
        + kappa * w
        + 0.5 * (m - 3) * torch.log(one_minus_w2)
        + torch.log(2.0 * b)
        - 2.0 * torch.log(denom)
    )
    return w, torch.sqrt(one_minus_w2), log_pi


def householder_e1_to(mu: Tensor, z: Tensor) -> Tensor:
    """Reflect ``z`` [..., B, m] by the Householder map that sends e1 to ``mu`` [B, m] (unit rows)."""
    u = -mu.clone()
    u[..., 0] += 1.0
    # At mu = e1 the reflection is the identity: u = 0 stays 0 under the clamped division.
    u = u / torch.linalg.vector_norm(u, dim=-1, keepdim=True).clamp_min(1e-30)
    return z - 2.0 * (z * u).sum(-1, keepdim=True) * u


def _unit(x: Tensor) -> Tensor:
    """``x`` scaled to unit norm along the last axis (a zero row stays zero instead of becoming NaN)."""
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12)


class VMFPosterior(Posterior):
    """vMF(mu, kappa) for B datapoints: ``mu`` [B, m] unit rows, ``kappa`` [B].

    ``fixed`` holds the precomputed float64 ``(log C_m, A_m, KL)`` of a fixed kappa; for a learned kappa they are
    computed from ``kappa`` (float64 on the CPU, differentiable).
    """

    def __init__(self, mu: Tensor, kappa: Tensor, fixed: tuple[float, float, float] | None = None) -> None:
        self.mu = mu
        self.kappa = kappa
        self.dim = mu.shape[-1]
        self.fixed = fixed
        self._cache: dict[str, Tensor] = {}

    def _stat(self, name: str) -> Tensor:
        """``log_norm``, ``mean_resultant`` or ``kl`` per datapoint [B], in mu's dtype."""
        if name not in self._cache:
            if self.fixed is not None:
                value = self.fixed[("log_norm", "mean_resultant", "kl").index(name)]
                out = torch.full_like(self.kappa, value)
            else:
                fn = {"log_norm": vmf_log_norm, "mean_resultant": vmf_mean_resultant, "kl": vmf_kl}[name]
                out = fn(self.kappa.to(torch.float64), self.dim).to(self.mu.dtype)
            self._cache[name] = out
        return self._cache[name]

    def rsample(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        """``num`` draws per datapoint [num, B, m]; gradients reach mu through the reflection and a learned kappa
        through the accepted proposal only (see :meth:`rsample_with_score` for the unbiased kappa gradient)."""
        return self._rsample(num, generator, score=False)[0]

    def rsample_with_score(self, num: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draws [num, B, m] and the log density of their accepted proposals [num, B] (value up to a constant,
        differentiable in a learned kappa; zeros for a fixed kappa).

        The gradient through the accepted proposal alone is biased for a learned kappa, because whether a proposal
        is accepted depends on kappa (it is 20% below dA_m/dkappa at m = 3, kappa = 1). For the unbiased gradient of a loss
        f(z) [num, B], add ``(f.detach() - baseline) * (log_pi - log_pi.detach())`` to it, with any baseline that does
        not depend on the draw itself (the correction term g_cor of Davidson et al. 2018 / Naesseth et al. 2017).
        """
        z, log_pi = self._rsample(num, generator, score=self.fixed is None)
        if log_pi is None:  # a fixed kappa: nothing to correct
            log_pi = z.new_zeros(z.shape[:2])
        return z, log_pi

    def _rsample(self, num: int, generator: torch.Generator | None, score: bool) -> tuple[Tensor, Tensor | None]:
        """Draws [num, B, m] and, if ``score``, the log density of their accepted proposals [num, B]."""
        batch, m = self.mu.shape
        kappa = self.kappa.to(torch.float64)
        if self.fixed is not None:
            kappa = kappa.detach()  # a fixed kappa: w needs no gradient
        kappa = kappa[None].expand(num, batch).reshape(-1)
        w, radius, log_pi = sample_vmf_w(kappa, m, generator, score=score)
        v = _unit(_draw("normal", (num * batch, m - 1), generator, self.mu.device))  # uniform on S^{m-2}
        z = torch.cat([w[:, None], radius[:, None] * v], dim=-1).to(self.mu.dtype).reshape(num, batch, m)
        if log_pi is not None:
            log_pi = log_pi.reshape(num, batch).to(self.mu.dtype)
        return householder_e1_to(self.mu, z), log_pi

    def log_prob(self, z: Tensor) -> Tensor:
        return self._stat("log_norm") + self.kappa * (z * self.mu).sum(-1)

    def kl(self) -> Tensor:
        return self._stat("kl")[:, None]

    def mean(self) -> Tensor:
        return self._stat("mean_resultant")[:, None] * self.mu

    def mode(self) -> Tensor:
        return self.mu

    def log_prob_pairs(self, z: Tensor) -> Tensor:
        return self._stat("log_norm")[None] + self.kappa[None] * (z @ self.mu.T)


class UniformSphere(Prior):
    """The uniform distribution on S^{m-1}, with respect to its surface measure."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.log_density = -log_sphere_area(dim)

    def sample(self, num: int, generator: torch.Generator | None = None, device: Any = None) -> Tensor:
        device = torch.device(device) if device is not None else torch.device("cpu")
        return _unit(_draw("normal", (num, self.dim), generator, device)).to(torch.get_default_dtype())

    def log_prob(self, z: Tensor) -> Tensor:
        return torch.full(z.shape[:-1], self.log_density, dtype=z.dtype, device=z.device)

    def interpolate(self, a: Tensor, b: Tensor, t: Tensor) -> Tensor:
        """The great circle from ``a`` to ``b`` (slerp; both are projected on the sphere first). For antipodal points
        every great circle through both is as short; the one through the basis axis least aligned with ``a`` is used."""
        a, b = _unit(a), _unit(b)
        cos = (a * b).sum().clamp(-1.0, 1.0)
        if cos > 1.0 - 1e-7:  # nearly equal: the chord is the arc to float precision
            return _unit(a[None] + t[:, None] * (b - a)[None])
        if cos < -1.0 + 1e-7:
            axis = torch.zeros_like(a)
            axis[a.abs().argmin()] = 1.0
            ortho = _unit(axis - (axis * a).sum() * a)
            angle = math.pi * t[:, None]
            return torch.cos(angle) * a[None] + torch.sin(angle) * ortho[None]
        omega = torch.arccos(cos)
        t = t[:, None].to(a.dtype)
        return (torch.sin((1.0 - t) * omega) * a[None] + torch.sin(t * omega) * b[None]) / torch.sin(omega)


class VonMisesFisher(LatentFamily):
    """vMF posteriors on S^{m-1} with the uniform prior; the KL is one number per datapoint [B, 1].

    ``params`` are [B, m] (the direction, normalised here) for a fixed kappa, or [B, m + 1] (the direction, then an
    unconstrained number mapped to ``min_kappa + softplus(x)`` and capped at ``max_kappa``) for a learned kappa.
    """

    Config = VMFConfig
    config: VMFConfig
    factorised: ClassVar[bool] = False
    supports_mean_normalisation: ClassVar[bool] = False

    def __init__(self, config: VMFConfig, dim: int) -> None:
        super().__init__(config, dim)
        if dim < 2:
            raise ValueError(f"vmf latent: the sphere S^(m-1) needs m >= 2 dimensions (got {dim})")
        self.fixed: tuple[float, float, float] | None = None
        if not config.learned:
            # The constants of a fixed kappa, once, in float64.
            k = torch.tensor([config.kappa], dtype=torch.float64)
            self.fixed = (vmf_log_norm(k, dim).item(), vmf_mean_resultant(k, dim).item(), vmf_kl(k, dim).item())

    @property
    def param_size(self) -> int:
        return self.dim + (1 if self.config.learned else 0)

    def kappa_from(self, raw: Tensor) -> Tensor:
        """A learned kappa from the encoder's unconstrained output: min(min_kappa + softplus(raw), max_kappa)."""
        return (self.config.min_kappa + F.softplus(raw)).clamp(max=self.config.max_kappa)

    def posterior(self, params: Tensor) -> VMFPosterior:
        if params.shape[-1] != self.param_size:
            raise ValueError(f"vmf latent of {self.dim} dims takes [B, {self.param_size}] params, got {tuple(params.shape)}")
        mu = _unit(params[:, : self.dim])
        if self.fixed is not None:
            return VMFPosterior(mu, params.new_full((params.shape[0],), self.config.kappa), self.fixed)
        return VMFPosterior(mu, self.kappa_from(params[:, self.dim]))

    def prior(self) -> UniformSphere:
        return UniformSphere(self.dim)

    def protocol(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "family": type(self).__name__,
            "dim": self.dim,
            "prior": f"uniform on S^{self.dim - 1}",
            "kl": "kappa A_m + log C_m + log|S^(m-1)|, log I_v from scipy.special.ive in float64",
            "sampler": "Wood (1994) rejection with a Beta((m-1)/2, (m-1)/2) proposal, Householder e1 -> mu",
        }
        if self.fixed is not None:
            out.update(kappa=self.config.kappa, kappa_mode="fixed", kl_constant=self.fixed[2])
        else:
            out.update(
                kappa_mode="learned",
                min_kappa=self.config.min_kappa,
                max_kappa=self.config.max_kappa,
                gradient="reparameterised through the accepted proposal (Davidson et al. 2018); rsample_with_score "
                "gives the score of the acceptance for the correction term",
            )
        return out
