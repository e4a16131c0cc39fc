"""Options of the ``causal_transformer`` network plugin.

This module is light on purpose: it must not import torch, so that validating a config stays fast. The
implementation lives in :mod:`anyorder_plugins.causal_transformer.network`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from anyorder.config import opt
from anyorder.errors import ConfigError
from anyorder_plugins.transformer.options import TransformerOptions

POSITION_KINDS: tuple[str, ...] = ("learned", "rotary")
"""The accepted values of ``positions``."""


@dataclass
class CausalTransformerConfig(TransformerOptions):
    """Causal (left-to-right) transformer: pre-norm, SDPA attention, KV-cache sampling.

    A GPT-style decoder: token embedding (+ learned position embedding, or rotary embeddings inside attention),
    ``n_layers`` pre-LayerNorm blocks of causal self-attention and a GELU MLP, a final LayerNorm and a linear head.
    """

    implementation: ClassVar[str] = "anyorder_plugins.causal_transformer.network:CausalTransformer"

    positions: str = opt("learned", "position encoding: learned (absolute embedding table) | rotary (RoPE)",
                         choices=POSITION_KINDS)
    tie_embeddings: bool = opt(
        True,
        "share the token-embedding matrix with the output projection; applies only when the input and output "
        "vocabularies have the same size, otherwise the two stay separate (untied) without an error",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        # Rotary embeddings rotate pairs of channels, so every head needs an even number of them.
        if self.positions == "rotary" and (self.d_model // self.n_heads) % 2 != 0:
            raise ConfigError(
                f"network.positions=rotary needs an even head size, but d_model / n_heads = "
                f"{self.d_model} / {self.n_heads} = {self.d_model // self.n_heads}"
            )
