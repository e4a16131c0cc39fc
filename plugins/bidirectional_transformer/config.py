"""Options of the ``bidirectional_transformer`` network plugin (a light module: no torch import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from anyorder.config import opt
from anyorder_plugins.transformer.options import TransformerOptions


@dataclass
class BidirectionalTransformerConfig(TransformerOptions):
    """Bidirectional transformer over the D variables of a datapoint, conditioned on the generation step t.

    Each variable is a token: an embedding of its value (or MASK) plus a learned embedding of the variable's
    index; an embedding of t/D (sinusoidal features through a two-layer MLP) is added to every token. Then
    ``n_layers`` pre-norm blocks of full (non-causal) self-attention and a GELU MLP, a final LayerNorm and a linear
    head predicting every variable. For grids, graphs and sequences alike (the index embedding covers the layout).
    """

    implementation: ClassVar[str] = "anyorder_plugins.bidirectional_transformer.network:BidirectionalTransformer"

    time_conditioning: bool = opt(True, "add an embedding of the step t (the number of known variables)")
