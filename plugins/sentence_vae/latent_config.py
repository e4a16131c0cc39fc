"""Options of the built-in latent plugins ``gaussian`` and ``vmf`` (a light module: no torch import)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from anyorder.config import PluginConfig, opt
from anyorder.errors import ConfigError


@dataclass
class GaussianConfig(PluginConfig):
    """A diagonal Gaussian posterior N(mu, diag(exp(log_var))) with the prior N(0, I) (Bowman et al. 2016).

    The encoder outputs 2m numbers per datapoint: the m means, then the m log-variances. The KL is closed form and
    factorises over dimensions. There are no options: the family is fully fixed by the latent size.
    """

    implementation = "anyorder_plugins.sentence_vae.gaussian:Gaussian"


@dataclass
class VMFConfig(PluginConfig):
    """A von Mises-Fisher posterior on the unit sphere S^{m-1} with the uniform prior (Davidson et al. 2018; Xu &
    Durrett 2018). The KL is closed form (Bessel functions in float64) and does not factorise over dimensions.

    With ``kappa > 0`` the concentration is fixed: the encoder outputs m numbers (the direction) and the KL is a
    constant, so the posterior cannot collapse. With ``kappa = 0`` the encoder outputs one more number per datapoint,
    mapped to ``min_kappa + softplus(x)`` and capped at ``max_kappa``.
    """

    implementation = "anyorder_plugins.sentence_vae.vmf:VonMisesFisher"

    kappa: float = opt(
        0.0,
        "concentration; > 0 fixes it (Xu & Durrett 2018: the KL is a constant); 0 learns it per datapoint from the "
        "encoder (Davidson et al. 2018)",
    )
    max_kappa: float = opt(
        500.0,
        "cap on a learned kappa (no gradient above it); 500 is well above the fixed kappa of Xu & Durrett (80 for "
        "m = 50) and bounds the KL (about (m/2 - 1) log kappa nats)",
    )
    min_kappa: float = opt(
        1e-3,
        "floor added to a learned kappa (kappa = min_kappa + softplus(x)): keeps log kappa finite; the KL there is "
        "about kappa^2 / (2m), i.e. nothing",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("kappa", "max_kappa", "min_kappa"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ConfigError(f"latent vmf: {name} must be finite (got {value})")
        if self.kappa < 0:
            raise ConfigError(f"latent vmf: kappa must be > 0 (fixed) or 0 (learned) (got {self.kappa})")
        if not self.min_kappa > 0:
            raise ConfigError(f"latent vmf: min_kappa must be positive (got {self.min_kappa})")
        if not self.max_kappa > self.min_kappa:
            raise ConfigError(f"latent vmf: max_kappa ({self.max_kappa}) must be larger than min_kappa ({self.min_kappa})")

    @property
    def learned(self) -> bool:
        """Whether the encoder predicts kappa (``kappa == 0``)."""
        return self.kappa == 0
