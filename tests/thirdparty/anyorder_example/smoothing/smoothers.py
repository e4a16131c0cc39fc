"""The built-in smoothers of the example distribution: ``none`` and ``label``."""

from __future__ import annotations

from torch import Tensor

from anyorder_example.smoothing.base import Smoother
from anyorder_example.smoothing.config import LabelConfig, NoneConfig


class NoSmoothing(Smoother):
    """Maximum likelihood: the targets are the observed categories."""

    Config = NoneConfig


class LabelSmoothing(Smoother):
    """Targets mixed with the uniform law by ``eps``: (1 - eps) NLL + eps mean_k(-log q_k)."""

    Config = LabelConfig
    config: LabelConfig

    def loss(self, log_q: Tensor, counts: Tensor, total: Tensor) -> Tensor:
        eps = float(self.config.eps)
        return (1 - eps) * super().loss(log_q, counts, total) - eps * log_q.mean()
