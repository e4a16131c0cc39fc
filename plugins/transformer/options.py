"""Options every transformer network plugin shares (a light module: no torch import).

A network plugin's config subclasses :class:`TransformerOptions`, adds its own options and, when it checks more,
extends ``__post_init__`` (calling ``super().__post_init__()`` first). The checks and the meaning of ``d_ff = 0``
then stay the same across networks.
"""

from __future__ import annotations

from dataclasses import dataclass

from anyorder.config import PluginConfig, opt
from anyorder.errors import ConfigError


@dataclass
class TransformerOptions(PluginConfig):
    """Depth, width, heads, MLP width, dropout, biases and LayerNorm epsilon of a pre-norm transformer."""

    n_layers: int = opt(4, "number of transformer blocks")
    d_model: int = opt(256, "width of the residual stream; must be divisible by n_heads")
    n_heads: int = opt(4, "attention heads per block; head size is d_model / n_heads")
    d_ff: int = opt(0, "hidden width of the MLP; 0 means 4 * d_model")
    dropout: float = opt(0.0, "dropout on embeddings, attention weights and residual branches, in [0, 1)")
    bias: bool = opt(False, "use biases in the linear layers and LayerNorms")
    norm_eps: float = opt(1e-5, "epsilon of the LayerNorms")

    def __post_init__(self) -> None:
        super().__post_init__()
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
        if self.norm_eps <= 0:
            raise ConfigError(f"network.norm_eps must be positive (got {self.norm_eps})")

    @property
    def ff_width(self) -> int:
        """The MLP hidden width actually used: ``d_ff``, or ``4 * d_model`` when ``d_ff`` is 0."""
        return self.d_ff if self.d_ff > 0 else 4 * self.d_model
