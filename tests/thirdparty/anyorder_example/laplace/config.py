"""Options of the ``laplace`` latent family (a light module: no torch import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from anyorder.config import PluginConfig, opt
from anyorder.errors import ConfigError


@dataclass
class LaplaceConfig(PluginConfig):
    """Factorised Laplace posterior q(z_j|x) = Laplace(mu_j, b_j) with the prior Laplace(0, 1); closed-form KL."""

    implementation: ClassVar[Any] = "anyorder_example.laplace.family:Laplace"

    min_scale: float = opt(1e-4, "smallest posterior scale b (keeps log b finite)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.min_scale > 0:
            raise ConfigError(f"latent laplace: min_scale must be positive (got {self.min_scale})")
