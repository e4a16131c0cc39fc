"""Options of the ``graph_transformer`` network plugin (a light module: no torch import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from anyorder.config import opt
from anyorder.errors import ConfigError
from anyorder_plugins.transformer.options import TransformerOptions


@dataclass
class GraphTransformerConfig(TransformerOptions):
    """Graph transformer over the N nodes and N(N-1)/2 edges of a graph datapoint, conditioned on the step t.

    For ``graph`` data only (N node variables followed by the upper-triangle edge variables). Nodes carry states of
    width ``d_model`` (an embedding of their value or MASK, optionally of their slot index, and of t/D); every node
    pair carries a symmetric edge state of width ``d_edge`` (an embedding of the edge value or MASK, a learned
    "self" vector on the diagonal, and t/D). Each of the ``n_layers`` pre-norm blocks runs self-attention over the
    nodes with a per-head bias read from the edge states (plus each node's mean edge state), a node GELU MLP, and an
    edge update from the edge state and both end nodes. A final LayerNorm and linear heads predict every variable.
    """

    implementation: ClassVar[str] = "anyorder_plugins.graph_transformer.network:GraphTransformer"

    d_edge: int = opt(0, "width of the edge states; 0 means d_model // 2")
    time_conditioning: bool = opt(True, "add an embedding of the step t (the number of known variables)")
    node_index_embedding: bool = opt(
        True,
        "add a learned embedding of each node's slot index (molecule codecs order atoms canonically, so slots carry "
        "information); false makes the network permutation-equivariant",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.d_edge < 0:
            raise ConfigError(f"network.d_edge must be 0 (meaning d_model // 2) or positive (got {self.d_edge})")

    @property
    def edge_width(self) -> int:
        """The edge-state width actually used: ``d_edge``, or ``d_model // 2`` (at least 1) when ``d_edge`` is 0."""
        return self.d_edge if self.d_edge > 0 else max(1, self.d_model // 2)
