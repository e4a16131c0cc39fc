"""The graph transformer network: node self-attention biased by symmetric edge states, which are updated too.

Layout (``NetworkIO.structure == "graph"``, ``io.shape == (N,)``): the D = N + N(N-1)/2 variables are the N node
variables followed by the edge variables of the pairs i < j in row-major order (``numpy.triu_indices(N, k=1)``).
Edge states are dense ``[B, N, N, d_edge]`` and symmetric: edge (i, j) is written at (i, j) and (j, i), and every
update is symmetric in i and j, so the upper triangle is read out at the end.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anyorder.network import NetworkIO
from anyorder_plugins.any_order.network import AnyOrderNetwork
from anyorder_plugins.bidirectional_transformer.network import sinusoidal_features
from anyorder_plugins.graph_transformer.config import GraphTransformerConfig
from anyorder_plugins.transformer.layers import MLP, SelfAttention, init_transformer_weights


class EdgeBiasedAttention(SelfAttention):
    """Bidirectional multi-head self-attention over nodes with an additive float bias [B, H, N, N] per head.

    A :class:`SelfAttention` (same ``qkv``/``out_proj``, so :func:`init_transformer_weights` scales ``out_proj`` as
    a residual projection) whose forward takes the bias instead of a bool mask.
    """

    def __init__(self, d_model: int, n_heads: int, *, dropout: float = 0.0, bias: bool = False) -> None:
        super().__init__(d_model, n_heads, dropout=dropout, bias=bias, causal=False)

    def forward(self, x: Tensor, attn_bias: Tensor) -> Tensor:  # type: ignore[override]
        """``x`` [B, N, d_model], ``attn_bias`` [B, H, N, N] (added to the attention logits) -> [B, N, d_model]."""
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_bias.to(q.dtype), dropout_p=self.dropout if self.training else 0.0
        )
        out = out.transpose(1, 2).reshape(batch, length, self.d_model)
        return self.resid_dropout(self.out_proj(out))


class GraphBlock(nn.Module):
    """Pre-norm block: edge-biased node attention plus edge aggregation, node MLP, then the edge update.

    Nodes: ``h_i += attn_i(LN(h); bias_ij = W_b LN(e_ij)) + W_a mean_j LN(e_ij)``, then ``h += MLP(LN(h))``. The
    aggregation matters: where node states are equal (e.g. every node MASK) attention averages equal values and
    cannot carry edge information, whatever the bias. Edges: ``e_ij += MLP(LN(e_ij) + A h_i + A h_j)`` (symmetric).
    """

    def __init__(self, config: GraphTransformerConfig) -> None:
        super().__init__()
        d_model, d_edge, eps, bias = config.d_model, config.edge_width, config.norm_eps, config.bias
        self.n_heads = config.n_heads
        self.attn_norm = nn.LayerNorm(d_model, eps=eps, bias=bias)
        self.bias_norm = nn.LayerNorm(d_edge, eps=eps, bias=bias)
        self.bias_proj = nn.Linear(d_edge, config.n_heads, bias=bias)
        self.edge_to_node = nn.Linear(d_edge, d_model, bias=bias)  # a residual projection (scaled at init)
        self.attn = EdgeBiasedAttention(d_model, config.n_heads, dropout=config.dropout, bias=bias)
        self.mlp_norm = nn.LayerNorm(d_model, eps=eps, bias=bias)
        self.mlp = MLP(d_model, config.ff_width, dropout=config.dropout, bias=bias)
        self.dropout = nn.Dropout(config.dropout)
        self.node_norm = nn.LayerNorm(d_model, eps=eps, bias=bias)
        self.node_to_edge = nn.Linear(d_model, d_edge, bias=bias)
        self.edge_norm = nn.LayerNorm(d_edge, eps=eps, bias=bias)
        self.edge_mlp = MLP(d_edge, 2 * d_edge, dropout=config.dropout, bias=bias)

    def forward(self, h: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
        """``h`` [B, N, d_model], ``e`` [B, N, N, d_edge] (symmetric) -> the updated ``(h, e)``."""
        normed = self.bias_norm(e)
        attn_bias = self.bias_proj(normed).permute(0, 3, 1, 2)  # [B, H, N, N]
        h = h + self.attn(self.attn_norm(h), attn_bias) + self.dropout(self.edge_to_node(normed.mean(dim=2)))
        h = h + self.mlp(self.mlp_norm(h))
        a = self.node_to_edge(self.node_norm(h))  # [B, N, d_edge]
        e = e + self.edge_mlp(self.edge_norm(e) + a[:, :, None, :] + a[:, None, :, :])
        return h, e


class GraphTransformer(AnyOrderNetwork):
    """Node and edge embeddings (+ node slots, + a step embedding), edge-biased attention blocks, node/edge heads."""

    Config = GraphTransformerConfig
    config: GraphTransformerConfig
    pair_index: Tensor
    upper_index: Tensor

    def __init__(self, config: GraphTransformerConfig, io: NetworkIO) -> None:
        super().__init__(config, io)
        if io.structure != "graph" or len(io.shape) != 1:
            raise ValueError(
                f"graph_transformer needs graph data (structure 'graph', shape (N,)), got structure "
                f"{io.structure!r} with shape {io.shape}; use network.name=bidirectional_transformer for other data"
            )
        n = int(io.shape[0])
        num_edges = n * (n - 1) // 2
        d = n + num_edges
        if n < 1 or len(io.input_vocab_sizes) != d or len(io.output_vocab_sizes) != d:
            raise ValueError(
                f"graph_transformer: a graph of N={n} nodes has D = N + N(N-1)/2 = {d} variables, but the network "
                f"got {len(io.input_vocab_sizes)} input and {len(io.output_vocab_sizes)} output vocabulary sizes"
            )
        self.num_nodes, self.num_edges, self.num_variables = n, num_edges, d
        d_model, d_edge, v_out = config.d_model, config.edge_width, io.output_vocab_size

        self.node_emb = nn.Embedding(max(io.input_vocab_sizes[:n]), d_model)
        self.edge_emb = nn.Embedding(max(io.input_vocab_sizes[n:], default=1), d_edge)
        self.self_edge = nn.Parameter(torch.zeros(d_edge))
        self.slot_emb = nn.Embedding(n, d_model) if config.node_index_embedding else None
        if config.time_conditioning:
            self.time_mlp: nn.Module | None = nn.Sequential(
                nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, d_model)
            )
            self.time_to_edge: nn.Module | None = nn.Linear(d_model, d_edge, bias=config.bias)
        else:
            self.time_mlp = self.time_to_edge = None
        self.emb_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(GraphBlock(config) for _ in range(config.n_layers))
        self.final_norm = nn.LayerNorm(d_model, eps=config.norm_eps, bias=config.bias)
        self.edge_final_norm = nn.LayerNorm(d_edge, eps=config.norm_eps, bias=config.bias)
        self.node_head = nn.Linear(d_model, v_out, bias=False)
        self.edge_head = nn.Linear(d_edge, v_out, bias=False)

        # pair_index[i * N + j]: the edge variable of pair {i, j} (0 .. E-1), or E (the "self" slot) when i == j.
        rows, cols = torch.triu_indices(n, n, offset=1)
        pair = torch.full((n, n), num_edges, dtype=torch.long)
        pair[rows, cols] = torch.arange(num_edges)
        pair[cols, rows] = torch.arange(num_edges)
        self.register_buffer("pair_index", pair.flatten(), persistent=False)
        # upper_index[k]: the flat position i * N + j of edge variable k (i < j, row-major).
        self.register_buffer("upper_index", rows * n + cols, persistent=False)
        init_transformer_weights(self, config.n_layers)
        nn.init.normal_(self.self_edge, mean=0.0, std=0.02)
        for block in self.blocks:
            assert isinstance(block, GraphBlock)
            nn.init.normal_(block.edge_to_node.weight, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))

    def forward(self, tokens: Tensor, t: Tensor) -> Tensor:
        """``tokens`` [B, D] (values, MASK where unknown), ``t`` [B] known counts -> logits [B, D, V_out]."""
        if tokens.dim() != 2 or tokens.shape[1] != self.num_variables:
            raise ValueError(f"tokens must be [batch, {self.num_variables}], got shape {tuple(tokens.shape)}")
        batch, n, d_edge = tokens.shape[0], self.num_nodes, self.config.edge_width
        h = self.node_emb(tokens[:, :n])  # [B, N, d_model]
        if self.slot_emb is not None:
            h = h + self.slot_emb.weight[None]
        # Dense symmetric edge states: gather each pair's edge embedding (or the self vector on the diagonal).
        table = torch.cat([self.edge_emb(tokens[:, n:]), self.self_edge.to(h.dtype).expand(batch, 1, d_edge)], dim=1)
        e = table.index_select(1, self.pair_index).view(batch, n, n, d_edge)
        if self.time_mlp is not None and self.time_to_edge is not None:
            step = self.time_mlp(sinusoidal_features(t.float() / self.num_variables, self.config.d_model).to(h.dtype))
            h = h + step[:, None, :]
            e = e + self.time_to_edge(step)[:, None, None, :]
        h, e = self.emb_dropout(h), self.emb_dropout(e)
        for block in self.blocks:
            h, e = block(h, e)
        node_logits = self.node_head(self.final_norm(h))  # [B, N, V_out]
        upper = e.view(batch, n * n, d_edge).index_select(1, self.upper_index)  # [B, E, d_edge]
        edge_logits = self.edge_head(self.edge_final_norm(upper))  # [B, E, V_out]
        return torch.cat([node_logits, edge_logits], dim=1)

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs (6 x forward multiply-adds) of one graph, per variable; ``seq_len`` is ignored (fixed D)."""
        cfg = self.config
        n, d, de, ff, v = self.num_nodes, cfg.d_model, cfg.edge_width, cfg.ff_width, self.io.output_vocab_size
        per_layer = (
            n * (4 * d * d + 2 * d * ff + 2 * d * de)  # qkv + out_proj, node MLP, node <-> edge projections
            + n * n * (2 * d + de * cfg.n_heads + 4 * de * de)  # scores and values, edge bias, edge MLP
        )
        macs = cfg.n_layers * per_layer + n * d * v + self.num_edges * de * v + 2 * d * d
        return 6.0 * macs / self.num_variables

