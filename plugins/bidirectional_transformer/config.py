"""Options of the ``bidirectional_transformer`` network plugin (a light module: no torch import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from anyorder.config import PluginConfig, opt
from anyorder.errors import ConfigError


@dataclass
class BidirectionalTransformerConfig(PluginConfig):
    """Bidirectional transformer over the D variables of a datapoint, conditioned on the generation step t.

    Each variable is a token: an embedding of its value (or MASK) plus a learned embedding of the variable's
    index; an embedding of t/D (sinusoidal features through a two-layer MLP) is added to every token. Then
    ``n_layers`` pre-norm blocks of full (non-causal) self-attention and a GELU MLP, a final LayerNorm and a linear
    head predicting every variable. For grids, graphs and sequences alike (the index embedding covers the layout).
    """

    implementation: ClassVar[str] = "anyorder_plugins.bidirectional_transformer.network:BidirectionalTransformer"

    n_layers: int = opt(4, "number of transformer blocks")
    d_model: int = opt(256, "width of the residual stream; must be divisible by n_heads")
    n_heads: int = opt(4, "attention heads per block; head size is d_model / n_heads")
    d_ff: int = opt(0, "hidden width of the MLP; 0 means 4 * d_model")
    dropout: float = opt(0.0, "dropout on embeddings, attention weights and residual branches, in [0, 1)")
    time_conditioning: bool = opt(True, "add an embedding of the step t (the number of known variables)")
    bias: bool = opt(False, "use biases in the linear layers and LayerNorms")
    norm_eps: float = opt(1e-5, "epsilon of the LayerNorms")

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"network.{name} must be a positive integer (got {getattr(self, name)})")
        if self.d_model % self.n_heads != 0:
            raise ConfigError(f"network.d_model ({self.d_model}) must be divisible by network.n_heads ({self.n_heads})")
        if self.d_ff < 0:
            raise ConfigError(f"network.d_ff must be 0 (meaning 4 * d_model) or positive (got {self.d_ff})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"network.dropout must be in [0, 1) (got {self.dropout})")

    @property
    def ff_width(self) -> int:
        """The MLP hidden width actually used."""
        return self.d_ff if self.d_ff > 0 else 4 * self.d_model
