"""Options of the ``causal_transformer`` network plugin.

This module is light on purpose: it must not import torch, so that validating a config stays fast. The
implementation lives in :mod:`anyorder_plugins.causal_transformer.network`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import ClassVar

from anyorder.config import PluginConfig, opt
from anyorder.errors import ConfigError

POSITION_KINDS: tuple[str, ...] = ("learned", "rotary")
"""The accepted values of ``positions``."""


@dataclass
class CausalTransformerConfig(PluginConfig):
    """Causal (left-to-right) transformer: pre-norm, SDPA attention, KV-cache sampling.

    A GPT-style decoder: token embedding (+ learned position embedding, or rotary embeddings inside attention),
    ``n_layers`` pre-LayerNorm blocks of causal self-attention and a GELU MLP, a final LayerNorm and a linear head.
    """

    implementation: ClassVar[str] = "anyorder_plugins.causal_transformer.network:CausalTransformer"

    n_layers: int = opt(4, "number of transformer blocks")
    d_model: int = opt(256, "width of the residual stream; must be divisible by n_heads")
    n_heads: int = opt(4, "attention heads per block; head size is d_model / n_heads")
    d_ff: int = opt(0, "hidden width of the MLP; 0 means 4 * d_model")
    dropout: float = opt(0.0, "dropout on embeddings, attention weights and residual branches, in [0, 1)")
    positions: str = opt("learned", "position encoding: learned (absolute embedding table) | rotary (RoPE)")
    tie_embeddings: bool = opt(
        True,
        "share the token-embedding matrix with the output projection; applies only when the input and output "
        "vocabularies have the same size, otherwise the two stay separate (untied) without an error",
    )
    bias: bool = opt(False, "use biases in the linear layers and LayerNorms")
    norm_eps: float = opt(1e-5, "epsilon of the LayerNorms")

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"network.{name} must be a positive integer (got {value})")
        if self.d_model % self.n_heads != 0:
            raise ConfigError(f"network.d_model ({self.d_model}) must be divisible by network.n_heads ({self.n_heads})")
        if self.d_ff < 0:
            raise ConfigError(f"network.d_ff must be 0 (meaning 4 * d_model) or positive (got {self.d_ff})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"network.dropout must be in [0, 1) (got {self.dropout})")
        if self.positions not in POSITION_KINDS:
            close = difflib.get_close_matches(str(self.positions), POSITION_KINDS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"network.positions must be one of {', '.join(POSITION_KINDS)} (got {self.positions!r}).{hint}"
            )
        # Rotary embeddings rotate pairs of channels, so every head needs an even number of them.
        if self.positions == "rotary" and (self.d_model // self.n_heads) % 2 != 0:
            raise ConfigError(
                f"network.positions=rotary needs an even head size, but d_model / n_heads = "
                f"{self.d_model} / {self.n_heads} = {self.d_model // self.n_heads}"
            )
        if self.norm_eps <= 0:
            raise ConfigError(f"network.norm_eps must be positive (got {self.norm_eps})")

    @property
    def ff_width(self) -> int:
        """The MLP hidden width actually used: ``d_ff``, or ``4 * d_model`` when ``d_ff`` is 0."""
        return self.d_ff if self.d_ff > 0 else 4 * self.d_model
