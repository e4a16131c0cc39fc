"""Options of the ``sequence_match`` objective (a light module: no torch import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from anyorder.config import PluginConfig, opt, plugin_field
from anyorder.errors import ConfigError


@dataclass
class SequenceMatchConfig(PluginConfig):
    """SequenceMatch (Cundy & Ermon 2024): a left-to-right model with a BKSP action, trained by imitation.

    The actions are the vocabulary, EOS (variable-length data) and BKSP. Training data gets backspace
    demonstrations: before each token, with probability ``noise_rate``, a wrong token followed by BKSP (the wrong
    token itself is not imitated). With Q = the logits and V = their logsumexp, each action has the implicit reward
    r_t = Q(s_t, a_t) - gamma V(s_{t+1}) (V := 0 after EOS). The loss is behaviour cloning (BC) for the first
    ``bc_warmup`` of training, then (1 - lam) BC + lam L_SM with

        L_SM = -sum_data w_t phi(r_t) + sum_mix w_t penalty(r_t) + sum_mix w_t (V(s_t) - gamma V(s_{t+1})),

    w_t = gamma^t, "data" the augmented training sequences (noise emissions excluded), "mix" those plus a replay
    buffer of the model's own generations with backspace; phi and the penalty come from the ``divergence`` plugin.
    Every sum is divided by the number of actions it covers. Our reconstruction: no official code exists.
    """

    implementation = "anyorder_plugins.sequence_match.objective:SequenceMatch"

    divergence: Any = plugin_field("divergence", "phi and the mixture penalty (an anyorder.divergences plugin): "
                                                 "chi2 (default) | kl | yours", default={"name": "chi2"})
    gamma: float = opt(0.998, "discount of the per-action weights w_t = gamma^t and of V(s_{t+1})")
    lam: float = opt(0.5, "weight of L_SM in (1 - lam) BC + lam L_SM after the warm-up, in [0, 1]")
    bc_warmup: float = opt(0.1, "fraction of train.max_steps trained on BC alone")
    noise_rate: float = opt(0.05, "probability of a (wrong token, BKSP) pair before each token of a training sequence")
    imitate_noise: bool = opt(False, "also imitate the noise emissions (the MLE+BKSP baseline; SequenceMatch does not)")
    noise_backspace: bool = opt(True, "follow each noise token by BKSP; false leaves the noise in the sequence (plain "
                                      "MLE on corrupted data, a baseline)")
    replay_every: int = opt(10, "generate replay_batch sequences into the buffer every N optimizer steps after the "
                                "warm-up (0: no replay)")
    replay_batch: int = opt(16, "sequences generated per refresh (each rank its own)")
    replay_size: int = opt(256, "capacity of the replay buffer (oldest dropped first)")
    replay_rows: int = opt(8, "replay sequences added to each training batch for the mixture terms")
    action_cap: float = opt(2.0, "generation stops after action_cap * max_len actions (stops BKSP loops)")
    noise_in_mixture: bool = opt(False, "keep the noise emissions in the mixture penalty and value terms (0.2.0's "
                                        "loss, which pushed the policy toward its noise); false leaves them out of "
                                        "every term, as methods.md says")
    mixture: str = opt("equal", "how the mixture terms weigh data and replay actions: equal (the mean over data "
                                "actions and the mean over replay actions, half each: the mixture (rho_data + "
                                "rho_theta) / 2 of IQ-Learn) | per_action (0.2.0: one mean over all actions, so "
                                "replay was 11-20% of it)", choices=("equal", "per_action"))
    truncation: str = opt("bootstrap", "fixed-length data without EOS (windows cut from a longer text): bootstrap "
                                       "V(s') of the state after the last token | terminal (0.2.0: V := 0 there, as "
                                       "if the text ended)", choices=("bootstrap", "terminal"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.gamma <= 1.0:
            raise ConfigError(f"sequence_match: gamma must be in (0, 1] (got {self.gamma})")
        for name in ("lam", "bc_warmup", "noise_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"sequence_match: {name} must be in [0, 1] (got {getattr(self, name)})")
        if self.noise_rate >= 1.0:
            raise ConfigError("sequence_match: noise_rate must be below 1")
        for name in ("replay_every", "replay_batch", "replay_size", "replay_rows"):
            if getattr(self, name) < 0:
                raise ConfigError(f"sequence_match: {name} must be >= 0 (got {getattr(self, name)})")
        if self.action_cap < 1.0:
            raise ConfigError(f"sequence_match: action_cap must be >= 1 (got {self.action_cap})")
