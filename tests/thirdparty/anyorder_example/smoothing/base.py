"""Base class of the ``smoother`` kind (declared in this distribution's ``anyorder.kinds`` entry points)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor


class Smoother:
    """Turns a categorical law's log-probabilities and the observed counts into a training loss per prediction.

    Built as ``cls(options)``. The default is plain maximum likelihood: the mean negative log-probability of the
    observed categories.
    """

    Config: ClassVar[type]

    def __init__(self, config: Any) -> None:
        self.config = config

    def loss(self, log_q: Tensor, counts: Tensor, total: Tensor) -> Tensor:
        """The loss of ``counts`` [K] observations (``total`` of them) under ``log_q`` [K]."""
        return -(counts * log_q).sum() / total.clamp(min=1)
