"""The built-in divergences of SequenceMatch: ``chi2`` (the chi^2 mixture) and ``kl`` (behaviour cloning)."""

from __future__ import annotations

from torch import Tensor

from anyorder_plugins.sequence_match.divergence import Divergence
from anyorder_plugins.sequence_match.divergence_config import Chi2Config, KLConfig


class Chi2(Divergence):
    """phi(r) = r on data; r^2 / (4 alpha) on the mixture."""

    Config = Chi2Config
    config: Chi2Config

    def mixture_penalty(self, r: Tensor) -> Tensor | None:
        return r.square() / (4.0 * self.config.alpha)


class KL(Divergence):
    """phi(r) = r and no penalty (the base's behaviour)."""

    Config = KLConfig
