"""The ``latent`` plugin kind, declared by the sentence_vae family: a posterior family q(z|x) with its prior p(z).

A latent family is built as ``cls(options, dim)`` for a latent of ``dim`` dimensions. The encoder returns
``param_size`` numbers per datapoint; :meth:`LatentFamily.posterior` turns them into a :class:`Posterior`, whose
draws are reparameterised (gradients reach the encoder through them), and :meth:`LatentFamily.prior` is p(z).
All log-densities are in nats, with respect to the measure the family states (Lebesgue on R^m for a Gaussian, the
surface measure of the sphere S^{m-1} for a vMF), so that log p(z) - log q(z|x) is a valid importance weight.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor


class Posterior:
    """q(z|x) for a batch of B datapoints over an m-dimensional latent."""

    def rsample(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        """``num`` reparameterised draws per datapoint: [num, B, m]."""
        raise NotImplementedError

    def rsample_with_score(self, num: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draws as :meth:`rsample` and a score term [num, B] for samplers whose draws are not a smooth function of
        the parameters alone (a rejection sampler): adding ``(f.detach() - baseline) * (score - score.detach())`` to a
        loss ``f`` makes its gradient unbiased. Zeros for a plain reparameterisation."""
        z = self.rsample(num, generator)
        return z, z.new_zeros(z.shape[:-1])

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) of draws [..., B, m]: [..., B]."""
        raise NotImplementedError

    def kl(self) -> Tensor:
        """KL(q(z|x) || p(z)) per datapoint and dimension [B, m] when the family factorises over dimensions, else
        per datapoint [B, 1] (the whole KL in one column)."""
        raise NotImplementedError

    def mean(self) -> Tensor:
        """E_q[z | x] [B, m] (the quantity whose variance over the data counts active units)."""
        raise NotImplementedError

    def mode(self) -> Tensor:
        """The most likely z [B, m] (for greedy reconstruction)."""
        raise NotImplementedError

    def log_prob_pairs(self, z: Tensor) -> Tensor:
        """log q(z_i | x_j) for every draw i [N, m] and every datapoint j of this posterior: [N, B] (the aggregate
        posterior q(z) = mean_j q(z|x_j) needs every pair)."""
        raise NotImplementedError


class Prior:
    """p(z) over an m-dimensional latent."""

    def sample(self, num: int, generator: torch.Generator | None = None, device: Any = None) -> Tensor:
        """``num`` draws [num, m]."""
        raise NotImplementedError

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z) of draws [..., m]: [...]."""
        raise NotImplementedError

    def interpolate(self, a: Tensor, b: Tensor, t: Tensor) -> Tensor:
        """Points between ``a`` and ``b`` [m] at fractions ``t`` [T]: [T, m]. A straight line by default; families on
        a sphere follow the great circle."""
        return a[None] + t[:, None] * (b - a)[None]


class LatentFamily:
    """Base of the ``latent`` plugins: a posterior family and its prior, built as ``cls(options, dim)``."""

    Config: ClassVar[type]
    factorised: ClassVar[bool] = True
    """Whether the KL splits over dimensions (then :meth:`Posterior.kl` is [B, m] and per-dimension free bits apply)."""

    def __init__(self, config: Any, dim: int) -> None:
        self.config = config
        self.dim = dim

    @property
    def param_size(self) -> int:
        """How many numbers per datapoint the encoder must output."""
        raise NotImplementedError

    def posterior(self, params: Tensor) -> Posterior:
        """q(z|x) from the encoder's output [B, param_size]."""
        raise NotImplementedError

    def prior(self) -> Prior:
        """p(z)."""
        raise NotImplementedError

    def protocol(self) -> dict[str, Any]:
        """The family and its settings, for reports (the KL formula, the sampler, ...)."""
        return {"family": type(self).__name__}
