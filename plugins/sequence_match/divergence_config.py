"""Options of the built-in divergence plugins ``chi2`` and ``kl`` (a light module: no torch import)."""

from __future__ import annotations

from dataclasses import dataclass

from anyorder.config import PluginConfig, opt
from anyorder.errors import ConfigError


@dataclass
class Chi2Config(PluginConfig):
    """The chi^2-mixture divergence (SequenceMatch's default): phi(r) = r on data, plus c r^2 with c = 1 / (4 alpha)
    on the mixture of data and the model's generations (LS-IQ's bounded chi^2 to the mixture)."""

    implementation = "anyorder_plugins.sequence_match.divergences:Chi2"

    alpha: float = opt(1.0, "the chi^2 penalty is r^2 / (4 alpha): alpha = 1 gives phi(x) = x - x^2 / 4")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.alpha > 0:
            raise ConfigError(f"divergence chi2: alpha must be positive (got {self.alpha})")


@dataclass
class KLConfig(PluginConfig):
    """The forward KL: phi(r) = r and no penalty. Without generations in the batch, SequenceMatch with it is
    position-weighted maximum likelihood (behaviour cloning)."""

    implementation = "anyorder_plugins.sequence_match.divergences:KL"
