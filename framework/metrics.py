"""Base class of sample metrics: scores computed on decoded samples, correct under DDP.

A metric plugin subclasses :class:`SampleMetric`, a ``torchmetrics.Metric``. It declares its states with
``add_state`` (tensors, or lists of tensors with ``dist_reduce_fx="cat"`` for set-level quantities such as
uniqueness), turns domain objects into those states in :meth:`update`, and returns named values from
:meth:`compute`. torchmetrics synchronises the states over ranks before ``compute``, so every rank's samples
count once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torchmetrics
from torch import Tensor


class SampleMetric(torchmetrics.Metric):
    """Base of metric plugins: ``cls(config, datamodule)``; ``update(samples)``; ``compute() -> {name: value}``."""

    Config: ClassVar[type]
    full_state_update = False

    def __init__(self, config: Any, datamodule: Any) -> None:
        super().__init__()
        self.config = config
        self.datamodule = datamodule

    def update(self, samples: Sequence[Any]) -> None:  # type: ignore[override]
        raise NotImplementedError

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        raise NotImplementedError


class LikelihoodStats(torchmetrics.Metric):
    """Sums for the NLL per token over a split, with a standard error over datapoints.

    Per datapoint i: nats n_i = -log p(x_i) (or the bound) and tokens t_i. The NLL per token is the ratio
    R = sum n_i / sum t_i; its standard error is the delta-method (ratio-estimator) one,
    sqrt(sum (n_i - R t_i)^2 / (N (N - 1))) / mean(t). States are sums, reduced over ranks.
    """

    full_state_update = False
    count: Tensor
    tokens: Tensor
    nats: Tensor
    nats_sq: Tensor
    tokens_sq: Tensor
    nats_tokens: Tensor

    def __init__(self) -> None:
        super().__init__()
        for name in ("count", "tokens", "nats", "nats_sq", "tokens_sq", "nats_tokens"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, nats: Tensor, tokens: Tensor) -> None:  # type: ignore[override]
        n, t = nats.detach().double(), tokens.detach().double()
        self.count += n.numel()
        self.tokens += t.sum()
        self.nats += n.sum()
        self.nats_sq += (n * n).sum()
        self.tokens_sq += (t * t).sum()
        self.nats_tokens += (n * t).sum()

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        count, tokens = self.count, self.tokens
        ratio = self.nats / tokens
        # sum (n_i - R t_i)^2 expanded into the accumulated sums.
        resid_sq = self.nats_sq - 2 * ratio * self.nats_tokens + ratio * ratio * self.tokens_sq
        se = torch.sqrt(torch.clamp(resid_sq, min=0) / (count * (count - 1)).clamp(min=1)) / (tokens / count)
        return {"nll": ratio, "nll_se": se, "num_sequences": count, "num_tokens": tokens,
                "nll_per_sequence": self.nats / count}


class TermStats(torchmetrics.Metric):
    """Sums of named per-datapoint evaluation terms (a KL, a reconstruction term), reduced over ranks.

    Per term: the mean per datapoint with its standard error over datapoints, and the sum per token (divided by the
    token count the likelihood covers).
    """

    full_state_update = False
    count: Tensor

    def __init__(self, names: tuple[str, ...]) -> None:
        super().__init__()
        self.names = tuple(names)
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        for name in self.names:
            self.add_state(f"sum_{name}", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"sq_{name}", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, terms: dict[str, Tensor]) -> None:  # type: ignore[override]
        if set(terms) != set(self.names):
            raise ValueError(f"evaluation terms {sorted(terms)} differ from the declared ones {sorted(self.names)}")
        sizes = {t.numel() for t in terms.values()}
        if len(sizes) > 1:
            raise ValueError(f"evaluation terms must have one value per datapoint (got sizes {sorted(sizes)})")
        if not self.names:
            return
        self.count += sizes.pop()
        for name, value in terms.items():
            v = value.detach().double().reshape(-1)
            setattr(self, f"sum_{name}", getattr(self, f"sum_{name}") + v.sum())
            setattr(self, f"sq_{name}", getattr(self, f"sq_{name}") + (v * v).sum())

    def compute(self, num_tokens: float = 0.0) -> dict[str, dict[str, float]]:  # type: ignore[override]
        out: dict[str, dict[str, float]] = {}
        n = float(self.count)
        for name in self.names:
            total, sq = float(getattr(self, f"sum_{name}")), float(getattr(self, f"sq_{name}"))
            mean = total / max(n, 1.0)
            var = max(sq / max(n, 1.0) - mean * mean, 0.0) * n / max(n - 1.0, 1.0)
            out[name] = {"per_sequence": mean, "per_sequence_se": (var / max(n, 1.0)) ** 0.5,
                         "per_token": total / num_tokens if num_tokens else float("nan")}
        return out
