"""Estimators of log p(x) for a latent-variable model: the importance-weighted bound, in chunks of draws."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from anyorder_plugins.sentence_vae.latent import Posterior, Prior


def importance_weighted(log_likelihood: Callable[[Tensor], Tensor], q: Posterior, prior: Prior, num: int, *,
                        chunk: int = 50, generator: torch.Generator | None = None) -> Tensor:
    """log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q, per datapoint [B] (float64), K = ``num``.

    ``log_likelihood(z)`` maps draws [k, B, m] to log p(x|z) [k, B]. The draws are made ``chunk`` at a time (each
    chunk is one call of ``log_likelihood``), so memory does not grow with K. The estimate is a lower bound on
    log p(x) in expectation, equal to it for every K when q is the exact posterior, and non-decreasing in K.
    """
    if num < 1:
        raise ValueError(f"the number of importance samples must be positive (got {num})")
    parts = []
    for start in range(0, num, chunk):
        z = q.rsample(min(chunk, num - start), generator)
        parts.append((log_likelihood(z) + prior.log_prob(z) - q.log_prob(z)).double())
    return torch.logsumexp(torch.cat(parts), dim=0) - math.log(num)
