"""Options of the ``ardm`` objective (a light module: no torch import)."""

from __future__ import annotations

from dataclasses import dataclass

from anyorder.config import PluginConfig, opt
from anyorder.errors import ConfigError

T_SAMPLING = ("uniform", "antithetic")


@dataclass
class ARDMConfig(PluginConfig):
    """OA-ARDM (Hoogeboom et al. 2022): order-agnostic autoregressive diffusion with an absorbing MASK value.

    Training draws a step t ~ U{0..D-1} and a uniform order sigma per datapoint, masks the variables with
    sigma >= t, and scores all of them with one network call: D/(D-t) times their log-likelihood is an unbiased
    estimate of E_sigma log p(x|sigma), a lower bound on log p(x). Sampling and ``anyorder evaluate`` can use a step
    budget (``sample.steps``, ``eval.steps``): the dynamic programme picks the B steps that minimise the expected
    NLL, from the per-step losses tracked during training.
    """

    implementation = "anyorder_plugins.ardm.objective:ARDM"

    ce_weight: float = opt(1e-4, "weight of the unweighted cross-entropy term added to the bound (the paper: 1e-3 "
                                 "images, 1e-4 text); 0 disables")
    t_sampling: str = opt("uniform", "how the steps of a batch are drawn: uniform (independent) | antithetic (an "
                                     "evenly spaced grid with one random offset: the same mean, lower variance)",
                          choices=T_SAMPLING)
    eval_passes: int = opt(4, "draws of (t, sigma) averaged per datapoint by `anyorder evaluate` and validation")
    loss_ema: float = opt(0.95, "momentum of the per-step loss EMA that the step-budget plan is computed from")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ce_weight < 0:
            raise ConfigError(f"ardm: ce_weight must be >= 0 (got {self.ce_weight})")
        if self.eval_passes < 1:
            raise ConfigError(f"ardm: eval_passes must be >= 1 (got {self.eval_passes})")
        if not 0.0 <= self.loss_ema < 1.0:
            raise ConfigError(f"ardm: loss_ema must be in [0, 1) (got {self.loss_ema})")
