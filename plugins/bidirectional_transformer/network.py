"""The bidirectional transformer network: every variable attends to every other one."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from anyorder.network import NetworkIO
from anyorder_plugins.any_order.network import AnyOrderNetwork
from anyorder_plugins.bidirectional_transformer.config import BidirectionalTransformerConfig
from anyorder_plugins.transformer.layers import TransformerBlock, init_transformer_weights


def sinusoidal_features(fraction: Tensor, dim: int) -> Tensor:
    """Sin/cos features [B, dim] of values in [0, 1] (frequencies geometric from 1 to 1000, in units of 2 pi)."""
    half = dim // 2
    freqs = torch.exp(torch.linspace(0.0, math.log(1000.0), half, device=fraction.device, dtype=torch.float32))
    angles = 2 * math.pi * fraction.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class BidirectionalTransformer(AnyOrderNetwork):
    """Value + variable-index embeddings (+ a step embedding), full self-attention blocks, one head for all."""

    Config = BidirectionalTransformerConfig

    def __init__(self, config: BidirectionalTransformerConfig, io: NetworkIO) -> None:
        super().__init__(config, io)
        d_model = config.d_model
        self.num_variables = len(io.input_vocab_sizes) if len(io.input_vocab_sizes) > 1 else io.max_len
        self.tok_emb = nn.Embedding(io.input_vocab_size, d_model)
        self.var_emb = nn.Embedding(self.num_variables, d_model)
        self.time_mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, d_model)) \
            if config.time_conditioning else None
        self.emb_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, config.n_heads, config.ff_width, dropout=config.dropout, bias=config.bias,
                             norm_eps=config.norm_eps, causal=False)
            for _ in range(config.n_layers)
        )
        self.final_norm = nn.LayerNorm(d_model, eps=config.norm_eps, bias=config.bias)
        self.head = nn.Linear(d_model, io.output_vocab_size, bias=False)
        init_transformer_weights(self, config.n_layers)

    def forward(self, tokens: Tensor, t: Tensor) -> Tensor:
        """``tokens`` [B, D] (values, MASK where unknown), ``t`` [B] known counts -> logits [B, D, V_out]."""
        if tokens.dim() != 2 or tokens.shape[1] != self.num_variables:
            raise ValueError(f"tokens must be [batch, {self.num_variables}], got shape {tuple(tokens.shape)}")
        x = self.tok_emb(tokens) + self.var_emb.weight[None]
        if self.time_mlp is not None:
            step = sinusoidal_features(t.float() / self.num_variables, self.config.d_model)
            x = x + self.time_mlp(step.to(x.dtype))[:, None, :]
        x = self.emb_dropout(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x))

    def flops_per_token(self, seq_len: int) -> float:
        """6 x parameters plus the attention scores (forward + backward)."""
        cfg = self.config
        return 6.0 * self.num_parameters() + 12.0 * cfg.n_layers * cfg.d_model * seq_len
