"""Options of the ``lo_arm`` objective (a light module: no torch import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from anyorder.config import PluginConfig, opt, plugin_field
from anyorder.errors import ConfigError

P_POLICIES = ("uniform", "entropy", "st")
Q_POLICIES = ("uniform", "st", "sep")
T_SAMPLING = ("uniform", "antithetic")
EVAL_ESTIMATORS = ("chain", "step", "iw")


@dataclass
class LOARMConfig(PluginConfig):
    """LO-ARM (Wang et al. 2025): the order of generation is a latent variable with a learned policy.

    The generative model picks which still-MASKed variable to fill next with an order-policy p(z_i | z_<i, x_{z<i})
    (``p_policy``) and fills it from the classifier; both read the same partially masked datapoint. Training
    maximises the ELBO with a variational order-policy q(z | x) (``q_policy``): a Plackett-Luce distribution whose
    scores are computed once from the full datapoint. One step i ~ U{0..D-1} and K prefixes z_<i ~ q are drawn per
    datapoint; the sum over the next variable z_i is exact (one network call scores every remaining variable), and
    the prefix is handled by REINFORCE with the leave-one-out baseline over the K prefixes. With ``p_policy`` and
    ``q_policy`` both ``uniform`` it is OA-ARDM. Variants are named LO-ARM-{p_policy}-{q_policy}; the paper's best
    is st-sep.
    """

    implementation = "anyorder_plugins.lo_arm.objective:LOARM"

    p_policy: str = opt("st", "generative order-policy: uniform | entropy (prefer the variable whose classifier "
                              "entropy is lowest) | st (a policy head on the classifier's network)",
                        choices=P_POLICIES)
    q_policy: str = opt("sep", "variational order-policy q(z|x), Plackett-Luce on scores of the full x: uniform | "
                               "st (a head on the classifier's network applied to the full x) | sep (a separate "
                               "network, q_network)", choices=Q_POLICIES)
    q_network: Any = plugin_field("network", "the network of q_policy=sep, a {name: ..., **options} section; empty "
                                             "means the run's `network` section (same architecture, its own weights)",
                                  default={})
    num_samples: int = opt(2, "K, the prefixes z_<i ~ q drawn per datapoint for the RLOO gradient (>= 2)")
    entropy_beta: float = opt(1.0, "p_policy=entropy: the policy logits are -entropy_beta * classifier entropy")
    q_entropy_weight: float = opt(0.0, "weight of a bonus on the entropy of q at the drawn step (counters an early "
                                       "collapse of q to one order); 0 disables")
    ce_weight: float = opt(0.0, "weight of the unweighted cross-entropy of the still-masked variables (as in "
                                "ardm); 0 disables")
    t_sampling: str = opt("uniform", "how the steps i of a batch are drawn: uniform | antithetic (as in ardm)",
                          choices=T_SAMPLING)
    order_temperature: float = opt(1.0, "temperature of the order-policy when sampling; 0 picks its most likely "
                                        "variable")
    eval_estimator: str = opt("chain", "how `anyorder evaluate` estimates the bound: chain (one order z ~ q per "
                                       "pass, the exact inner sum at each of its D steps: the ELBO, D calls) | step "
                                       "(one step per pass: the training estimator, 1 call) | iw (the importance-"
                                       "weighted bound log mean_k p(z_k, x) / q(z_k | x) over eval_passes orders, "
                                       "tighter than the ELBO; D calls per order)", choices=EVAL_ESTIMATORS)
    eval_passes: int = opt(2, "orders (or steps) per datapoint in `anyorder evaluate` and validation")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_samples < 2:
            raise ConfigError(f"lo_arm: num_samples must be >= 2: the leave-one-out baseline of each prefix is the "
                              f"mean F of the others (got {self.num_samples})")
        for name in ("entropy_beta", "q_entropy_weight", "ce_weight", "order_temperature"):
            if getattr(self, name) < 0:
                raise ConfigError(f"lo_arm: {name} must be >= 0 (got {getattr(self, name)})")
        if self.eval_passes < 1:
            raise ConfigError(f"lo_arm: eval_passes must be >= 1 (got {self.eval_passes})")
        if self.q_network and self.q_policy != "sep":
            raise ConfigError(f"lo_arm: q_network is only used with q_policy=sep (q_policy is "
                              f"{self.q_policy!r}); remove it or set q_policy=sep")
