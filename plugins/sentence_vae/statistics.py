"""Set-level evaluation statistics of the Sentence-VAE: active units, KL per dimension and mutual information.

Each is an :class:`~anyorder.objective.EvaluationStatistic`: its states are reduced over ranks before ``compute``, so
the values cover the whole evaluated split exactly once, whatever the number of devices.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from anyorder.objective import EvaluationStatistic
from anyorder_plugins.sentence_vae.latent import LatentFamily


class ActiveUnits(EvaluationStatistic):
    """#{j : Var_x E_q[z_j | x] >= threshold} over the split (the unbiased variance, from exact sums)."""

    n: Tensor
    s: Tensor
    ss: Tensor

    def __init__(self, dim: int, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold
        self.add_state("n", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("s", default=torch.zeros(dim, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("ss", default=torch.zeros(dim, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, outputs: dict[str, Tensor]) -> None:  # type: ignore[override]
        mean = outputs["mean"].double()
        self.n += mean.shape[0]
        self.s += mean.sum(0)
        self.ss += (mean * mean).sum(0)

    def variances(self) -> Tensor:
        """Var_x E_q[z_j | x] per dimension (unbiased)."""
        n = self.n.clamp(min=2)
        return ((self.ss - self.s * self.s / n) / (n - 1)).clamp(min=0)

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        return {"active_units": (self.variances() >= self.threshold).sum().double()}


class KLPerDimension(EvaluationStatistic):
    """The mean KL per sentence of each latent dimension (one column for a family whose KL does not split)."""

    n: Tensor
    kl: list[Tensor]

    def __init__(self) -> None:
        super().__init__()
        self.add_state("n", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("kl", default=[], dist_reduce_fx="cat")

    def update(self, outputs: dict[str, Tensor]) -> None:  # type: ignore[override]
        kl = outputs["kl"].double()
        self.n += kl.shape[0]
        self.kl.append(kl.sum(0, keepdim=True))

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        parts = _joined(self.kl)
        per_dim = parts.reshape(-1, parts.shape[-1]).sum(0) / self.n
        if per_dim.numel() == 1:
            return {}
        return {f"kl_dim_{j:02d}": v for j, v in enumerate(per_dim)}


class MutualInformation(EvaluationStatistic):
    """I_q(x; z) under the aggregate posterior of the whole split: with one z_i ~ q(z|x_i) per sentence,

        I = mean_i [ log q(z_i | x_i) - log (1/N) sum_j q(z_i | x_j) ].

    Every sentence's posterior parameters and draw are gathered (a ``cat`` state); the N x N log-densities are
    computed in row chunks.
    """

    params: list[Tensor]
    z: list[Tensor]

    def __init__(self, family: LatentFamily, chunk: int = 256) -> None:
        super().__init__()
        self.family, self.chunk = family, chunk
        self.add_state("params", default=[], dist_reduce_fx="cat")
        self.add_state("z", default=[], dist_reduce_fx="cat")

    def update(self, outputs: dict[str, Tensor]) -> None:  # type: ignore[override]
        self.params.append(outputs["params"].double())
        self.z.append(outputs["z"].double())

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        params, z = _joined(self.params), _joined(self.z)
        return {"mutual_information": mutual_information(self.family, params, z, self.chunk)}


def _joined(state: Any) -> Tensor:
    """A ``cat`` state as one tensor (torchmetrics leaves a list before synchronisation, a tensor after)."""
    return state if isinstance(state, Tensor) else torch.cat(list(state))


def mutual_information(family: LatentFamily, params: Tensor, z: Tensor, chunk: int = 256) -> Tensor:
    """The aggregate-posterior estimate of I_q(x; z) from every datapoint's posterior ``params`` [N, P] and one draw
    ``z`` [N, m] of each."""
    q = family.posterior(params)
    n = z.shape[0]
    own = q.log_prob(z)  # [N]
    aggregate = torch.cat([torch.logsumexp(q.log_prob_pairs(z[i:i + chunk]), dim=1)
                           for i in range(0, n, chunk)]) - math.log(n)
    return (own - aggregate).mean()
