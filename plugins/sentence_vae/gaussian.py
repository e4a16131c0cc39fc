"""The ``gaussian`` latent: a diagonal Gaussian posterior q(z|x) = N(mu, diag(sigma^2)) with the prior N(0, I).

Densities are with respect to Lebesgue measure on R^m. The encoder's output [B, 2m] is the mean (first m columns)
and the log-variance (last m columns).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from anyorder_plugins.sentence_vae.latent import LatentFamily, Posterior, Prior
from anyorder_plugins.sentence_vae.latent_config import GaussianConfig

LOG_2PI = math.log(2.0 * math.pi)

PAIR_CHUNK_ELEMENTS = 1 << 24
"""How many [N, B, m] elements :meth:`GaussianPosterior.log_prob_pairs` materialises at once (64 MiB in float32)."""


def _standard_normal(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """N(0, 1) draws of ``shape`` from ``generator``, on ``like``'s device and dtype.

    The draws are made on the generator's device (a CPU generator cannot fill a CUDA tensor), then moved.
    """
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


class GaussianPosterior(Posterior):
    """N(mean, diag(exp(log_var))) for B datapoints: ``mean`` and ``log_var`` are [B, m]."""

    def __init__(self, mean: Tensor, log_var: Tensor) -> None:
        self.loc = mean
        self.log_var = log_var

    def rsample(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        eps = _standard_normal((num, *self.loc.shape), generator, self.loc)
        return self.loc + torch.exp(0.5 * self.log_var) * eps

    def log_prob(self, z: Tensor) -> Tensor:
        sq = (z - self.loc).square() * torch.exp(-self.log_var)
        return -0.5 * (sq + self.log_var + LOG_2PI).sum(-1)

    def kl(self) -> Tensor:
        return 0.5 * (self.loc.square() + torch.exp(self.log_var) - 1.0 - self.log_var)

    def mean(self) -> Tensor:
        return self.loc

    def mode(self) -> Tensor:
        return self.loc

    def log_prob_pairs(self, z: Tensor) -> Tensor:
        # Direct differences rather than the expanded quadratic z^2/s^2 - 2 z mu/s^2 + mu^2/s^2: the expansion cancels
        # catastrophically for narrow posteriors. Chunk over draws so that [chunk, B, m] stays within a fixed budget.
        batch, dim = self.loc.shape
        chunk = max(1, PAIR_CHUNK_ELEMENTS // max(1, batch * dim))
        precision = torch.exp(-self.log_var)
        norm = -0.5 * (self.log_var.sum(-1) + dim * LOG_2PI)  # [B]
        out = []
        for start in range(0, z.shape[0], chunk):
            diff = z[start : start + chunk, None, :] - self.loc[None]  # [n, B, m]
            out.append(norm[None] - 0.5 * (diff.square() * precision[None]).sum(-1))
        if not out:
            return z.new_zeros((0, batch))
        return torch.cat(out, 0)


class StandardNormal(Prior):
    """N(0, I) over R^m."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def sample(self, num: int, generator: torch.Generator | None = None, device: Any = None) -> Tensor:
        like = torch.empty(0, device=device)
        return _standard_normal((num, self.dim), generator, like)

    def log_prob(self, z: Tensor) -> Tensor:
        return -0.5 * (z.square().sum(-1) + self.dim * LOG_2PI)


class Gaussian(LatentFamily):
    """Diagonal Gaussian posteriors with a standard normal prior; the KL is closed form per dimension [B, m].

    ``params`` [B, 2m] are the posterior mean (columns ``0..m-1``) then its log-variance (columns ``m..2m-1``).
    """

    Config = GaussianConfig
    config: GaussianConfig
    factorised: ClassVar[bool] = True
    supports_mean_normalisation: ClassVar[bool] = True
    """The objective may batch-normalise the first m params (the posterior mean), as in BN-VAE (Zhu et al. 2020)."""

    @property
    def param_size(self) -> int:
        return 2 * self.dim

    def posterior(self, params: Tensor) -> GaussianPosterior:
        if params.shape[-1] != self.param_size:
            raise ValueError(
                f"gaussian latent of {self.dim} dims takes [B, {self.param_size}] params, got {tuple(params.shape)}"
            )
        mean, log_var = params.split(self.dim, dim=-1)
        return GaussianPosterior(mean, log_var)

    def prior(self) -> StandardNormal:
        return StandardNormal(self.dim)

    def protocol(self) -> dict[str, Any]:
        return {
            "family": type(self).__name__,
            "dim": self.dim,
            "prior": "N(0, I)",
            "kl": "closed form per dimension: (mu^2 + sigma^2 - 1 - log sigma^2) / 2",
            "sampler": "reparameterised: mu + sigma * eps, eps ~ N(0, I)",
        }
