"""Options of the ``mle`` objective (a light module: no torch import)."""

from __future__ import annotations

from dataclasses import dataclass

from anyorder.config import PluginConfig, opt


@dataclass
class MLEConfig(PluginConfig):
    """MLE: left-to-right autoregressive model trained by teacher forcing; exact likelihood, KV-cache sampling."""

    implementation = "anyorder_plugins.mle.objective:MLE"

    reduction: str = opt(
        "token",
        "how the loss averages: token (mean NLL over all predicted tokens, EOS included) | sequence (sum over a "
        "sequence's tokens, mean over sequences)",
        choices=("token", "sequence"),
    )
