"""The ``laplace`` latent family of the example distribution (a plugin of the sentence_vae family's ``latent`` kind).

Per dimension, q = Laplace(mu, b) and p = Laplace(0, 1), so

    KL(q || p) = -log b - 1 + |mu| + b exp(-|mu| / b).

Draws are reparameterised through the inverse CDF: z = mu - b sign(u) log(1 - 2|u|), u ~ U(-1/2, 1/2).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from anyorder_example.laplace.config import LaplaceConfig
from anyorder_plugins.sentence_vae.latent import LatentFamily, Posterior, Prior


def _log_density(z: Tensor, mu: Tensor, b: Tensor) -> Tensor:
    return (-(z - mu).abs() / b - torch.log(2 * b)).sum(-1)


class LaplacePosterior(Posterior):
    """Laplace(mu, b) per dimension for a batch [B, m]."""

    def __init__(self, mu: Tensor, b: Tensor) -> None:
        self.mu, self.b = mu, b

    def rsample(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        u = torch.rand((num, *self.mu.shape), generator=generator, dtype=self.mu.dtype,
                       device=generator.device if generator is not None else None).to(self.mu.device) - 0.5
        # 1 - 2|u| is in (0, 1]; clamped away from 0 so the log stays finite.
        return self.mu - self.b * torch.sign(u) * torch.log((1 - 2 * u.abs()).clamp(min=1e-12))

    def log_prob(self, z: Tensor) -> Tensor:
        return _log_density(z, self.mu, self.b)

    def kl(self) -> Tensor:
        a = self.mu.abs()
        return -torch.log(self.b) - 1 + a + self.b * torch.exp(-a / self.b)

    def mean(self) -> Tensor:
        return self.mu

    def mode(self) -> Tensor:
        return self.mu

    def log_prob_pairs(self, z: Tensor) -> Tensor:
        return _log_density(z[:, None, :], self.mu[None], self.b[None])


class LaplacePrior(Prior):
    """Laplace(0, 1) per dimension."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def sample(self, num: int, generator: torch.Generator | None = None, device: Any = None) -> Tensor:
        zero = torch.zeros(1, self.dim)
        z = LaplacePosterior(zero, torch.ones(1, self.dim)).rsample(num, generator)[:, 0]
        return z.to(device) if device is not None else z

    def log_prob(self, z: Tensor) -> Tensor:
        return (-z.abs()).sum(-1) - self.dim * torch.log(torch.tensor(2.0, dtype=z.dtype, device=z.device))


class Laplace(LatentFamily):
    """Factorised Laplace posterior and prior; the encoder gives the location and a pre-softplus scale."""

    Config = LaplaceConfig
    config: LaplaceConfig
    supports_mean_normalisation = True

    @property
    def param_size(self) -> int:
        return 2 * self.dim

    def posterior(self, params: Tensor) -> LaplacePosterior:
        mu, raw = params.split(self.dim, dim=-1)
        return LaplacePosterior(mu, F.softplus(raw) + self.config.min_scale)

    def prior(self) -> LaplacePrior:
        return LaplacePrior(self.dim)

    def protocol(self) -> dict[str, Any]:
        return {"family": "Laplace", "prior": "Laplace(0, 1)", "kl": "closed form"}
